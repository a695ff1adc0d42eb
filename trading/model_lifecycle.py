"""The live models' lifecycle rules: when to retrain, and when a challenger replaces the champion.

Pure: no threads, no I/O, the time `now_ns` given. The model keeper
(actors/model_keeper.py) feeds it and acts on its answers.

- Hit rate: each member's calls scored at its horizon against the symbol's
  later price (`HitCounter`); `degraded` compares the live rate with the
  member's trained hold-out accuracy once it has enough scored calls.
- Drift: the population stability index of each feature, live against the
  training distribution (`Reference`, quantile bins of the training rows).
- Schedule: one retrain a day after the close, at a New York wall time.
- Promotion: the challenger's out-of-sample score must beat the champion's,
  on the same window, by a margin.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from stockade.trading.features import FeatureParams

NEW_YORK = ZoneInfo("America/New_York")
PSI_BINS = 10
# A bin with no rows would make PSI infinite: floor the fractions (the usual practice).
PSI_FLOOR = 1e-4


# ---- drift ---------------------------------------------------------------------------


class Reference(msgspec.Struct, frozen=True, kw_only=True):
    """The training distribution of every feature: inner bin edges and each bin's fraction."""

    edges: tuple[tuple[float, ...], ...]  # per feature, ascending inner edges (bins - 1 at most)
    expected: tuple[tuple[float, ...], ...]  # per feature, fraction of training rows per bin
    rows: int


def reference_of(X: np.ndarray, bins: int = PSI_BINS) -> Reference:
    """Quantile bins of each column of the training rows `X` (rows x features)."""
    if X.ndim != 2 or X.shape[0] < bins:
        raise ValueError(f"need a 2-D array with at least {bins} rows, got shape {X.shape}")
    edges, expected = [], []
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    for col in X.T.astype(np.float64):
        inner = np.unique(np.quantile(col, qs))  # ties (a constant feature) merge bins
        edges.append(tuple(float(e) for e in inner))
        expected.append(tuple(float(f) for f in _fractions(col, inner)))
    return Reference(edges=tuple(edges), expected=tuple(expected), rows=int(X.shape[0]))


def _fractions(values: np.ndarray, inner: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1)
    return counts / max(1, len(values))


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two binnings of one variable (fractions summing to 1)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape} vs {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(reference: Reference, live: np.ndarray) -> tuple[float, ...]:
    """PSI of each feature of the live rows `live` (rows x features) against `reference`."""
    if live.ndim != 2 or live.shape[1] != len(reference.edges):
        raise ValueError(f"live rows have shape {live.shape}, the reference {len(reference.edges)} features")
    out = []
    for col, inner, expected in zip(live.T.astype(np.float64), reference.edges, reference.expected, strict=True):
        out.append(psi(expected, _fractions(col, np.asarray(inner))))
    return tuple(out)


class Drift(msgspec.Struct, frozen=True):
    psi: float  # the largest feature's
    feature: str
    rows: int


def drift(reference: Reference, live: np.ndarray, names: Sequence[str]) -> Drift:
    """The most drifted feature of `live` against the training distribution."""
    values = feature_psi(reference, live)
    worst = int(np.argmax(values))
    return Drift(psi=values[worst], feature=names[worst], rows=int(live.shape[0]))


# ---- hit rate ------------------------------------------------------------------------


class HitCounter:
    """Scored calls per member since the champion started serving (or the counts were reset)."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}  # member -> [hits, misses]

    def record(self, member: str, hit: bool) -> None:
        c = self.counts.setdefault(member, [0, 0])
        c[0 if hit else 1] += 1

    def scored(self, member: str) -> int:
        return sum(self.counts.get(member, (0, 0)))

    def rate(self, member: str) -> float | None:
        hits, misses = self.counts.get(member, (0, 0))
        return hits / (hits + misses) if hits + misses else None

    def reset(self) -> None:
        self.counts.clear()


class Degraded(msgspec.Struct, frozen=True):
    member: str
    live: float
    trained: float
    scored: int


def degraded(counter: HitCounter, trained: Mapping[str, float], margin: float, min_scored: int) -> list[Degraded]:
    """Members whose live hit rate is below their trained hold-out figure by more than
    `margin`, over at least `min_scored` scored calls (fewer: not judged yet)."""
    out = []
    for member, figure in sorted(trained.items()):
        n = counter.scored(member)
        rate = counter.rate(member)
        if rate is not None and n >= min_scored and rate < figure - margin:
            out.append(Degraded(member=member, live=rate, trained=figure, scored=n))
    return out


# The training distribution beside a set's manifest (`reference_of` of the rows trained on),
# written by `train` and by the lifecycle's retrain; the drift check needs it.
REFERENCE_NAME = "reference.json"


# ---- schedule ------------------------------------------------------------------------


def parse_hhmm(text: str) -> dt.time:
    """'HH:MM' (24 h) as a time; ValueError otherwise."""
    hh, sep, mm = text.partition(":")
    if not sep or not (hh.isdigit() and mm.isdigit()) or len(mm) != 2:
        raise ValueError(f"{text!r} is not HH:MM")
    return dt.time(int(hh), int(mm))


def scheduled_due(now_ns: int, at: dt.time, last_ns: int, trading_day: bool = True) -> bool:
    """True when today's (New York) retrain time has passed and no retrain ran since it.

    `trading_day`: whether today is a session (the caller knows the calendar):
    no retrain on a day without new data.
    """
    now = dt.datetime.fromtimestamp(now_ns / 1e9, NEW_YORK)
    slot = dt.datetime.combine(now.date(), at, NEW_YORK)
    return trading_day and now >= slot and last_ns < slot.timestamp() * 1e9


# ---- promotion -----------------------------------------------------------------------


class SetScore(msgspec.Struct, frozen=True, kw_only=True):
    """A model set's out-of-sample results: per member and the set's mean (accuracy of the calls)."""

    members: dict[str, float]
    score: float
    rows: int


def set_score(member_scores: Mapping[str, float], rows: int) -> SetScore:
    """The set's score: its members' mean (every member votes with equal standing at first)."""
    if not member_scores:
        raise ValueError("a model set without members has no score")
    vals = [member_scores[m] for m in sorted(member_scores)]
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"non-finite member score in {dict(member_scores)}")
    return SetScore(members=dict(sorted(member_scores.items())), score=sum(vals) / len(vals), rows=rows)


class Verdict(msgspec.Struct, frozen=True):
    promote: bool
    reason: str


def promote_rule(champion: SetScore, challenger: SetScore, margin: float) -> Verdict:
    """Promote only a complete challenger whose score beats the champion's by more than `margin`."""
    if set(challenger.members) != set(champion.members):
        return Verdict(
            False,
            f"challenger members {sorted(challenger.members)} differ from the champion's {sorted(champion.members)}",
        )
    if challenger.rows != champion.rows:
        return Verdict(False, f"scored on {challenger.rows} rows, the champion on {champion.rows}: not the same window")
    gain = challenger.score - champion.score
    if gain > margin:
        return Verdict(
            True, f"challenger {challenger.score:.4f} beats champion {champion.score:.4f} by {gain:+.4f} > {margin:g}"
        )
    return Verdict(
        False, f"challenger {challenger.score:.4f} vs champion {champion.score:.4f}: {gain:+.4f}, needs > {margin:g}"
    )


# ---- the training job's contract (model keeper <-> ops/retrain.py subprocess) -----------


class RetrainJob(msgspec.Struct, frozen=True, kw_only=True):
    """What a challenger is trained and judged on. Written as job.json; no secret in it
    (the subprocess takes the API keys from its environment)."""

    out: str  # the challenger's folder (created by the job)
    champion: str  # the serving champion's folder
    names: tuple[str, ...]  # the set's members: the challenger trains the same ones
    data_url: str
    feed: str
    symbols: tuple[str, ...]
    days: float  # of one-minute bars before end_ns
    end_ns: int
    horizon_bars: int
    label_threshold_bps: float
    seed: int
    params: FeatureParams
    # The newest rows judge both sets; the challenger trains only on rows before them.
    eval_fraction: float = 0.25
    folds: int = 3


class RetrainResult(msgspec.Struct, frozen=True, kw_only=True):
    """result.json of a job: both sets scored on the same out-of-sample window, or why not."""

    ok: bool
    error: str = ""
    champion: SetScore | None = None
    challenger: SetScore | None = None
    window: str = ""
    train_rows: int = 0
    seconds: float = 0.0
