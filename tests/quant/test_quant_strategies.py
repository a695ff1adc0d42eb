"""Rule strategies on constructed price paths, through FeatureState."""

from __future__ import annotations

import numpy as np
import pytest

from stockade.codecs.messages import Bar, Quote
from stockade.quant.features import FeatureState
from stockade.quant.strategies import (
    Breakout,
    BreakoutParams,
    MeanReversion,
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
