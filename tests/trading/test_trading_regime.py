"""Volatility regime: each rule at and around its threshold, and on real feature paths."""

from __future__ import annotations

import numpy as np
import pytest
from trading_fixtures import snap

from stockade.codecs.messages import Bar
from stockade.trading.features import Features, FeatureState
from stockade.trading.regime import Regime, RegimeParams, classify

MIN = 60_000_000_000
P = RegimeParams()


def test_calm_snapshot_is_normal_and_names_the_closest_measure():
    r = classify(snap())
    assert r.high_volatility is False
    assert r.stress == pytest.approx(0.25)  # volatility 0.1% of the 0.4% limit is the largest ratio
    assert r.reason.startswith("normal: volatility")


@pytest.mark.parametrize("factor, high", [(0.999, False), (1.0, True), (1.001, True)])
def test_volatility_threshold(factor, high):
    r = classify(snap(volatility=P.high_vol_bar_pct / 100 * factor))
    assert r.high_volatility is high
    assert r.stress == pytest.approx(factor)
    assert "volatility" in r.reason


@pytest.mark.parametrize("factor, high", [(0.999, False), (1.0, True), (2.0, True)])
def test_atr_threshold_relative_to_price(factor, high):
    for price in (10.0, 100.0, 4000.0):
        f = snap(price=price, atr=P.high_vol_atr_pct / 100 * price * factor, high_n=price, volatility=None)
        r = classify(f)
        assert r.high_volatility is high, (price, r)
        assert r.stress == pytest.approx(factor) and "ATR" in r.reason


@pytest.mark.parametrize("drop, high", [(0.029, False), (0.03, True), (0.05, True)])
def test_sharp_drop_below_the_range_high(drop, high):
    r = classify(snap(high_n=100.0, price=100.0 * (1 - drop)))
    assert r.high_volatility is high
    assert r.stress == pytest.approx(drop / (P.high_vol_drop_pct / 100))
    assert "below the 100.0000 high" in r.reason
    assert r.reason.startswith("high volatility") is high


def test_price_above_the_range_is_no_drawdown():
    r = classify(snap(high_n=90.0, price=100.0, volatility=None, atr=None))
    assert r == Regime(False, "warming up: no volatility, ATR or range yet")


def test_cold_snapshot_is_normal_and_says_so():
    r = classify(snap(volatility=None, atr=None, high_n=None))
    assert not r.high_volatility and r.reason.startswith("warming up") and r.stress == 0.0


def test_the_worst_measure_decides():
    r = classify(snap(volatility=0.002, atr=0.9))  # ATR 0.9% > 0.6%, volatility half its limit
    assert r.high_volatility and "ATR" in r.reason and r.stress == pytest.approx(1.5)


def test_custom_thresholds_and_bad_ones():
    assert classify(snap(volatility=0.003), RegimeParams(high_vol_bar_pct=0.2)).high_volatility
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="high_vol_atr_pct"):
            RegimeParams(high_vol_atr_pct=bad)


def _fed(sigma: float, seed: int = 3) -> Features:
    rng = np.random.default_rng(seed)
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, 120)))
    fs = FeatureState("X")
    prev = closes[0]
    for i, c in enumerate(closes):
        fs.on_bar(Bar("X", prev, max(prev, c) * 1.0002, min(prev, c) * 0.9998, c, 1000.0, i * MIN))
        prev = c
    return fs.features()


def test_real_paths_calm_and_wild():
    """A 0.05%/bar walk is normal; a 1%/bar walk (about 20% a day) is high volatility."""
    calm, wild = classify(_fed(0.0005)), classify(_fed(0.01))
    assert not calm.high_volatility, calm
    assert wild.high_volatility, wild
