"""FeatureState: warm-up from bars, quote-built bars, per-quote snapshots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockade.codecs.messages import Bar, Quote
from stockade.quant.features import FeatureParams, FeatureState

MIN = 60_000_000_000
T0 = 1_700_000_040 * 1_000_000_000  # a minute boundary
assert T0 % MIN == 0


def bars_from(closes, volumes=None, t0=T0, symbol="X"):
    volumes = volumes if volumes is not None else [1000.0] * len(closes)
    out = []
    prev = closes[0]
    for i, (c, v) in enumerate(zip(closes, volumes)):
        out.append(Bar(symbol, prev, max(prev, c) * 1.001, min(prev, c) * 0.999, c, v, t0 + i * MIN))
        prev = c
    return out


def quote(mid, ts, spread=0.02, symbol="X"):
    return Quote(symbol, mid - spread / 2, mid + spread / 2, 100.0, 100.0, ts, ts)


def walk(seed, n):
    rng = np.random.default_rng(seed)
    return list(100 * np.exp(np.cumsum(rng.normal(0, 0.002, n))))


def test_not_warm_then_warm():
    fs = FeatureState("X")
    assert fs.features() is None
    p = FeatureParams()
    fs.warm_up(bars_from(walk(1, p.warmup_bars - 1)))
    f = fs.features()
    assert f.macd is None and not fs.ready
    fs.on_bar(bars_from(walk(2, 1), t0=T0 + p.warmup_bars * MIN)[0])
    f = fs.features()
    assert fs.ready
    assert None not in (f.sma_slow, f.ema_slow, f.rsi, f.macd, f.bb_upper, f.volume_ratio, f.atr, f.high_n)
    assert f.bars_seen == p.warmup_bars
    assert f.spread_bps is None  # no quote yet


def test_warm_up_sorts_and_drops_duplicates():
    bars = bars_from(walk(3, 50))
    fs = FeatureState("X")
    assert fs.warm_up(list(reversed(bars)) + bars[:10]) == 50
    assert fs.on_bar(bars[-1]) is False


def test_quotes_build_bars_like_history():
    """Indicators fed by quote-built bars equal those fed the same bars directly."""
    closes = walk(4, 80)
    hist = FeatureState("X")
    hist.warm_up(bars_from(closes[:40]))
    live = FeatureState("X")
    live.warm_up(bars_from(closes[:40]))
    # minute 40..79 from quotes: three quotes per minute ending at the close
    for i, c in enumerate(closes[40:]):
        t = T0 + (40 + i) * MIN
        for k, px in enumerate((c * 1.0005, c * 0.9995, c)):
            live.on_quote(quote(px, t + k * 10_000_000_000))
        hist.on_bar(Bar("X", c, c * 1.0005, c * 0.9995, c, 3.0, t))
    live.roll(T0 + 80 * MIN)
    a, b = hist.features(), live.features()
    assert live.bars_seen == hist.bars_seen == 80
    for name in ("sma_fast", "sma_slow", "ema_fast", "ema_slow", "rsi", "macd", "macd_signal", "bb_upper", "bb_lower"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-12), name


def test_rsi_of_quote_bars_matches_pandas_over_bar_closes():
    closes = walk(5, 60)
    fs = FeatureState("X")
    for i, c in enumerate(closes):
        fs.on_quote(quote(c * 1.001, T0 + i * MIN))
        fs.on_quote(quote(c, T0 + i * MIN + 30_000_000_000))
    fs.roll(T0 + 60 * MIN)
    s = pd.Series(closes)
    d = s.diff()
    g = d.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    l = (-d).clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    assert fs.features().rsi == pytest.approx(float((100 - 100 / (1 + g / l)).iloc[-1]), rel=1e-9)


def test_snapshot_on_quote_peeks_and_bar_close_agrees():
    closes = walk(6, 60)
    fs = FeatureState("X")
    fs.warm_up(bars_from(closes))
    t = T0 + 60 * MIN
    fs.on_quote(quote(closes[-1] * 1.01, t + 1))
    peeked = fs.features()
    assert peeked.price == pytest.approx(closes[-1] * 1.01)
    assert peeked.spread_bps == pytest.approx(0.02 / (closes[-1] * 1.01) * 1e4)
    assert fs.bars_seen == 60  # the quote only formed a bar
    fs.roll(t + MIN)
    committed = fs.features()
    assert fs.bars_seen == 61
    for name in ("sma_fast", "ema_slow", "rsi", "macd_hist", "bb_mid", "bb_width"):
        assert getattr(committed, name) == pytest.approx(getattr(peeked, name), rel=1e-12), name
    # breakout levels are over closed bars only
    assert peeked.high_n == pytest.approx(max(b.high for b in bars_from(closes)[-20:]))


def test_bad_and_out_of_order_quotes_ignored():
    fs = FeatureState("X")
    fs.on_quote(quote(100.0, T0 + 10))
    assert not fs.on_quote(Quote("X", 101.0, 100.0, 1, 1, T0 + 20, T0 + 20))  # crossed
    assert not fs.on_quote(Quote("X", 0.0, 100.0, 1, 1, T0 + 20, T0 + 20))
    assert not fs.on_quote(Quote("X", float("nan"), 100.0, 1, 1, T0 + 20, T0 + 20))
    assert not fs.on_quote(quote(50.0, T0 + 5))  # older than the last
    assert fs.features().price == pytest.approx(100.0)


def test_volume_ratio_resets_when_unit_changes_and_counts_trades():
    p = FeatureParams(volume_period=3)
    fs = FeatureState("X", p)
    fs.warm_up(bars_from([100.0] * 5, volumes=[1000.0] * 5))
    assert fs.features().volume_ratio == pytest.approx(1.0)
    # live minutes with trades: same unit (shares), baseline kept
    t = T0 + 5 * MIN
    fs.on_quote(quote(100.0, t))
    fs.on_trade(100.0, 2500.0, t + 1)
    assert fs.features().volume_ratio == pytest.approx(2.5)  # forming volume already done
    fs.roll(t + MIN)
    assert fs._vol.ready
    # a minute with quotes only: volume in quote counts, so the baseline restarts
    fs.on_quote(quote(100.0, t + MIN))
    fs.roll(t + 2 * MIN)
    assert fs.features().volume_ratio is None


def test_quote_for_bar_minute_replaced_by_venue_bar():
    fs = FeatureState("X")
    fs.warm_up(bars_from([100.0] * 3))
    t = T0 + 3 * MIN
    fs.on_quote(quote(105.0, t + 1))
    assert fs.on_bar(Bar("X", 100.0, 101.0, 99.0, 100.5, 10.0, t))
    assert fs.bars_seen == 4
    assert fs._last_close == 100.5
    # later quotes in that committed minute update the price but build nothing
    assert not fs.on_quote(quote(100.7, t + 2))
    assert fs.features().price == pytest.approx(100.7)
    assert fs.bars_seen == 4
