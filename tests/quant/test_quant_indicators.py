"""Incremental indicators against pandas reference computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from stockade.quant.indicators import ATR, EMA, MACD, RSI, SMA, Bollinger, RollingExtreme, VolumeRatio

RTOL = 1e-9
N = 3000


def random_walk(seed: int, n: int = N, start: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))


def random_bars(seed: int, n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = random_walk(seed, n)
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    volume = rng.lognormal(10, 0.5, n)
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume})


def assert_series_match(ours: list, ref: pd.Series) -> None:
    ref_vals = ref.to_numpy()
    assert len(ours) == len(ref_vals)
    for i, (a, b) in enumerate(zip(ours, ref_vals)):
        if a is None:
            assert math.isnan(b), f"index {i}: ours None, pandas {b}"
        else:
            assert not math.isnan(b), f"index {i}: ours {a}, pandas NaN"
            assert a == pytest.approx(b, rel=RTOL, abs=1e-12), f"index {i}"


def run(ind, xs, peek_check: bool = True) -> list:
    """Feed `xs`; also check that peek(x) predicts update(x) exactly."""
    out = []
    for x in xs:
        predicted = ind.peek(x) if peek_check else None
        got = ind.update(x)
        if peek_check:
            assert predicted == got
        out.append(got)
    return out


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("n", [1, 5, 20, 50])
def test_sma_matches_pandas(seed, n):
    s = pd.Series(random_walk(seed))
    assert_series_match(run(SMA(n), s), s.rolling(n).mean())


@pytest.mark.parametrize("n", [1, 12, 26])
def test_ema_matches_pandas(n):
    s = pd.Series(random_walk(3))
    assert_series_match(run(EMA(n), s), s.ewm(span=n, adjust=False, min_periods=n).mean())


@pytest.mark.parametrize("n", [2, 14])
def test_rsi_matches_pandas_wilder(n):
    s = pd.Series(random_walk(4))
    d = s.diff()
    gain = d.clip(lower=0).ewm(alpha=1 / n, adjust=False, min_periods=n).mean()
    loss = (-d).clip(lower=0).ewm(alpha=1 / n, adjust=False, min_periods=n).mean()
    ref = 100 - 100 / (1 + gain / loss)
    assert_series_match(run(RSI(n), s), ref)


def test_rsi_flat_and_one_sided():
    r = RSI(3)
    for _ in range(5):
        r.update(10.0)
    assert r.value == 50.0
    r = RSI(3)
    for x in range(10):
        r.update(float(x))
    assert r.value == 100.0


def test_macd_matches_pandas():
    s = pd.Series(random_walk(5))
    line = s.ewm(span=12, adjust=False).mean() - s.ewm(span=26, adjust=False).mean()
    sig = line.ewm(span=9, adjust=False).mean()
    m = MACD(12, 26, 9)
    out = run(m, s)
    warm = 26 + 9 - 1
    mask = pd.Series([i >= warm - 1 for i in range(len(s))])
    assert all(v is None for v in out[: warm - 1])
    assert_series_match([v.macd if v else None for v in out], line.where(mask))
    assert_series_match([v.signal if v else None for v in out], sig.where(mask))
    assert_series_match([v.hist if v else None for v in out], (line - sig).where(mask))


@pytest.mark.parametrize("start", [100.0, 5000.0])
def test_bollinger_matches_pandas(start):
    s = pd.Series(random_walk(6, start=start))
    mid = s.rolling(20).mean()
    std = s.rolling(20).std(ddof=0)
    out = run(Bollinger(20, 2.0), s)
    assert_series_match([v.mid if v else None for v in out], mid)
    assert_series_match([v.upper if v else None for v in out], mid + 2 * std)
    assert_series_match([v.lower if v else None for v in out], mid - 2 * std)
    assert_series_match([v.width if v else None for v in out], 4 * std / mid)
    # the std itself (not just mid +/- a small std) to 1e-9
    assert_series_match([(v.upper - v.mid) / 2 if v else None for v in out], std)


def test_bollinger_sample_std_option():
    s = pd.Series(random_walk(7))
    out = run(Bollinger(10, 1.5, ddof=1), s)
    assert_series_match([(v.upper - v.mid) / 1.5 if v else None for v in out], s.rolling(10).std(ddof=1))


def test_volume_ratio_matches_pandas():
    v = random_bars(8)["volume"]
    ref = v / v.rolling(20).mean().shift(1)
    assert_series_match(run(VolumeRatio(20), v), ref)


def test_atr_matches_pandas():
    df = random_bars(9)
    pc = df["close"].shift()
    tr = pd.concat([df["high"] - df["low"], (df["high"] - pc).abs(), (df["low"] - pc).abs()], axis=1).max(axis=1)
    ref = tr.ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    atr = ATR(14)
    out = []
    for h, l, c in zip(df["high"], df["low"], df["close"]):
        predicted = atr.peek(h, l, c)
        out.append(atr.update(h, l, c))
        assert predicted == out[-1]
    assert_series_match(out, ref)


@pytest.mark.parametrize("kind", ["max", "min"])
def test_rolling_extreme_matches_pandas(kind):
    s = pd.Series(random_walk(10))
    ref = s.rolling(20).max() if kind == "max" else s.rolling(20).min()
    assert_series_match(run(RollingExtreme(20, kind), s, peek_check=False), ref)


def test_bad_periods_rejected():
    with pytest.raises(ValueError):
        SMA(0)
    with pytest.raises(ValueError):
        MACD(26, 12)
