"""Position sizing and bracket prices / tick rounding."""

from __future__ import annotations

import pytest

from stockade.trading.brackets import BracketParams, bracket_prices, round_price, tick_size
from stockade.trading.sizing import confidence_scale, position_size, volatility_scale


def size(**kw):
    args = dict(
        equity=100_000.0, entry=100.0, stop=98.0, buying_power=200_000.0, risk_per_trade_pct=0.5, max_position_pct=10.0
    )
    args.update(kw)
    return position_size(**args)


def test_risk_based_size():
    r = size()  # 500 risk / 2.00 stop = 250 shares, 25k > 10k cap -> 100
    assert r.qty == 100 and "max position" in r.reason
    r = size(max_position_pct=50.0)
    assert r.qty == 250 and "risk" in r.reason


def test_float_floor_does_not_lose_a_share():
    # 100000 * 1% / 0.1 is 9999.999... in binary floating point
    assert size(risk_per_trade_pct=1.0, entry=10.0, stop=9.9, max_position_pct=100.0, buying_power=1e9).qty == 10_000


def test_capped_by_buying_power_and_existing_exposure():
    r = size(buying_power=1_234.0)
    assert r.qty == 12 and "buying power" in r.reason
    r = size(existing_exposure=9_550.0)  # 450 of room under 10k -> 4 shares
    assert r.qty == 4
    r = size(existing_exposure=10_000.0)
    assert r.qty == 0 and "max position" in r.reason


@pytest.mark.parametrize(
    "kw, text",
    [
        (dict(stop=100.0), "no stop distance"),
        (dict(equity=0.0), "equity"),
        (dict(equity=-5.0), "equity"),
        (dict(entry=0.0), "entry"),
        (dict(stop=float("nan")), "non-finite"),
        (dict(stop=0.0), "no stop distance"),
    ],
)
def test_zero_size_cases(kw, text):
    r = size(**kw)
    assert r.qty == 0 and text in r.reason


def test_worked_example_scale_and_extra_caps():
    # equity 50,000, risk 1% = 500; entry 40.00, stop 39.20: 0.80 a share -> 625 shares;
    # max position 20% = 10,000 -> 250 shares; buying power 8,000 -> 200 shares: buying power sets it
    r = size(
        equity=50_000.0, entry=40.0, stop=39.2, buying_power=8_000.0, risk_per_trade_pct=1.0, max_position_pct=20.0
    )
    assert r.qty == 200 and "buying power" in r.reason
    # scale 0.25 (e.g. confidence 0.5 with floor 0 x defensive 0.5): 500 x 0.25 / 0.80 = 156.25 -> 156
    r = size(
        equity=50_000.0,
        entry=40.0,
        stop=39.2,
        buying_power=8_000.0,
        risk_per_trade_pct=1.0,
        max_position_pct=20.0,
        scale=0.25,
    )
    assert r.qty == 156 and "scale 0.25" in r.reason
    # the sector may add only 3,000 more: 3,000 / 40 = 75 shares
    r = size(
        equity=50_000.0,
        entry=40.0,
        stop=39.2,
        buying_power=8_000.0,
        risk_per_trade_pct=1.0,
        max_position_pct=20.0,
        sector_room=3_000.0,
    )
    assert r.qty == 75 and "sector room" in r.reason
    # the portfolio may lose only 40 more at its stops: 40 / 0.80 = 50 shares
    r = size(
        equity=50_000.0,
        entry=40.0,
        stop=39.2,
        buying_power=8_000.0,
        risk_per_trade_pct=1.0,
        max_position_pct=20.0,
        risk_room=40.0,
    )
    assert r.qty == 50 and "portfolio risk room" in r.reason
    r = size(sector_room=-1.0)  # over the sector limit already
    assert r.qty == 0 and "sector room" in r.reason


def test_scale_is_clamped_to_0_1():
    assert size(max_position_pct=50.0, scale=3.0).qty == 250  # never above full size
    assert size(scale=-1.0).qty == 0


def test_confidence_scale():
    assert confidence_scale(0.0, 0.5) == 0.5
    assert confidence_scale(0.5, 0.5) == 0.75
    assert confidence_scale(1.0, 0.5) == 1.0
    assert confidence_scale(7.0, 0.5) == 1.0 and confidence_scale(float("nan"), 0.5) == 0.5
    assert confidence_scale(0.2, 1.0) == 1.0  # floor 1: confidence does not scale


def test_volatility_scale():
    # ATR 3.00 on a 100.00 stock is 3%; target 1.5% -> half size
    assert volatility_scale(3.0, 100.0, 1.5) == pytest.approx(0.5)
    assert volatility_scale(1.0, 100.0, 1.5) == 1.0  # calmer than the target: not scaled up
    assert volatility_scale(None, 100.0, 1.5) == 1.0
    assert volatility_scale(3.0, 100.0, 0.0) == 1.0  # off


def test_tiny_equity_rounds_to_zero():
    r = size(equity=150.0, buying_power=150.0)  # 0.75 risk / 2.00 -> 0 shares
    assert r.qty == 0 and "rounds to 0" in r.reason


def test_short_side_uses_distance():
    assert size(stop=102.0, max_position_pct=100).qty == 250


# ---- rounding --------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, direction, expected",
    [
        (10.075, "nearest", 10.08),
        (10.074, "nearest", 10.07),
        (10.079, "down", 10.07),
        (10.071, "up", 10.08),
        (10.07, "down", 10.07),  # 1006.9999... ticks in binary: must stay 10.07
        (10.07, "up", 10.07),
        (0.12345, "nearest", 0.1235),
        (0.12345, "down", 0.1234),
        (0.12341, "up", 0.1235),
        (0.99999, "down", 0.9999),
        (0.99996, "up", 1.0),
        (1.004, "down", 1.0),
        (1.001, "up", 1.01),
    ],
)
def test_round_price(p, direction, expected):
    assert round_price(p, direction) == expected


def test_tick_size_and_bad_input():
    assert tick_size(1.0) == 0.01 and tick_size(0.9999) == 0.0001
    with pytest.raises(ValueError):
        round_price(-1.0)
    with pytest.raises(ValueError):
        round_price(1.0, "sideways")


def test_buy_bracket_by_atr_rounds_away_from_entry():
    b = bracket_prices("buy", 100.003, atr=0.5, params=BracketParams(stop_atr=2.0, take_profit_atr=3.0))
    assert b.method == "atr"
    assert b.stop_loss == 99.0  # 99.003 rounds down
    assert b.take_profit == 101.51  # 101.503 rounds up


def test_sell_bracket_by_percent():
    b = bracket_prices("sell", 50.0, atr=None, params=BracketParams(stop_loss_pct=1.0, take_profit_pct=2.0))
    assert b.method == "percent"
    assert (b.stop_loss, b.take_profit) == (50.5, 49.0)


def test_bracket_legs_at_least_one_tick_away():
    b = bracket_prices("buy", 20.0, atr=0.0001)  # legs closer than a tick are pushed out to one tick
    assert b.stop_loss <= 19.99 and b.take_profit >= 20.01
    b = bracket_prices("sell", 0.5, atr=None, params=BracketParams(method="percent", stop_loss_pct=0.001))
    assert b.stop_loss >= 0.5001


def test_sub_dollar_bracket():
    b = bracket_prices("buy", 0.5123, atr=0.01)
    assert (b.stop_loss, b.take_profit) == (0.4923, 0.5423)
