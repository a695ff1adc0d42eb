"""Rule strategies on constructed price paths, through FeatureState."""

from __future__ import annotations

import numpy as np
import pytest
from trading_fixtures import snap

from stockade.codecs.messages import Bar, Quote
from stockade.trading.features import FeatureState
from stockade.trading.strategies import (
    Breakout,
    BreakoutParams,
    MeanReversion,
    MeanReversionParams,
    Momentum,
    MomentumParams,
    Signal,
    build_strategies,
    strategy_names,
)

MIN = 60_000_000_000
T0 = 1_700_000_040 * 1_000_000_000


def feed_closes(closes, volume=1000.0, wick=0.05) -> FeatureState:
    fs = FeatureState("X")
    prev = closes[0]
    for i, c in enumerate(closes):
        fs.on_bar(Bar("X", prev, max(prev, c) + wick, min(prev, c) - wick, c, volume, T0 + i * MIN))
        prev = c
    return fs


def trending(n=120, sign=1.0):
    """Zig-zag with growing steps: a clear, accelerating, not overextended trend."""
    p, out = 100.0, []
    for i in range(n):
        step = 0.02 + 0.002 * i
        p += sign * (2 * step if i % 2 == 0 else -step)
        out.append(p)
    return out


def ranging(n=60, seed=11):
    rng = np.random.default_rng(seed)
    return list(100.0 + rng.uniform(-0.3, 0.3, n))


def live_quote(fs: FeatureState, mid: float, spread=0.02) -> None:
    t = T0 + fs.bars_seen * MIN + 1_000_000_000
    fs.on_quote(Quote("X", mid - spread / 2, mid + spread / 2, 100, 100, t, t))


# ---- momentum --------------------------------------------------------------------


def test_momentum_long_on_uptrend():
    s = Momentum().evaluate(feed_closes(trending()).features())
    assert s.direction == 1.0 and s.confidence > 0.5, s
    assert "uptrend" in s.reason


def test_momentum_short_on_downtrend():
    s = Momentum().evaluate(feed_closes(trending(sign=-1.0)).features())
    assert s.direction == -1.0 and s.confidence > 0.5, s


def test_momentum_flat_when_overextended():
    closes = [100.0 + 0.2 * i for i in range(120)]  # never a down bar: RSI 100
    s = Momentum().evaluate(feed_closes(closes).features())
    assert s.direction == 0.0 and "overextended" in s.reason


def test_momentum_flat_in_a_range_and_when_cold():
    assert Momentum().evaluate(feed_closes(ranging()).features()).direction == 0.0
    cold = Momentum().evaluate(feed_closes(trending(10)).features())
    assert cold == Signal(0.0, 0.0, cold.reason) and cold.reason.startswith("warming up")


def test_momentum_needs_macd_agreement():
    f = feed_closes(trending()).features()
    import msgspec

    s = Momentum().evaluate(msgspec.structs.replace(f, macd_hist=-0.01))
    assert s.direction == 0.0 and "disagrees" in s.reason


# ---- mean reversion --------------------------------------------------------------


def test_mean_reversion_fades_spike_above_band():
    fs = feed_closes(ranging())
    live_quote(fs, 102.0)  # ~ 6 std above a +-0.3 range
    f = fs.features()
    assert f.price > f.bb_upper and f.rsi >= 70
    s = MeanReversion().evaluate(f)
    assert s.direction == -1.0 and s.confidence > 0.5, s
    assert "upper band" in s.reason


def test_mean_reversion_buys_drop_below_band():
    fs = feed_closes(ranging())
    live_quote(fs, 98.0)
    s = MeanReversion().evaluate(fs.features())
    assert s.direction == 1.0


def test_mean_reversion_flat_inside_bands():
    fs = feed_closes(ranging())
    live_quote(fs, 100.0)
    s = MeanReversion().evaluate(fs.features())
    assert s.direction == 0.0 and "inside bands" in s.reason


# ---- breakout ----------------------------------------------------------------------


def test_breakout_long_above_high_with_volume():
    fs = feed_closes(ranging())
    high = fs.features().high_n
    live_quote(fs, high + 0.5)
    t = T0 + fs.bars_seen * MIN + 2_000_000_000
    fs.on_trade(high + 0.5, 3000.0, t)  # 3x the 1000-share bars
    s = Breakout().evaluate(fs.features())
    assert s.direction == 1.0 and s.confidence >= 0.75, s
    assert "above" in s.reason


def test_breakout_needs_volume():
    fs = feed_closes(ranging())
    live_quote(fs, fs.features().high_n + 0.5)
    fs.on_trade(0, 500.0, T0 + fs.bars_seen * MIN + 2_000_000_000)
    s = Breakout().evaluate(fs.features())
    assert s.direction == 0.0 and "without volume" in s.reason


def test_breakout_short_below_low():
    fs = feed_closes(ranging())
    live_quote(fs, fs.features().low_n - 0.5)
    fs.on_trade(0, 2000.0, T0 + fs.bars_seen * MIN + 2_000_000_000)
    assert Breakout(BreakoutParams(min_volume_ratio=1.5)).evaluate(fs.features()).direction == -1.0


# ---- registry ----------------------------------------------------------------------


def test_registry_builds_named_strategies_with_overrides():
    assert strategy_names() == ["breakout", "mean_reversion", "momentum"]
    built = build_strategies(["momentum", "breakout"], {"momentum": {"rsi_extreme": 80.0}})
    assert [s.name for s in built] == ["momentum", "breakout"]
    assert built[0].params == MomentumParams(rsi_extreme=80.0)


@pytest.mark.parametrize(
    "names, params, text",
    [(["nope"], None, "unknown strategy 'nope'"), (["momentum"], {"momentum": {"rsi_extremes": 1}}, "momentum")],
)
def test_registry_rejects_bad_config(names, params, text):
    with pytest.raises(ValueError, match=text):
        build_strategies(names, params)


# ---- every branch on hand-built snapshots, at and around each threshold ----------------------


def up_trend(**kw):
    """EMA gap 0.5 ATR up, MACD and 10-bar momentum agreeing, RSI 60, average volume."""
    base = dict(ema_fast=100.05, ema_slow=100.0, atr=0.1, macd_hist=0.01, mom_10=0.002, rsi=60.0, volume_ratio=1.0)
    base.update(kw)
    return snap(**base)


def down_trend(**kw):
    base = dict(ema_fast=99.95, ema_slow=100.0, atr=0.1, macd_hist=-0.01, mom_10=-0.002, rsi=40.0, volume_ratio=1.0)
    base.update(kw)
    return snap(**base)


def test_momentum_confidence_is_trend_strength_times_volume():
    m = Momentum()
    s = m.evaluate(up_trend())
    assert s.direction == 1.0 and s.confidence == pytest.approx(0.5 * 0.75)  # half gap, volume at the minimum
    assert "volume ratio 1.00" in s.reason and "10-bar +0.20%" in s.reason
    assert m.evaluate(up_trend(volume_ratio=1.5)).confidence == pytest.approx(0.5 * (0.75 + 0.25 * 0.5))
    assert m.evaluate(up_trend(volume_ratio=9.0, ema_fast=100.3)).confidence == 1.0
    assert m.evaluate(down_trend()).direction == -1.0


@pytest.mark.parametrize("ratio, trades", [(0.999, False), (1.0, True), (1.2, True)])
def test_momentum_volume_confirmation_threshold(ratio, trades):
    s = Momentum().evaluate(up_trend(volume_ratio=ratio))
    assert (s.direction == 1.0) is trades
    if not trades:
        assert "without volume" in s.reason and s.confidence == 0.0


@pytest.mark.parametrize("gap, trades", [(0.0099, False), (0.01, True), (0.0101, True)])
def test_momentum_minimum_ema_gap(gap, trades):
    # atr 0.1: min_gap_atr 0.1 is an EMA gap of 0.01
    s = Momentum().evaluate(up_trend(ema_fast=100.0 + gap))
    assert (s.direction == 1.0) is trades, s
    assert trades or "no trend" in s.reason


@pytest.mark.parametrize("make, sign", [(up_trend, 1.0), (down_trend, -1.0)])
def test_momentum_needs_price_confirmation(make, sign):
    for hist in (0.0, -sign * 0.01):
        assert "MACD histogram" in Momentum().evaluate(make(macd_hist=hist)).reason
    for mom in (0.0, -sign * 0.001):
        s = Momentum().evaluate(make(mom_10=mom))
        assert s.direction == 0.0 and "10-bar momentum" in s.reason


@pytest.mark.parametrize("rsi, trades", [(74.9, True), (75.0, False)])
def test_momentum_rsi_overextension_threshold(rsi, trades):
    assert (Momentum().evaluate(up_trend(rsi=rsi)).direction == 1.0) is trades
    assert (Momentum().evaluate(down_trend(rsi=100.0 - rsi)).direction == -1.0) is trades


@pytest.mark.parametrize("missing", ["mom_10", "volume_ratio", "atr", "macd_hist"])
def test_momentum_waits_for_each_input(missing):
    s = Momentum().evaluate(up_trend(**{missing: None}))
    assert s == Signal.flat(f"warming up: {missing}")


def stretched(b, rsi, **kw):
    """Bands 99.8..100.2 with the price at %B `b`."""
    return snap(price=99.8 + 0.4 * b, pct_b=b, rsi=rsi, **kw)


@pytest.mark.parametrize(
    "b, rsi, direction",
    [
        (1.0, 70.0, -1.0),  # at the upper band and at overbought: fade
        (0.999, 90.0, 0.0),  # inside the band
        (1.2, 69.9, 0.0),  # outside but RSI short of overbought
        (0.0, 30.0, 1.0),  # at the lower band and at oversold
        (0.001, 10.0, 0.0),
        (-0.2, 30.1, 0.0),
    ],
)
def test_mean_reversion_band_and_rsi_thresholds(b, rsi, direction):
    s = MeanReversion().evaluate(stretched(b, rsi))
    assert s.direction == direction, s


def test_mean_reversion_confidence_grows_with_the_stretch():
    mr = MeanReversion()
    assert mr.evaluate(stretched(1.0, 80.0)).confidence == pytest.approx(0.5)
    # %B 1.125 is a quarter half-width past the band: halfway to full_excess 0.5
    assert mr.evaluate(stretched(1.125, 80.0)).confidence == pytest.approx(0.75)
    assert mr.evaluate(stretched(-0.25, 20.0)).confidence == 1.0


def test_mean_reversion_custom_pct_b_thresholds():
    mr = MeanReversion(MeanReversionParams(pct_b_high=0.9, pct_b_low=0.1))
    s = mr.evaluate(stretched(0.95, 75.0))
    assert s.direction == -1.0 and "threshold 0.9" in s.reason
    assert mr.evaluate(stretched(0.05, 25.0)).direction == 1.0


@pytest.mark.parametrize("ratio, fades", [(2.5, True), (2.51, False), (None, True)])
def test_mean_reversion_stands_aside_on_a_volume_surge(ratio, fades):
    s = MeanReversion().evaluate(stretched(1.3, 80.0, volume_ratio=ratio))
    assert (s.direction == -1.0) is fades, s
    assert fades or "breakout, not fading" in s.reason


def test_mean_reversion_zero_width_and_cold():
    assert "zero variance" in MeanReversion().evaluate(snap(bb_upper=100.0, bb_mid=100.0, bb_lower=100.0)).reason
    assert MeanReversion().evaluate(snap(pct_b=None)) == Signal.flat("warming up: pct_b")


@pytest.mark.parametrize("ratio, trades", [(1.49, False), (1.5, True), (3.0, True)])
def test_breakout_volume_surge_threshold(ratio, trades):
    s = Breakout().evaluate(snap(price=100.2, high_n=100.1, volume_ratio=ratio))
    assert (s.direction == 1.0) is trades, s


def test_breakout_level_is_strict_and_confidence_parts():
    assert "inside" in Breakout().evaluate(snap(price=100.1, high_n=100.1, volume_ratio=3.0)).reason
    assert "inside" in Breakout().evaluate(snap(price=99.9, low_n=99.9, volume_ratio=3.0)).reason
    # 0.5 base + 0.25 * (distance 0.5 ATR of full 1) + 0.25 * (volume 2.25: halfway from 1.5 to 3)
    s = Breakout().evaluate(snap(price=99.85, low_n=99.9, atr=0.1, volume_ratio=2.25))
    assert s.direction == -1.0 and s.confidence == pytest.approx(0.5 + 0.125 + 0.125)
