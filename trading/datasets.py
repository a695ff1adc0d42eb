"""Labelled rows for training, built from historical bars exactly as live.

Each symbol's bars are replayed through `FeatureState.on_bar` (the analyzer's
own feature code); after each bar closes the snapshot goes through
`feature_vector.vector`, the analyzer's own model-input code. What a model
is trained on is therefore what it sees live at a bar boundary.

Label: 1 when the forward log return over `horizon` bars,
log(close[t + horizon] / close[t]), exceeds `threshold_bps` (basis points),
else 0. With the default threshold 0 it is "up or not"; a positive
threshold asks "up by more than the round-trip cost". Rows whose horizon
runs past the end of the data are dropped (their label is unknown), and so
are rows whose horizon spans a gap (overnight, a halt, a weekend: more than
MAX_SPAN_FACTOR times the horizon's nominal time), whose "next 5 bars"
would really be tomorrow's open.

Rows of all symbols are merged in time order (ties by symbol), so a
walk-forward split never trains on one symbol's future to test another's past.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import numpy as np

from stockade.codecs.messages import Bar
from stockade.trading.feature_vector import FEATURE_NAMES, vector
from stockade.trading.features import FeatureParams, FeatureState

NS_PER_MIN = 60_000_000_000
MAX_SPAN_FACTOR = 4  # a label's look-ahead may take at most 4x its nominal time (thin bars, not gaps)


class Dataset(msgspec.Struct, frozen=True):
    """Rows in time order: X (float32, FEATURE_NAMES columns), y (0/1), when and which symbol."""

    X: np.ndarray
    y: np.ndarray
    ts_ns: np.ndarray
    symbols: tuple[str, ...]  # one per row
    horizon: int
    threshold_bps: float
    params: FeatureParams

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])


def symbol_rows(
    symbol: str, bars: Iterable[Bar], horizon: int, threshold_bps: float = 0.0, params: FeatureParams | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, ts_ns) for one symbol's bars (any order; duplicates ignored)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 bar, got {horizon!r}")
    fs = FeatureState(symbol, params or FeatureParams())
    closes: list[float] = []
    stamps: list[int] = []
    vectors: list[np.ndarray | None] = []
    for bar in sorted(bars, key=lambda b: b.ts_ns):
        if not fs.on_bar(bar):
            continue
        f = fs.features()
        closes.append(float(bar.close))
        stamps.append(bar.ts_ns)
        vectors.append(vector(f) if f is not None and fs.ready else None)
    threshold = threshold_bps / 1e4
    max_span = MAX_SPAN_FACTOR * horizon * fs.params.bar_seconds * 1_000_000_000
    xs, ys, ts = [], [], []
    for i in range(len(closes) - horizon):
        v = vectors[i]
        if v is None or stamps[i + horizon] - stamps[i] > max_span:
            continue
        forward = math.log(closes[i + horizon] / closes[i])
        xs.append(v)
        ys.append(1 if forward > threshold else 0)
        ts.append(stamps[i])
    width = len(FEATURE_NAMES)
    X = np.vstack(xs).astype(np.float32) if xs else np.empty((0, width), dtype=np.float32)
    return X, np.asarray(ys, dtype=np.int64), np.asarray(ts, dtype=np.int64)


def build_dataset(
    bars_by_symbol: Mapping[str, Sequence[Bar]],
    horizon: int,
    threshold_bps: float = 0.0,
    params: FeatureParams | None = None,
) -> Dataset:
    """Merge every symbol's rows in time order."""
    params = params or FeatureParams()
    parts = [
        (symbol, *symbol_rows(symbol, bars_by_symbol[symbol], horizon, threshold_bps, params))
        for symbol in sorted(bars_by_symbol)
    ]
    return merge_rows(parts, horizon, threshold_bps, params)


def merge_rows(
    parts: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    horizon: int,
    threshold_bps: float,
    params: FeatureParams,
) -> Dataset:
    """The data set of (symbol, X, y, ts_ns) parts given in symbol order (symbol_rows of each, made anywhere)."""
    if not parts or sum(len(p[2]) for p in parts) == 0:
        raise ValueError("no labelled rows: not enough bars to warm the indicators and look ahead")
    X = np.vstack([p[1] for p in parts])
    y = np.concatenate([p[2] for p in parts])
    ts = np.concatenate([p[3] for p in parts])
    syms = np.concatenate([np.full(len(p[2]), i) for i, p in enumerate(parts)])
    order = np.lexsort((syms, ts))  # by time, then symbol: stable and seed-independent
    names = [p[0] for p in parts]
    return Dataset(
        X=X[order],
        y=y[order],
        ts_ns=ts[order],
        symbols=tuple(names[i] for i in syms[order]),
        horizon=horizon,
        threshold_bps=threshold_bps,
        params=params,
    )


# ---- fingerprint ----------------------------------------------------------------


def feature_fingerprint(params: FeatureParams | None = None) -> tuple[float, ...]:
    """The feature vector after a fixed, synthetic bar series (no RNG: the same on every machine).

    Stored in the manifest at training time; a test recomputes it, so a change
    in what a feature means (an indicator's formula, not just a name) without
    a FEATURE_VERSION bump and retraining fails loudly.
    """
    p = params or FeatureParams()
    fs = FeatureState("CHECK", p)
    price, t0 = 100.0, 1_700_000_000 * 1_000_000_000 // NS_PER_MIN * NS_PER_MIN
    bars = []
    for i in range(p.warmup_bars + 40):
        move = 0.004 * math.sin(i * 0.7) + 0.002 * math.cos(i * 1.9) + 0.0005 * ((i * 7919) % 13 - 6) / 6
        close = price * math.exp(move)
        bars.append(
            Bar(
                "CHECK",
                price,
                max(price, close) * 1.001,
                min(price, close) * 0.999,
                close,
                1000.0 + (i * 37) % 500,
                t0 + i * NS_PER_MIN,
            )
        )
        price = close
    fs.warm_up(bars)
    f = fs.features()
    x = None if f is None else vector(f)
    if x is None:
        raise RuntimeError("feature fingerprint: the synthetic series did not warm every feature")
    return tuple(round(float(v), 7) for v in x)
