"""The machine-learned models' input: one named, versioned feature vector.

`vector(features)` is the only code that turns a `Features` snapshot into
model input, and both training (`trading.datasets`) and live inference (the
analyzer) call it, so the two cannot drift apart.

Every feature is scale-free (a ratio to price, a return, an oscillator), so
one model serves every symbol whatever its price. Raw prices, the spread and
the bar's absolute volume are deliberately absent: the spread and quotes do
not exist in historical bars, and a model must not learn a symbol's price.

Change anything here that alters what a feature means or the order of
`FEATURE_NAMES`, and bump FEATURE_VERSION: trained models record the version
and names they were fitted on, and the analyzer refuses a model whose record
differs. Then regenerate the shipped models:

    python run.py train --source sim --out trading/default_models
"""

from __future__ import annotations

import math

import numpy as np

from stockade.trading.features import Features

FEATURE_VERSION = 1

RETURN_LAGS = 10  # Features.returns holds this many one-bar log returns

# Indicator features: price relative to its averages and bands, oscillators,
# volatility and momentum.
INDICATOR_FEATURES: tuple[str, ...] = (
    "dist_sma_fast",  # price / sma_fast - 1
    "dist_sma_slow",  # price / sma_slow - 1
    "sma_cross",  # sma_fast / sma_slow - 1
    "ema_cross",  # ema_fast / ema_slow - 1
    "rsi",  # rsi / 100 - 0.5
    "macd",  # macd / price
    "macd_signal",  # macd_signal / price
    "macd_hist",  # macd_hist / price
    "pct_b",  # Bollinger %B
    "bb_width",  # (upper - lower) / mid
    "log_volume_ratio",  # log(bar volume / average); 0 while unknown
    "atr",  # atr / price
    "dist_high_n",  # price / N-bar high - 1
    "dist_low_n",  # price / N-bar low - 1
    "volatility",  # stdev of one-bar log returns
    "mom_1",  # price / close 1 bar ago - 1
    "mom_5",
    "mom_10",
)
# The sequence: one-bar log returns, newest first (ret_lag_0 is the latest bar).
RETURN_FEATURES: tuple[str, ...] = tuple(f"ret_lag_{k}" for k in range(RETURN_LAGS))

FEATURE_NAMES: tuple[str, ...] = INDICATOR_FEATURES + RETURN_FEATURES
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}

# The volume ratio restarts whenever bar volume changes unit (history bars in
# shares, live bars from quote counts): unknown for N bars after start-up.
# Treated as average volume rather than silencing every model for N minutes.
_NEUTRAL_LOG_VOLUME_RATIO = 0.0
_MIN_VOLUME_RATIO = 1e-3  # a bar with no volume: log of a small ratio, not -inf


def vector(f: Features) -> np.ndarray | None:
    """The feature vector (float32, FEATURE_NAMES order) or None while not warm.

    None when any input is missing (an indicator still warming) or the result
    is not finite; the caller then has no model input for this snapshot.
    """
    price = f.price
    # Every feature the vector needs, spelt out so the type checker sees each one is set.
    if (
        f.sma_fast is None
        or f.sma_slow is None
        or f.ema_fast is None
        or f.ema_slow is None
        or f.rsi is None
        or f.macd is None
        or f.macd_signal is None
        or f.macd_hist is None
        or f.pct_b is None
        or f.bb_width is None
        or f.atr is None
        or f.high_n is None
        or f.low_n is None
        or f.volatility is None
        or f.mom_1 is None
        or f.mom_5 is None
        or f.mom_10 is None
    ):
        return None
    if len(f.returns) < RETURN_LAGS or not price > 0:
        return None
    if not (f.sma_fast > 0 and f.sma_slow > 0 and f.ema_slow > 0 and f.high_n > 0 and f.low_n > 0):
        return None
    vr = f.volume_ratio
    log_vr = _NEUTRAL_LOG_VOLUME_RATIO if vr is None else math.log(max(vr, _MIN_VOLUME_RATIO))
    values = [
        price / f.sma_fast - 1.0,
        price / f.sma_slow - 1.0,
        f.sma_fast / f.sma_slow - 1.0,
        f.ema_fast / f.ema_slow - 1.0,
        f.rsi / 100.0 - 0.5,
        f.macd / price,
        f.macd_signal / price,
        f.macd_hist / price,
        f.pct_b,
        f.bb_width,
        log_vr,
        f.atr / price,
        price / f.high_n - 1.0,
        price / f.low_n - 1.0,
        f.volatility,
        f.mom_1,
        f.mom_5,
        f.mom_10,
    ]
    values += f.returns[-1 : -1 - RETURN_LAGS : -1]  # newest first: returns[-1], ..., returns[-RETURN_LAGS]
    out = np.asarray(values, dtype=np.float32)
    if not np.logical_and.reduce(np.isfinite(out)):  # ndarray.all() goes through a Python-level wrapper
        return None
    return out


def columns(names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Indices of `names` in FEATURE_NAMES (KeyError names the unknown one)."""
    return np.asarray([FEATURE_INDEX[n] for n in names], dtype=np.intp)
