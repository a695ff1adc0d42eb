"""Seeded market series and the reference of every indicator and feature.

The reference is the textbook formulation of each indicator, written
independently of `stockade.trading.indicators`; conventions that pandas leaves
as NaN (0/0) are filled the way the docstrings in indicators.py state.

Where the computation is well-conditioned (means, EMAs, RSI, ratios) the
reference is pandas. Where it is not, the spread of a window (std, the
Bollinger bands and above all %B, whose denominator is that spread) is
computed exactly instead: sums of the floats as they are, in decimal
arithmetic that raises rather than rounds, then one square root and one
quotient to 60 digits, rounded to a float once. pandas' rolling std is an
online update whose residue changes between releases (pandas 3.1.1 puts
%B 1.05e-9 off its exact 0.75 on `market(21, 3000)`), so it cannot be the
yardstick there.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Context, Decimal, Inexact

import numpy as np
import pandas as pd

from stockade.trading.features import MOMENTUM_BARS, FeatureParams


def market(seed: int, n: int, start: float = 100.0, flat_start: int = 0) -> pd.DataFrame:
    """OHLCV bars of a random walk with regime-switching volatility, gaps and flat stretches.

    - volatility switches between calm (0.05%/bar) and wild (1%/bar) regimes;
    - about 1% of bars gap by 3-8% either way;
    - several flat stretches (close, high and low all equal, so returns,
      true range and band width are exactly zero), some longer than any
      window, and the series may *start* flat (`flat_start` bars);
    - volume is lognormal with occasional zero-volume bars and one long
      zero-volume stretch.
    """
    rng = np.random.default_rng(seed)
    sigma = np.where(rng.random(n) < 0.5, 0.0005, 0.01)
    sigma = np.repeat(sigma[: n // 50 + 1], 50)[:n]  # regimes 50 bars long
    r = rng.normal(0.0, sigma)
    gaps = rng.random(n) < 0.01
    r[gaps] += rng.choice([-1.0, 1.0], gaps.sum()) * rng.uniform(0.03, 0.08, gaps.sum())
    flat = np.zeros(n, dtype=bool)
    flat[:flat_start] = True
    for _ in range(max(1, n // 300)):
        a = int(rng.integers(0, n))
        flat[a : a + int(rng.integers(3, 60))] = True
    r[flat] = 0.0
    close = start * np.exp(np.cumsum(r))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.003, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.003, n))
    # a flat bar is flat all through: no wicks either
    high[flat], low[flat] = close[flat], close[flat]
    volume = rng.lognormal(10, 0.7, n)
    volume[rng.random(n) < 0.02] = 0.0
    if n > 200:
        z = int(rng.integers(0, n - 60))
        volume[z : z + 40] = 0.0
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume})


# Sums and products of floats fit in far fewer digits than this (a double has at
# most 767 significant decimal digits): an inexact result would raise, not round.
_EXACT = Context(prec=4000, traps=[Inexact])
# The square root and the final quotients: 60 digits, rounded to a float once.
_ROUND = Context(prec=60)
_TWO = Decimal(2)


def exact_windows(x: Sequence[float], n: int) -> list[tuple[Decimal, Decimal] | None]:
    """Per index, the last n values' sum S and n·Σ(x - mean)² = n·Σx² - S², both exact.

    None while fewer than n values have been seen or a value in the window is NaN.
    """
    out: list[tuple[Decimal, Decimal] | None] = []
    s = q = Decimal(0)
    window: list[Decimal | None] = []
    for v in x:
        d = None if np.isnan(v) else Decimal(float(v))  # a float converts exactly
        window.append(d)
        if d is not None:
            s, q = _EXACT.add(s, d), _EXACT.add(q, _EXACT.multiply(d, d))
        if len(window) > n:
            old = window.pop(0)
            if old is not None:
                s, q = _EXACT.subtract(s, old), _EXACT.subtract(q, _EXACT.multiply(old, old))
        if len(window) < n or None in window:
            out.append(None)
        else:
            out.append((s, _EXACT.subtract(_EXACT.multiply(Decimal(n), q), _EXACT.multiply(s, s))))
    return out


def _std(n_m2: Decimal, n: int, ddof: int) -> Decimal:
    """sqrt(M2 / (n - ddof)) from n·M2, to 60 digits (exactly 0 for a window of equal values)."""
    return _ROUND.sqrt(_ROUND.divide(n_m2, Decimal(n * (n - ddof))))


def rolling_std(x: pd.Series, n: int, ddof: int = 1) -> pd.Series:
    """`x.rolling(n).std(ddof)`, exact and then rounded to the nearest float.

    A window of equal values has exactly zero spread (pandas' online update
    leaves a residue there: 1.75e-06 on twenty closes of 90.10830303391153,
    `market(21, 3000)`, bar 244).
    """
    vals = [np.nan if w is None else float(_std(w[1], n, ddof)) for w in exact_windows(x.to_numpy(), n)]
    return pd.Series(vals, index=x.index, dtype=float)


def wilder(x: pd.Series, n: int) -> pd.Series:
    """Wilder's smoothing as pandas writes it: seeded at the first value, reported from n values."""
    return x.ewm(alpha=1.0 / n, adjust=False, min_periods=n).mean()


def rsi(close: pd.Series, n: int) -> pd.Series:
    d = close.diff()
    gain, loss = wilder(d.clip(lower=0.0), n), wilder((-d).clip(lower=0.0), n)
    total = gain + loss
    return (100.0 * gain / total).where(total != 0.0, 50.0).where(gain.notna())


def macd(close: pd.Series, fast: int, slow: int, signal: int) -> pd.DataFrame:
    line = close.ewm(span=fast, adjust=False).mean() - close.ewm(span=slow, adjust=False).mean()
    sig = line.ewm(span=signal, adjust=False).mean()
    warm = pd.Series(np.arange(len(close)) >= slow + signal - 2, index=close.index)
    return pd.DataFrame(
        {"macd": line.where(warm), "macd_signal": sig.where(warm), "macd_hist": (line - sig).where(warm)}
    )


def bollinger(close: pd.Series, n: int, k: float, ddof: int = 0) -> pd.DataFrame:
    """Bands, width and %B from the exact window moments (see the module docstring).

    %B = (x - lower) / (upper - lower) = (n·x - S + n·k·std) / (2·n·k·std):
    its numerator cancels exactly, so only the square root and the quotient
    round (to 60 digits). A window without spread has %B 0.5 and width 0.
    """
    nd, kd = Decimal(n), Decimal(float(k))
    rows = []
    for x, w in zip(close.to_numpy(), exact_windows(close.to_numpy(), n), strict=True):
        if w is None:
            rows.append((np.nan,) * 5)
            continue
        s, n_m2 = w
        mean, half = _ROUND.divide(s, nd), _ROUND.multiply(kd, _std(n_m2, n, ddof))
        upper, lower = _ROUND.add(mean, half), _ROUND.subtract(mean, half)
        if half == 0:
            pct_b, width = Decimal("0.5"), Decimal(0)
        else:
            top = _EXACT.subtract(_EXACT.multiply(nd, Decimal(float(x))), s)  # n·(x - mean), exactly
            pct_b = _ROUND.divide(_ROUND.add(top, _ROUND.multiply(nd, half)), _ROUND.multiply(Decimal(2 * n), half))
            width = _ROUND.divide(_ROUND.multiply(_TWO, half), mean) if mean != 0 else Decimal(0)
        rows.append(tuple(float(v) for v in (upper, mean, lower, width, pct_b)))
    return pd.DataFrame(rows, index=close.index, columns=["bb_upper", "bb_mid", "bb_lower", "bb_width", "pct_b"])


def volume_ratio(volume: pd.Series, n: int) -> pd.Series:
    base = volume.rolling(n).mean().shift(1)
    return (volume / base).where(base != 0.0, 0.0).where(base.notna())


def true_range(df: pd.DataFrame) -> pd.Series:
    pc = df["close"].shift()
    tr = pd.concat([df["high"] - df["low"], (df["high"] - pc).abs(), (df["low"] - pc).abs()], axis=1).max(axis=1)
    tr.iloc[0] = df["high"].iloc[0] - df["low"].iloc[0]
    return tr


def log_returns(close: pd.Series) -> pd.Series:
    return np.log(close / close.shift())


def momentum(close: pd.Series, n: int) -> pd.Series:
    return close / close.shift(n) - 1.0


def return_windows(close: pd.Series, n: int) -> list[tuple[float, ...]]:
    lr = log_returns(close).to_numpy()
    return [tuple(lr[i - n + 1 : i + 1]) if i >= n else () for i in range(len(lr))]


def features(df: pd.DataFrame, p: FeatureParams) -> pd.DataFrame:
    """Every Features field, row i = after bars 0..i closed (columns named like the fields)."""
    c = df["close"]
    out = pd.DataFrame(index=df.index)
    out["price"] = c
    out["sma_fast"] = c.rolling(p.sma_fast).mean()
    out["sma_slow"] = c.rolling(p.sma_slow).mean()
    out["ema_fast"] = c.ewm(span=p.ema_fast, adjust=False, min_periods=p.ema_fast).mean()
    out["ema_slow"] = c.ewm(span=p.ema_slow, adjust=False, min_periods=p.ema_slow).mean()
    out["rsi"] = rsi(c, p.rsi)
    out = out.join(macd(c, p.macd_fast, p.macd_slow, p.macd_signal))
    out = out.join(bollinger(c, p.bb_period, p.bb_k))
    out["volume_ratio"] = volume_ratio(df["volume"], p.volume_n)
    out["atr"] = wilder(true_range(df), p.atr)
    out["high_n"] = df["high"].rolling(p.breakout_n).max()
    out["low_n"] = df["low"].rolling(p.breakout_n).min()
    out["volatility"] = rolling_std(log_returns(c), p.vol_period)
    for n in MOMENTUM_BARS:
        out[f"mom_{n}"] = momentum(c, n)
    out["returns"] = return_windows(c, p.return_window)
    return out


SCALAR_FIELDS = (
    "price",
    "sma_fast",
    "sma_slow",
    "ema_fast",
    "ema_slow",
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_mid",
    "bb_lower",
    "bb_width",
    "pct_b",
    "volume_ratio",
    "atr",
    "high_n",
    "low_n",
    "volatility",
    "mom_1",
    "mom_5",
    "mom_10",
)
