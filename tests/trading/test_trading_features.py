"""FeatureState: warm-up from bars, quote-built bars, per-quote snapshots."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pandas as pd
import pytest
import trading_reference as ref
from trading_reference import SCALAR_FIELDS, market

from stockade.codecs.messages import Bar, Quote
from stockade.config.settings import AnalyzerSettings, SettingsError, settings_from_dict
from stockade.trading.features import FeatureParams, FeatureState

MIN = 60_000_000_000
T0 = 1_700_000_040 * 1_000_000_000  # a minute boundary
assert T0 % MIN == 0


def bars_from(closes, volumes=None, t0=T0, symbol="X"):
    volumes = volumes if volumes is not None else [1000.0] * len(closes)
    out = []
    prev = closes[0]
    for i, (c, v) in enumerate(zip(closes, volumes, strict=True)):
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
    p = FeatureParams(volume_n=3)
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


def test_trade_that_beats_its_minutes_first_quote_counts_in_that_minutes_bar():
    p = FeatureParams(volume_n=3)
    fs = FeatureState("X", p)
    fs.warm_up(bars_from([100.0] * 5, volumes=[1000.0] * 5))
    t = T0 + 5 * MIN
    fs.on_quote(quote(100.0, t))
    fs.on_trade(100.0, 1000.0, t + 1)
    fs.on_trade(100.0, 700.0, t + MIN + 1)  # next minute, before its first quote
    fs.on_trade(100.0, 300.0, t + MIN + 2)
    fs.on_trade(100.0, 999.0, t - 1)  # a minute already closed: dropped
    fs.on_quote(quote(100.0, t + MIN + 3))  # closes minute 5 (1000 shares), opens minute 6
    assert fs.features().volume_ratio == pytest.approx(1.0)  # forming minute 6: 700 + 300
    fs.on_trade(100.0, 500.0, t + 2 * MIN + 1)
    fs.roll(t + 3 * MIN)  # closes minute 6 by the timer; the held size was for minute 7
    fs.on_quote(quote(100.0, t + 3 * MIN + 1))  # minute 8 opens: minute 7's size is stale
    assert (fs._forming.traded, fs._forming.volume) == (False, 0.0)


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


# ---- every field against pandas, bar by bar and quote by quote ----------------------------

SMALL = FeatureParams(
    sma_fast=3,
    sma_slow=7,
    ema_fast=4,
    ema_slow=9,
    rsi=5,
    macd_fast=4,
    macd_slow=9,
    macd_signal=3,
    bb_period=6,
    bb_k=1.5,
    volume_n=4,
    atr=5,
    breakout_n=8,
    vol_period=5,
    return_window=3,
)
PARAMS = [pytest.param(FeatureParams(), id="defaults"), pytest.param(SMALL, id="small")]


def assert_features_match(f, row, start: float, where: str, skip: tuple[str, ...] = ()) -> None:
    """Features `f` against one reference row: None where pandas has NaN, else within 1e-9."""
    for name in SCALAR_FIELDS:
        if name in skip:
            continue
        got, want = getattr(f, name), row[name]
        if got is None or want is None or (isinstance(want, float) and math.isnan(want)):
            assert got is None and (want is None or math.isnan(want)), f"{where} {name}: ours {got}, pandas {want}"
            continue
        tol = 1e-9 if name in ("rsi", "pct_b", "volume_ratio") else 1e-12 * start if name != "volatility" else 1e-15
        if name.startswith("mom_"):
            tol = 1e-15
        assert got == pytest.approx(want, rel=1e-9, abs=tol), f"{where} {name}"
    assert f.returns == pytest.approx(row["returns"], rel=1e-9, abs=1e-15), f"{where} returns"
    assert len(f.returns) == len(row["returns"]), where


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed, n, start, flat", [(31, 700, 100.0, 0), (32, 500, 5000.0, 30), (33, 400, 0.8, 0)])
def test_bar_fed_features_equal_pandas(params, seed, n, start, flat):
    df = market(seed, n, start, flat)
    want = ref.features(df, params)
    fs = FeatureState("X", params)
    for i, bar in enumerate(df.itertuples()):
        assert fs.on_bar(Bar("X", bar.open, bar.high, bar.low, bar.close, bar.volume, T0 + i * MIN))
        f = fs.features()
        assert f.bars_seen == i + 1
        assert_features_match(f, want.iloc[i], start, f"bar {i}")


def forming_reference(df, i: int, params: FeatureParams, high: float, low: float, close: float):
    """Reference row for minute i while its bar is forming at (high, low, close)."""
    part = df.iloc[: i + 1].copy()
    part.iloc[i, part.columns.get_loc("high")] = high
    part.iloc[i, part.columns.get_loc("low")] = low
    part.iloc[i, part.columns.get_loc("close")] = close
    return ref.features(part, params).iloc[i]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed, start", [(41, 100.0), (42, 3000.0)])
def test_quote_snapshots_equal_pandas_as_if_the_forming_bar_closed(params, seed, start):
    """Each quote's snapshot is the pandas value with the forming bar closed at that mid.

    Minute i is built from quotes at its open, high, low and close (zero
    spread, so the mid is the bar price exactly) plus one trade for its volume.
    Breakout levels stay on closed bars, and the volume ratio shows the larger
    of the last closed bar's and the forming bar's (volume already traded).
    """
    df = market(seed, 260, start)
    df["volume"] += 1.0  # every minute trades: bar volume stays in shares
    want = ref.features(df, params)
    fs = FeatureState("X", params)
    for i, bar in enumerate(df.itertuples()):
        t = T0 + i * MIN
        path = [
            (bar.open, bar.open, bar.open),
            (bar.high, bar.high, bar.open),
            (bar.low, bar.high, bar.low),
            (bar.close, bar.high, bar.low),
        ]
        for k, (mid, high, low) in enumerate(path):
            closed = fs.on_quote(Quote("X", mid, mid, 100.0, 100.0, t + k * 10 * 1_000_000_000, t + k))
            assert closed == (k == 0 and i > 0)
            if k == 0:
                fs.on_trade(mid, bar.volume, t + 1)
            f = fs.features()
            if k == 3:
                row = want.iloc[i]
            elif i % 23 == 5:  # intermediate quotes: a fresh reference each, so a sample of minutes
                row = forming_reference(df, i, params, high, low, mid)
            else:
                continue
            where = f"minute {i} quote {k}"
            assert_features_match(f, row, start, where, skip=("high_n", "low_n", "volume_ratio"))
            prev = want.iloc[i - 1] if i > 0 else None
            for name in ("high_n", "low_n"):
                expect = None if prev is None or math.isnan(prev[name]) else prev[name]
                assert getattr(f, name) == expect, f"{where} {name}"
            ratios = [
                r
                for r in (prev["volume_ratio"] if prev is not None else math.nan, want.iloc[i]["volume_ratio"])
                if not math.isnan(r)
            ]
            assert f.volume_ratio == (pytest.approx(max(ratios), rel=1e-9) if ratios else None), where
    fs.roll(T0 + len(df) * MIN)
    assert fs.bars_seen == len(df)


# ---- warm-up: one count, exact, and the settings check uses it ------------------------------


@pytest.mark.parametrize(
    "params",
    [
        FeatureParams(),
        SMALL,
        FeatureParams(vol_period=50),
        FeatureParams(return_window=60),
        FeatureParams(breakout_n=70),
        FeatureParams(volume_n=80),
        FeatureParams(atr=90),
        FeatureParams(rsi=40),
        FeatureParams(sma_fast=5, sma_slow=45),
        FeatureParams(macd_signal=20),
    ],
    ids=lambda p: f"warmup-{p.warmup_bars}",
)
def test_warmup_bars_is_exactly_when_every_field_is_set(params):
    df = market(51, params.warmup_bars + 5, flat_start=0)
    df["volume"] += 1.0
    fs = FeatureState("X", params)
    for i, bar in enumerate(df.itertuples()):
        fs.on_bar(Bar("X", bar.open, bar.high, bar.low, bar.close, bar.volume, T0 + i * MIN))
        f = fs.features()
        complete = (
            all(getattr(f, name) is not None for name in SCALAR_FIELDS) and len(f.returns) == params.return_window
        )
        assert complete == fs.ready == (i + 1 >= params.warmup_bars), f"after {i + 1} bars"


def test_to_params_maps_the_settings_section():
    a = AnalyzerSettings(ema_fast=8, ema_slow=21, volume_n=15, breakout_n=25, bb_k=2.5, rsi=10)
    p = a.to_params()
    assert (p.macd_fast, p.macd_slow, p.ema_fast, p.ema_slow) == (8, 21, 8, 21)
    assert (p.volume_n, p.breakout_n, p.bb_k, p.rsi) == (15, 25, 2.5, 10)
    assert (p.atr, p.vol_period, p.return_window) == (14, 20, 10)  # not in [analyzer]: defaults


def test_settings_warmup_check_uses_the_feature_count():
    need = AnalyzerSettings().to_params().warmup_bars
    assert need == 34  # MACD 26 + 9 - 1 is the longest with the shipped periods
    settings_from_dict({"trading": {"warmup_bars": need}})
    with pytest.raises(SettingsError, match=rf"trading\.warmup_bars = {need - 1}: must be at least {need}"):
        settings_from_dict({"trading": {"warmup_bars": need - 1}})
    # a longer MACD in [analyzer] raises the requirement with it
    with pytest.raises(SettingsError, match=r"must be at least 48"):
        settings_from_dict({"trading": {"warmup_bars": 47}, "analyzer": {"ema_slow": 40}})
    settings_from_dict({"trading": {"warmup_bars": 48}, "analyzer": {"ema_slow": 40}})


def test_feature_params_keep_their_manifest_names():
    """Fields renamed to the [analyzer] keys still read and write manifest.json under the older names."""
    p = FeatureParams(volume_n=30, breakout_n=40)
    wire = msgspec.json.decode(msgspec.json.encode(p))
    assert (wire["volume_period"], wire["breakout_period"]) == (30, 40)
    assert "volume_n" not in wire and "breakout_n" not in wire
    assert msgspec.json.decode(msgspec.json.encode(p), type=FeatureParams) == p
