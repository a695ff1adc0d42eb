"""Incremental indicators against reference computations: pandas where well-conditioned, exact where not."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import trading_reference as ref
from trading_reference import market

from stockade.trading.indicators import (
    ATR,
    EMA,
    MACD,
    RSI,
    SMA,
    Bollinger,
    RateOfChange,
    ReturnWindow,
    RollingExtreme,
    RollingStd,
    Volatility,
    VolumeRatio,
    percent_b,
)

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


def assert_series_match(ours: list, ref: pd.Series, abs_tol: float = 1e-12) -> None:
    """Same warm-up (None where pandas has NaN) and values within RTOL (abs_tol near 0)."""
    ref_vals = ref.to_numpy()
    assert len(ours) == len(ref_vals)
    for i, (a, b) in enumerate(zip(ours, ref_vals, strict=True)):
        if a is None:
            assert math.isnan(b), f"index {i}: ours None, pandas {b}"
        else:
            assert not math.isnan(b), f"index {i}: ours {a}, pandas NaN"
            assert a == pytest.approx(b, rel=RTOL, abs=abs_tol), f"index {i}"


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
def test_bollinger_matches_pandas_mean_and_exact_spread(start):
    s = pd.Series(random_walk(6, start=start))
    want = ref.bollinger(s, 20, 2.0)
    out = run(Bollinger(20, 2.0), s)
    assert_series_match([v.mid if v else None for v in out], s.rolling(20).mean())  # well-conditioned: pandas
    for field, name in (("mid", "bb_mid"), ("upper", "bb_upper"), ("lower", "bb_lower"), ("width", "bb_width")):
        assert_series_match([getattr(v, field) if v else None for v in out], want[name])
    # the std itself (not just mid +/- a small std) to 1e-9
    assert_series_match([(v.upper - v.mid) / 2 if v else None for v in out], ref.rolling_std(s, 20, ddof=0))


def test_bollinger_sample_std_option():
    s = pd.Series(random_walk(7))
    out = run(Bollinger(10, 1.5, ddof=1), s)
    assert_series_match([(v.upper - v.mid) / 1.5 if v else None for v in out], ref.rolling_std(s, 10, ddof=1))


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
    for h, l, c in zip(df["high"], df["low"], df["close"], strict=True):
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


# ---- property tests: every indicator against pandas on long market-like series ----------
#
# Seeded random walks with volatility regimes, gaps, flat stretches (some at
# the very start) and zero-volume bars, at two price levels (see
# trading_reference.market). Before every update each indicator is also asked
# to peek at an unrelated price, which must leave no trace, and peek(x) must
# predict update(x) exactly.

CASES = [
    pytest.param(21, 3000, 100.0, 0, id="walk-3000"),
    pytest.param(22, 3000, 5000.0, 0, id="high-price-3000"),
    pytest.param(23, 800, 0.5, 40, id="penny-flat-start"),
    pytest.param(24, 5000, 100.0, 25, id="walk-5000-flat-start"),
]


def run_probed(ind, xs, seed: int = 0) -> list:
    """Feed `xs`; before each update peek at a stray price (no effect allowed) and at x (== update)."""
    rng = np.random.default_rng(seed)
    out = []
    for x, stray in zip(xs, rng.uniform(0.5, 1.5, len(xs)), strict=True):
        ind.peek(x * stray)
        predicted = ind.peek(x)
        got = ind.update(x)
        assert predicted == got, (predicted, got)
        out.append(got)
    return out


@pytest.mark.parametrize("seed, n, start, flat", CASES)
def test_moving_averages_and_rsi_match_pandas(seed, n, start, flat):
    c = market(seed, n, start, flat)["close"]
    for p in (1, 7, 30):
        assert_series_match(run_probed(SMA(p), c), c.rolling(p).mean())
    for p in (1, 12, 26):
        assert_series_match(run_probed(EMA(p), c), c.ewm(span=p, adjust=False, min_periods=p).mean())
    for p in (2, 14):
        assert_series_match(run_probed(RSI(p), c), ref.rsi(c, p))


def test_rsi_of_a_series_starting_flat_is_neutral_like_the_reference():
    c = market(23, 800, 0.5, 40)["close"]
    out = run_probed(RSI(14), c)
    assert out[14] == 50.0 and ref.rsi(c, 14).iloc[14] == 50.0


@pytest.mark.parametrize("seed, n, start, flat", CASES)
@pytest.mark.parametrize("fast, slow, signal", [(12, 26, 9), (5, 35, 5)])
def test_macd_matches_pandas_on_market_series(seed, n, start, flat, fast, slow, signal):
    c = market(seed, n, start, flat)["close"]
    out = run_probed(MACD(fast, slow, signal), c)
    want = ref.macd(c, fast, slow, signal)
    for i, name in enumerate(("macd", "macd_signal", "macd_hist")):
        assert_series_match([v[i] if v else None for v in out], want[name], abs_tol=1e-12 * start)


@pytest.mark.parametrize("seed, n, start, flat", CASES)
@pytest.mark.parametrize("period, k, ddof", [(20, 2.0, 0), (10, 1.5, 1), (2, 2.0, 0)])
def test_bollinger_and_percent_b_match_the_exact_reference(seed, n, start, flat, period, k, ddof):
    """%B divides by the band span, which a nearly flat window makes tiny: ill-conditioned, so the
    reference is exact (trading_reference.bollinger), not whichever pandas is installed."""
    c = market(seed, n, start, flat)["close"]
    out = run_probed(Bollinger(period, k, ddof), c)
    want = ref.bollinger(c, period, k, ddof)
    assert_series_match([v.mid if v else None for v in out], c.rolling(period).mean())  # well-conditioned: pandas
    assert_series_match([v.mid if v else None for v in out], want["bb_mid"])
    assert_series_match(
        [(v.upper - v.mid) / k if v else None for v in out], ref.rolling_std(c, period, ddof), abs_tol=1e-12 * start
    )
    assert_series_match([v.lower if v else None for v in out], want["bb_lower"])
    assert_series_match([v.upper if v else None for v in out], want["bb_upper"])
    assert_series_match(
        [percent_b(x, v) if v else None for x, v in zip(c, out, strict=True)], want["pct_b"], abs_tol=1e-9
    )


def test_the_exact_reference_is_exact():
    """Over two values with k = 2, %B is 3/4 after a rise and 1/4 after a fall, exactly:
    (b - (m - |b - a|)) / (2|b - a|) with m = (a + b) / 2. No float formula gets this
    everywhere on a long series; the reference must."""
    c = market(21, 3000)["close"]
    want = ref.bollinger(c, 2, 2.0)["pct_b"].to_numpy()
    x = c.to_numpy()
    rise, fall = x[1:] > x[:-1], x[1:] < x[:-1]
    assert rise.sum() > 1000 and fall.sum() > 1000
    assert (want[1:][rise] == 0.75).all() and (want[1:][fall] == 0.25).all()
    assert (want[1:][~rise & ~fall] == 0.5).all() and np.isnan(want[0])
    # and the exact std of a flat window is exactly 0, where pandas' online update leaves a residue
    flat = pd.Series([90.10830303391153] * 20 + [90.2] * 20 + [90.10830303391153] * 20)
    assert (ref.rolling_std(flat, 20, ddof=0).iloc[[19, 39, 59]] == 0.0).all()


def test_flat_window_has_exactly_zero_band_width_after_movement():
    """The sliding update alone leaves a rounding residue; a flat window must read as flat."""
    xs = [100.0 + 0.37 * math.sin(i) for i in range(57)] + [101.3] * 20
    b = Bollinger(20)
    out = run_probed(b, xs)
    assert out[-1].upper == out[-1].lower == out[-1].mid == 101.3
    assert percent_b(101.3, out[-1]) == 0.5
    assert b.peek(101.3).width == 0.0 and b.peek(101.4).width > 0.0


@pytest.mark.parametrize("seed, n, start, flat", CASES)
@pytest.mark.parametrize("ddof", [0, 1])
def test_rolling_std_matches_pandas(seed, n, start, flat, ddof):
    c = market(seed, n, start, flat)["close"]
    for p in (2, 20):
        assert_series_match(run_probed(RollingStd(p, ddof), c), ref.rolling_std(c, p, ddof), abs_tol=1e-12 * start)


@pytest.mark.parametrize("seed, n, start, flat", CASES)
@pytest.mark.parametrize("period", [2, 20, 60])
def test_volatility_matches_pandas_std_of_log_returns(seed, n, start, flat, period):
    c = market(seed, n, start, flat)["close"]
    want = ref.rolling_std(ref.log_returns(c), period)
    got = run_probed(Volatility(period), c)
    assert_series_match(got, want, abs_tol=1e-15)
    # windows of flat bars are exactly zero, as pandas has them
    assert any(v == 0.0 for v in got) == any(want == 0.0)


@pytest.mark.parametrize("seed, n, start, flat", CASES)
def test_momentum_and_return_window_match_pandas(seed, n, start, flat):
    c = market(seed, n, start, flat)["close"]
    for p in (1, 5, 10):
        assert_series_match(run_probed(RateOfChange(p), c), ref.momentum(c, p))
    for p in (1, 10):
        got = run_probed(ReturnWindow(p), c)
        want = ref.return_windows(c, p)
        assert len(got) == len(want)
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert len(a) == len(b), i
            assert a == pytest.approx(b, rel=RTOL, abs=1e-15), i


@pytest.mark.parametrize("seed, n, start, flat", CASES)
def test_volume_ratio_atr_and_extremes_match_pandas(seed, n, start, flat):
    df = market(seed, n, start, flat)
    assert_series_match(run_probed(VolumeRatio(20), df["volume"]), ref.volume_ratio(df["volume"], 20))
    for p in (1, 14):
        atr = ATR(p)
        rng = np.random.default_rng(seed)
        got = []
        for h, l, c in zip(df["high"], df["low"], df["close"], strict=True):
            atr.peek(h * rng.uniform(1, 2), l, c)  # stray probe: no effect
            predicted = atr.peek(h, l, c)
            got.append(atr.update(h, l, c))
            assert predicted == got[-1]
        assert_series_match(got, ref.wilder(ref.true_range(df), p), abs_tol=1e-12 * start)
    assert_series_match(run(RollingExtreme(20, "max"), df["high"], peek_check=False), df["high"].rolling(20).max())
    assert_series_match(run(RollingExtreme(20, "min"), df["low"], peek_check=False), df["low"].rolling(20).min())


def test_new_indicators_reject_bad_periods():
    for make in (
        lambda: Volatility(1),
        lambda: RateOfChange(0),
        lambda: ReturnWindow(0),
        lambda: RollingStd(1, ddof=1),
    ):
        with pytest.raises(ValueError):
            make()
