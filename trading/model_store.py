"""Trained models on disk: the manifest, verification, onnxruntime sessions.

A model folder holds `manifest.json` and one `<name>.onnx` per model. The
manifest records the feature version and names (in order) the models were
trained on, each model's own feature subset, its sha256, the training window
and its metrics.

Loading refuses, with a `ModelError` naming the file and the reason, a model
whose bytes do not match the manifest's checksum, whose features are not
this code's (other FEATURE_VERSION, unknown or reordered names), or which
onnxruntime cannot load. Errors are per model: one bad file does not take
the others down.

Sessions are cached process-wide, one per (file, checksum): every analyzer
shares it (`InferenceSession.run` is thread-safe). Each session is single
threaded (intra- and inter-op), because analyzers already run in parallel
and a thread pool per session would fight them for the cores.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from stockade.trading.feature_vector import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    FEATURE_VERSION,
    columns,
)
from stockade.trading.features import FeatureParams

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "default_models"
REGENERATE_HINT = "regenerate with `python run.py train --source sim --out <models dir>`"
FINGERPRINT_TOL = 1e-5  # above float noise across machines, below any real formula change


class ModelError(Exception):
    """A model (or manifest) that must not be used; says which file and why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"model {path}: {reason}")
        self.path = str(path)
        self.reason = reason


class FoldMetrics(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Scores on one block of rows; fold 0 is the final hold-out."""

    fold: int
    train_rows: int
    test_rows: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    auc: float | None


class TrainingWindow(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the rows came from and how they were labelled."""

    source: str  # sim, venue or alpaca
    symbols: tuple[str, ...]
    start_ns: int  # first row's bar time
    end_ns: int  # last row's bar time
    rows: int
    horizon_bars: int
    label_threshold_bps: float
    positive_rate: float
    seed: int
    holdout: float
    folds: int


class ModelEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    file: str  # relative to the manifest
    estimator: str
    features: tuple[str, ...]  # the model's input columns, in order
    sha256: str
    bytes: int
    folds: tuple[FoldMetrics, ...]
    holdout: FoldMetrics
    parity_max_abs_diff: float


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: int = MANIFEST_FORMAT
    feature_version: int
    feature_names: tuple[str, ...]
    # The indicator periods the rows were built with: "rsi" means RSI(14) only
    # if the analyzer computes RSI(14) too.
    feature_params: FeatureParams
    # The vector after a fixed synthetic bar series (datasets.feature_fingerprint):
    # catches a changed formula behind an unchanged name.
    feature_fingerprint: tuple[float, ...]
    training: TrainingWindow
    models: tuple[ModelEntry, ...]


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write `manifest.json` (indented: reviewable diffs; atomic replace)."""
    path = folder / MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n")
    tmp.replace(path)
    return path


def read_manifest(folder: Path) -> Manifest:
    """The folder's manifest; ModelError when missing, unreadable or malformed."""
    path = folder / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelError(path, f"cannot read the manifest: {exc.strerror or exc}") from None
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.DecodeError as exc:
        raise ModelError(path, f"malformed manifest: {exc}") from None
    if manifest.format != MANIFEST_FORMAT:
        raise ModelError(path, f"manifest format {manifest.format}, this code reads {MANIFEST_FORMAT}")
    return manifest


def resolve_dir(setting: str, trained_dir: Path | None) -> Path:
    """The models folder: `setting` if given, else `trained_dir` (where `train`
    writes, <data_dir>/models) when it holds a manifest, else the shipped defaults."""
    if setting:
        return Path(setting).expanduser()
    if trained_dir is not None and (trained_dir / MANIFEST_NAME).exists():
        return trained_dir
    return SHIPPED_DIR


def check_features(manifest: Manifest, path: Path, params: FeatureParams | None = None) -> None:
    """ModelError unless the manifest was trained on this code's feature vector
    (and, when given, the analyzer's indicator periods `params`)."""
    if manifest.feature_version != FEATURE_VERSION:
        raise ModelError(
            path,
            f"trained on feature version {manifest.feature_version}, this code builds "
            f"version {FEATURE_VERSION}; {REGENERATE_HINT}",
        )
    if tuple(manifest.feature_names) != FEATURE_NAMES:
        missing = [n for n in FEATURE_NAMES if n not in manifest.feature_names]
        extra = [n for n in manifest.feature_names if n not in FEATURE_INDEX]
        raise ModelError(
            path,
            f"feature names differ from this code's (missing {missing}, unknown {extra}, "
            f"or reordered) at the same version {FEATURE_VERSION}; {REGENERATE_HINT}",
        )
    if params is not None and manifest.feature_params != params:
        wanted, trained = msgspec.structs.asdict(params), msgspec.structs.asdict(manifest.feature_params)
        diff = ", ".join(f"{k} {trained[k]!r} (analyzer: {wanted[k]!r})" for k in wanted if wanted[k] != trained.get(k))
        raise ModelError(
            path,
            f"trained with other indicator periods: {diff}; retrain with these [analyzer] "
            f"settings (`python run.py train --settings <file>`)",
        )
    try:
        ours = _fingerprint(manifest.feature_params)
    except (RuntimeError, ValueError) as exc:  # e.g. periods the synthetic series cannot warm
        raise ModelError(path, f"cannot check the features: {exc}") from None
    theirs = manifest.feature_fingerprint
    if len(ours) != len(theirs) or max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) > FINGERPRINT_TOL:
        worst = [
            FEATURE_NAMES[i] for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if abs(a - b) > FINGERPRINT_TOL
        ]
        which = f"features {worst}" if worst else "the features"
        raise ModelError(
            path,
            f"this code computes {which} differently from when the models were trained "
            f"(fingerprint differs) at the same version {FEATURE_VERSION}: bump "
            f"FEATURE_VERSION and {REGENERATE_HINT}",
        )


_fingerprints: dict[FeatureParams, tuple[float, ...]] = {}


def _fingerprint(params: FeatureParams) -> tuple[float, ...]:
    from stockade.trading.datasets import feature_fingerprint

    fp = _fingerprints.get(params)
    if fp is None:
        fp = _fingerprints[params] = feature_fingerprint(params)
    return fp


# ---- onnxruntime ----------------------------------------------------------------


def new_session(model: bytes | str) -> Any:
    """A single-threaded onnxruntime session on the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: warnings are about graph fusions
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def probability_output(session: Any) -> str:
    """Name of the probabilities output (skl2onnx with zipmap off: the second, [N, 2])."""
    outputs = session.get_outputs()
    for out in outputs:
        name: str = out.name  # onnxruntime has no type information
        if "prob" in name.lower():
            return name
    last: str = outputs[-1].name
    return last


class LoadedModel:
    """A verified model and its shared session. `p_up(x)` for one full feature vector."""

    __slots__ = ("_input", "_outputs", "columns", "entry", "name", "path", "session")

    def __init__(self, name: str, entry: ModelEntry, path: Path, session: Any) -> None:
        self.name = name
        self.entry = entry
        self.path = path
        self.session = session
        self.columns = columns(entry.features)
        self._input = session.get_inputs()[0].name
        self._outputs = [probability_output(session)]

    def p_up(self, x: np.ndarray) -> float:
        """P(label 1, "up") for one vector in FEATURE_NAMES order."""
        row = x[self.columns].reshape(1, -1)
        return float(self.session.run(self._outputs, {self._input: row})[0][0, 1])

    def p_up_batch(self, X: np.ndarray) -> np.ndarray:
        """P(up) for rows of full vectors (float32)."""
        return np.asarray(self.session.run(self._outputs, {self._input: X[:, self.columns]})[0][:, 1])


_lock = threading.Lock()
_sessions: dict[tuple[str, str], Any] = {}
_reported: set[str] = set()


def _verified_session(path: Path, entry: ModelEntry) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(path, f"cannot read: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ModelError(
            path,
            f"checksum mismatch (sha256 {digest[:12]}..., manifest says {entry.sha256[:12]}...): "
            f"the file is corrupt or was replaced; {REGENERATE_HINT}",
        )
    key = (str(path), digest)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            try:
                session = new_session(data)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise ModelError(path, f"onnxruntime cannot load it: {str(exc).splitlines()[0][:300]}") from None
            _sessions[key] = session
    inputs, outputs = session.get_inputs(), session.get_outputs()
    width = inputs[0].shape[-1] if inputs and inputs[0].shape else None
    if len(inputs) != 1 or width != len(entry.features):
        raise ModelError(
            path,
            f"takes input {[(i.name, i.shape) for i in inputs]}, the manifest lists {len(entry.features)} features",
        )
    probs = next((o for o in outputs if o.name == probability_output(session)), None)
    if len(outputs) < 2 or probs is None or not probs.shape or probs.shape[-1] != 2:
        raise ModelError(path, "has no [N, 2] probabilities output (a binary classifier exported with zipmap=False)")
    return session


def load_models(
    folder: Path,
    names: tuple[str, ...] = (),
    params: FeatureParams | None = None,
) -> tuple[list[LoadedModel], list[ModelError]]:
    """Every usable model of `folder` (only `names` if given) and an error per refused one.

    `params`: the indicator periods the caller computes features with; the
    manifest's must be equal (None: not checked).
    """
    try:
        manifest = read_manifest(folder)
        check_features(manifest, folder / MANIFEST_NAME, params)
    except ModelError as exc:
        return [], [exc]
    entries = {e.name: e for e in manifest.models}
    loaded: list[LoadedModel] = []
    errors: list[ModelError] = []
    for name in names:
        if name not in entries:
            errors.append(ModelError(folder / MANIFEST_NAME, f"has no model {name!r} (has: {', '.join(entries)})"))
    for entry in manifest.models:
        if names and entry.name not in names:
            continue
        path = folder / entry.file
        if Path(entry.file).name != entry.file or entry.file.startswith("."):
            errors.append(
                ModelError(
                    folder / MANIFEST_NAME,
                    f"model {entry.name!r}: file {entry.file!r} must be a plain file name in the models folder",
                )
            )
            continue
        unknown = [f for f in entry.features if f not in FEATURE_INDEX]
        if unknown:
            errors.append(ModelError(path, f"reads features this code does not build: {unknown}; {REGENERATE_HINT}"))
            continue
        try:
            loaded.append(LoadedModel(entry.name, entry, path, _verified_session(path, entry)))
        except ModelError as exc:
            errors.append(exc)
    return loaded, errors


def first_report(error: ModelError) -> bool:
    """True the first time this process sees `error` (log and alert once, not per analyzer)."""
    text = str(error)
    with _lock:
        if text in _reported:
            return False
        _reported.add(text)
        return True


def clear_cache() -> None:
    """Forget sessions and reported errors (tests)."""
    with _lock:
        _sessions.clear()
        _reported.clear()
