"""Fit, evaluate, export and check the ensemble's machine-learned members.

No threads, no I/O beyond writing the output folder in `train_models`.

Protocol (one data set, rows in time order):
- the last `holdout` share of rows is held out; nothing is fitted on it;
- walk-forward `TimeSeriesSplit` over the rest: each fold trains on the
  past and scores on the next block (accuracy, precision, recall, F1, AUC);
- between every training block and the block it is scored on, `purge`
  rows (the horizon's worth of bars, for every symbol) are left out: their
  labels look into the scored block, and would leak its answers;
- the final model is fitted on all rows before the hold-out, scored on the
  hold-out, exported to ONNX, and onnxruntime's probabilities on the
  hold-out must equal scikit-learn's (float32 input) within PARITY_TOL.

Deterministic for a seed: every estimator has a fixed random_state, single
threaded, and the data set is a pure function of its source.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from stockade.trading.datasets import Dataset, feature_fingerprint
from stockade.trading.feature_vector import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    INDICATOR_FEATURES,
    RETURN_FEATURES,
    columns,
)
from stockade.trading.model_store import (
    MANIFEST_NAME,
    FoldMetrics,
    Manifest,
    ModelEntry,
    TrainingWindow,
    write_manifest,
)

PARITY_TOL = 1e-5
ONNX_OPSET = 17

Progress = Callable[[str], None]


def _gbm(seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    # Subsampled rows and features: 50 shallow trees fit in about a second.
    return GradientBoostingClassifier(
        n_estimators=50, max_depth=3, learning_rate=0.1, subsample=0.5, max_features="sqrt", random_state=seed
    )


def _forest(seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    # Shallow and few trees: the shipped file stays small and a row costs microseconds.
    return RandomForestClassifier(n_estimators=30, max_depth=6, min_samples_leaf=20, n_jobs=1, random_state=seed)


def _logit(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500, random_state=seed))


def _mlp(seed: int) -> Any:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(16,), alpha=1e-3, max_iter=200, early_stopping=True, random_state=seed),
    )


# name -> (estimator factory, the features it reads). The MLP is the sequence
# model: it sees the window of one-bar returns (and the volatility that scales
# them), not the indicators.
MODELS: dict[str, tuple[Callable[[int], Any], tuple[str, ...]]] = {
    "gbm": (_gbm, INDICATOR_FEATURES + RETURN_FEATURES),
    "forest": (_forest, INDICATOR_FEATURES + RETURN_FEATURES),
    "logit": (_logit, INDICATOR_FEATURES),
    "mlp": (_mlp, RETURN_FEATURES + ("volatility",)),
}
DEFAULT_MODELS: tuple[str, ...] = tuple(MODELS)


class TrainingError(Exception):
    """Training could not produce a model that may be shipped (e.g. ONNX parity failed)."""


def fold_metrics(fold: int, y_true: np.ndarray, proba_up: np.ndarray, train_rows: int) -> FoldMetrics:
    """Classification metrics at P(up) > 0.5; AUC is None when the block holds one class only."""
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    pred = (proba_up > 0.5).astype(np.int64)
    auc = float(roc_auc_score(y_true, proba_up)) if len(np.unique(y_true)) == 2 else None
    return FoldMetrics(
        fold=fold,
        train_rows=train_rows,
        test_rows=len(y_true),
        accuracy=round(float(accuracy_score(y_true, pred)), 6),
        precision=round(float(precision_score(y_true, pred, zero_division=0)), 6),
        recall=round(float(recall_score(y_true, pred, zero_division=0)), 6),
        f1=round(float(f1_score(y_true, pred, zero_division=0)), 6),
        auc=None if auc is None else round(auc, 6),
    )


def walk_forward(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    n_splits: int,
    purge: int = 0,
    progress: Progress = lambda _: None,
) -> list[FoldMetrics]:
    """Per-fold metrics of model `name` under TimeSeriesSplit (train on the past, test on the
    next block, `purge` rows left out between them)."""
    from sklearn.model_selection import TimeSeriesSplit

    factory, _ = MODELS[name]
    out = []
    for k, (train, test) in enumerate(TimeSeriesSplit(n_splits=n_splits, gap=purge).split(X), start=1):
        model = factory(seed).fit(X[train], y[train])
        m = fold_metrics(k, y[test], model.predict_proba(X[test])[:, 1], len(train))
        progress(
            f"{name}: fold {k}/{n_splits}: acc {m.accuracy:.3f} f1 {m.f1:.3f} auc {_fmt(m.auc)} "
            f"({m.train_rows} train, {m.test_rows} test rows)"
        )
        out.append(m)
    return out


def to_onnx(model: Any, n_features: int, name: str = "model") -> bytes:
    """ONNX bytes: float32 input `input` [N, n_features], outputs label and probabilities [N, 2].

    The same fitted model gives the same bytes: skl2onnx names the graph with
    a random UUID, replaced here by `name`.
    """
    from onnx.helper import make_opsetid
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": ONNX_OPSET, "ai.onnx.ml": 3},
    )
    onx.graph.name = f"stockade_{name}"
    # skl2onnx lists the opset imports in set order: sorted, the bytes are reproducible.
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    onx.opset_import.extend(make_opsetid(domain, version) for domain, version in opsets)
    model_bytes: bytes = onx.SerializeToString()  # skl2onnx has no type information
    return model_bytes


def onnx_parity(model: Any, onnx_bytes: bytes, X: np.ndarray) -> float:
    """Largest |P_onnxruntime - P_sklearn| over rows X (float32 into both)."""
    from stockade.trading.model_store import new_session, probability_output

    session = new_session(onnx_bytes)
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    ours = session.run([probability_output(session)], {session.get_inputs()[0].name: X32})[0]
    theirs = model.predict_proba(X32)
    return float(np.max(np.abs(np.asarray(ours, dtype=np.float64) - theirs))) if len(X32) else 0.0


class Trained(msgspec.Struct):
    """One trained model before it is written: entry for the manifest and its ONNX bytes."""

    entry: ModelEntry
    onnx: bytes
    model: Any = None  # the fitted scikit-learn estimator
    seconds: float = 0.0  # walk-forward and final fit (not in the manifest: it would not be reproducible)


def train_one(
    name: str, data: Dataset, seed: int, n_splits: int = 5, holdout: float = 0.1, progress: Progress = lambda _: None
) -> Trained:
    """Walk-forward evaluate, fit, export and parity-check model `name`."""
    if name not in MODELS:
        raise TrainingError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    factory, names = MODELS[name]
    X = data.X[:, columns(names)]
    y = data.y
    purge = data.horizon * len(set(data.symbols))  # rows whose labels reach into the next block
    cut = int(len(y) * (1.0 - holdout))
    fit_end = cut - purge
    if fit_end < (n_splits + 1) * (20 + purge) or len(y) - cut < 20:
        raise TrainingError(f"{name}: {len(y)} rows is too few for {n_splits} folds and a hold-out")
    started = time.perf_counter()
    folds = walk_forward(name, X[:fit_end], y[:fit_end], seed, n_splits, purge, progress)
    model = factory(seed).fit(X[:fit_end], y[:fit_end])
    held = fold_metrics(0, y[cut:], model.predict_proba(X[cut:].astype(np.float32))[:, 1], fit_end)
    fit_s = time.perf_counter() - started
    onnx_bytes = to_onnx(model, len(names), name)
    diff = onnx_parity(model, onnx_bytes, X[cut:])
    if not diff <= PARITY_TOL:
        raise TrainingError(
            f"{name}: onnxruntime differs from scikit-learn by {diff:.3g} on the hold-out "
            f"(tolerance {PARITY_TOL:g}); not exported"
        )
    progress(
        f"{name}: hold-out acc {held.accuracy:.3f} f1 {held.f1:.3f} auc {_fmt(held.auc)}; "
        f"onnx parity {diff:.2g}; {len(onnx_bytes) / 1024:.0f} KiB; {fit_s:.1f}s"
    )
    entry = ModelEntry(
        name=name,
        file=f"{name}.onnx",
        estimator=_describe(model),
        features=names,
        sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        bytes=len(onnx_bytes),
        folds=tuple(folds),
        holdout=held,
        parity_max_abs_diff=diff,
    )
    return Trained(entry=entry, onnx=onnx_bytes, model=model, seconds=fit_s)


def train_models(
    data: Dataset,
    out_dir: Path,
    names: Sequence[str],
    seed: int,
    source: str,
    n_splits: int = 5,
    holdout: float = 0.1,
    progress: Progress = lambda _: None,
    trainer: Callable[[Sequence[str]], list[Trained]] | None = None,
) -> Manifest:
    """Train `names`, then write each `<name>.onnx` and the manifest into `out_dir`.

    `trainer` (optional) trains the named models itself, in order, each as
    `train_one(name, data, seed, n_splits, holdout)` would: `train` uses it to
    spread the models over worker processes.

    Nothing is written unless every model trained and passed its parity check,
    so a failed run never leaves a half-updated folder behind.
    """
    progress(
        f"data: {data.rows} rows, {len(set(data.symbols))} symbols, "
        f"{float(np.mean(data.y)):.3f} positive, horizon {data.horizon} bars"
    )
    if trainer is None:
        trained = [train_one(n, data, seed, n_splits, holdout, progress) for n in names]
    else:  # each model apart (in other processes, say): same seed, same rows, so the same model
        trained = trainer(names)
    manifest = Manifest(
        feature_version=FEATURE_VERSION,
        feature_names=FEATURE_NAMES,
        feature_params=data.params,
        feature_fingerprint=feature_fingerprint(data.params),
        training=TrainingWindow(
            source=source,
            symbols=tuple(sorted(set(data.symbols))),
            start_ns=int(data.ts_ns[0]),
            end_ns=int(data.ts_ns[-1]),
            rows=data.rows,
            horizon_bars=data.horizon,
            label_threshold_bps=data.threshold_bps,
            positive_rate=round(float(np.mean(data.y)), 6),
            seed=seed,
            holdout=holdout,
            folds=n_splits,
        ),
        models=tuple(t.entry for t in trained),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for t in trained:
        _write_atomic(out_dir / t.entry.file, t.onnx)
    write_manifest(out_dir, manifest)
    progress(f"wrote {len(trained)} models and {MANIFEST_NAME} to {out_dir}")
    return manifest


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _describe(model: Any) -> str:
    steps = getattr(model, "steps", None)
    if steps:
        return " -> ".join(type(s).__name__ for _, s in steps)
    return type(model).__name__


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
