"""Seeded market series and the pandas reference of every indicator and feature.

The reference is the textbook pandas formulation of each indicator, written
independently of `stockade.quant.indicators`; conventions that pandas leaves
as NaN (0/0) are filled the way the docstrings in indicators.py state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stockade.quant.features import MOMENTUM_BARS, FeatureParams


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


def rolling_std(x: pd.Series, n: int, ddof: int = 1) -> pd.Series:
    """`x.rolling(n).std(ddof)`, computed two-pass per window.

    pandas' own rolling std is an online update that leaves a residue on a
    window of equal values (1.75e-06 instead of 0 on twenty closes of
    90.10830303391153: `market(21, 3000)`, bar 244); the exact per-window
    std is the reference the incremental code is held to.
    """
    # a window of equal values has exactly zero spread (numpy's mean can round off it)
    return x.rolling(n).apply(lambda w: w.std(ddof=ddof) if w.min() != w.max() else 0.0, raw=True)


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
    return pd.DataFrame({"macd": line.where(warm), "macd_signal": sig.where(warm), "macd_hist": (line - sig).where(warm)})


def bollinger(close: pd.Series, n: int, k: float) -> pd.DataFrame:
    mid = close.rolling(n).mean()
    std = rolling_std(close, n, ddof=0)
    upper, lower = mid + k * std, mid - k * std
    span = upper - lower
    pct_b = ((close - lower) / span).where(span != 0.0, 0.5).where(mid.notna())
    return pd.DataFrame({"bb_upper": upper, "bb_mid": mid, "bb_lower": lower, "bb_width": span / mid, "pct_b": pct_b})


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
    out["volume_ratio"] = volume_ratio(df["volume"], p.volume_period)
    out["atr"] = wilder(true_range(df), p.atr)
    out["high_n"] = df["high"].rolling(p.breakout_period).max()
    out["low_n"] = df["low"].rolling(p.breakout_period).min()
    out["volatility"] = rolling_std(log_returns(c), p.vol_period)
    for n in MOMENTUM_BARS:
        out[f"mom_{n}"] = momentum(c, n)
    out["returns"] = return_windows(c, p.return_window)
    return out


SCALAR_FIELDS = (
    "price", "sma_fast", "sma_slow", "ema_fast", "ema_slow", "rsi", "macd", "macd_signal", "macd_hist",
    "bb_upper", "bb_mid", "bb_lower", "bb_width", "pct_b", "volume_ratio", "atr", "high_n", "low_n",
    "volatility", "mom_1", "mom_5", "mom_10",
)
