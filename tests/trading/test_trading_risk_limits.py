"""The portfolio limits and breakers at and around their thresholds, and in `evaluate`.

Loss breaker, daily loss, sector exposure, total risk at the stops, in-flight
entries, the pre-close window, and the size scales (confidence, volatility,
the ensemble's regime scale) worked by hand.
"""

from __future__ import annotations

import pytest

from stockade.codecs.messages import AccountSnapshot, Position
from stockade.trading.brackets import BracketParams
from stockade.trading.pdt import DayTradeStatus
from stockade.trading.risk_rules import (
    RiskContext,
    RiskLimits,
    RiskRequest,
    day_loss_pct,
    evaluate,
    pending_entry_risk,
    position_risk,
    rule_close_window,
    rule_daily_loss,
    rule_in_flight,
    rule_loss_breaker,
    rule_portfolio_risk,
    rule_sector,
)

S = 1_000_000_000
NOW = 1_700_000_000 * S
PCT = BracketParams(method="percent", stop_loss_pct=2.0, take_profit_pct=4.0)


def account(equity=100_000.0, last_equity=100_000.0, bp=200_000.0):
    return AccountSnapshot(equity, last_equity, equity, bp, False, NOW)


def ctx(**kw):
    base = dict(now_ns=NOW, trading_state="ACTIVE", market_open=True, account=account(), start_of_day_equity=100_000.0)
    base.update(kw)
    return RiskContext(**base)


def req(**kw):
    # bid/ask 99.99/100.01: entry 100.01 for a buy, spread 2 bps
    base = dict(symbol="AAPL", side="buy", price=100.0, bid=99.99, ask=100.01, quote_recv_ns=NOW - S // 2)
    base.update(kw)
    return RiskRequest(**base)


# ---- loss limits --------------------------------------------------------------------------


def test_day_loss_pct():
    assert day_loss_pct(98_000.0, 100_000.0) == pytest.approx(2.0)
    assert day_loss_pct(101_000.0, 100_000.0) == pytest.approx(-1.0)
    assert day_loss_pct(98_000.0, None) is None and day_loss_pct(98_000.0, 0.0) is None


@pytest.mark.parametrize("equity, ok", [(95_001.0, True), (95_000.0, False), (94_999.0, False)])
def test_loss_breaker_at_its_threshold(equity, ok):
    # 5% of 100,000 is 5,000: 95,000 is exactly at the breaker
    r = rule_loss_breaker(equity, 100_000.0, 5.0)
    assert r.ok is ok and r.rule == "loss_breaker"


def test_loss_breaker_reason_and_unknown_start():
    r = rule_loss_breaker(94_000.0, 100_000.0, 5.0)
    assert r.reason == "day loss 6.00% (equity $94,000.00 vs start $100,000.00) >= loss breaker 5%"
    assert rule_loss_breaker(50_000.0, None, 5.0).ok  # no start yet: the daily-loss rule blocks entries then


@pytest.mark.parametrize("equity, ok", [(97_001.0, True), (97_000.0, False), (96_999.0, False)])
def test_daily_loss_at_its_threshold(equity, ok):
    assert rule_daily_loss(equity, 100_000.0, 3.0).ok is ok


def test_evaluate_daily_loss_blocks_entries_not_exits():
    down = account(equity=96_900.0)
    v = evaluate(req(), ctx(account=down), RiskLimits(daily_loss_limit_pct=3.0), PCT)
    assert not v.allowed and {r.rule for r in v.failures} == {"daily_loss"}
    pos = (Position("AAPL", 10.0, 100.0, 1_000.0),)
    v = evaluate(req(side="sell"), ctx(account=down, positions=pos), RiskLimits(daily_loss_limit_pct=3.0), PCT)
    assert v.allowed and v.reduce_only and v.qty == 10


def test_evaluate_loss_breaker_blocks_entries():
    v = evaluate(
        req(), ctx(account=account(equity=94_000.0)), RiskLimits(daily_loss_limit_pct=3.0, loss_breaker_pct=5.0), PCT
    )
    assert {r.rule for r in v.failures} == {"daily_loss", "loss_breaker"}


# ---- sector -----------------------------------------------------------------------------------


@pytest.mark.parametrize("add, ok", [(9_999.0, True), (10_000.0, True), (10_001.0, False)])
def test_sector_at_its_threshold(add, ok):
    # 20,000 held in tech + add vs 30% of 100,000 = 30,000
    assert rule_sector("AAPL", "tech", 20_000.0, add, 100_000.0, 30.0).ok is ok


def test_evaluate_sector_caps_the_size_and_unmapped_symbols_are_their_own_sector():
    lim = RiskLimits(
        risk_per_trade_pct=1.0, max_position_pct=20.0, max_sector_pct=30.0, sectors={"AAPL": "tech", "MSFT": "tech"}
    )
    held = (Position("MSFT", 250.0, 100.0, 25_000.0),)
    # sector room 30,000 - 25,000 = 5,000 -> floor(5,000 / 100.01) = 49 shares (risk alone would allow
    # 1% * 100,000 / 2.01 = 497, max position 20% -> 199)
    v = evaluate(req(), ctx(positions=held), lim, PCT)
    assert v.allowed, v.failures
    assert v.qty == 49 and "sector room 5000.00" in next(r.reason for r in v.results if r.rule == "sizing")
    # NVDA is in no sector: MSFT's tech exposure does not count against it
    v = evaluate(req(symbol="NVDA"), ctx(positions=held), lim, PCT)
    assert v.allowed and v.qty == 199


def test_evaluate_full_sector_rejects():
    lim = RiskLimits(max_position_pct=40.0, max_sector_pct=30.0, sectors={"AAPL": "tech", "MSFT": "tech"})
    held = (Position("MSFT", 300.0, 100.0, 30_000.0),)
    v = evaluate(req(), ctx(positions=held), lim, PCT)
    assert not v.allowed and {r.rule for r in v.failures} == {"sizing", "sector"}


# ---- total risk at the stops --------------------------------------------------------------


def test_position_risk_by_resting_stop_or_assumed():
    p = Position("AAPL", 100.0, 50.0, 5_000.0)
    assert position_risk(p, 48.0, 2.0) == pytest.approx(200.0)  # 100 x (50 - 48)
    assert position_risk(p, None, 2.0) == pytest.approx(100.0)  # 2% of 5,000
    assert position_risk(p, 51.0, 2.0) == 0.0  # a stop above the price locks in a gain
    short = Position("AAPL", -100.0, 50.0, -5_000.0)
    assert position_risk(short, 53.0, 2.0) == pytest.approx(300.0)


@pytest.mark.parametrize("add, ok", [(999.0, True), (1_000.0, True), (1_001.0, False)])
def test_portfolio_risk_at_its_threshold(add, ok):
    # 5,000 at risk + add vs 6% of 100,000 = 6,000
    assert rule_portfolio_risk(5_000.0, add, 100_000.0, 6.0).ok is ok


def test_evaluate_portfolio_risk_caps_the_size():
    lim = RiskLimits(risk_per_trade_pct=1.0, max_position_pct=50.0, max_portfolio_risk_pct=3.0)
    held = (Position("MSFT", 1_000.0, 100.0, 100_000.0 * 0.5),)  # 1,000 shares, value 50,000: 50/share
    # MSFT's stop at 48.5 risks 1,000 x 1.5 = 1,500; room 3,000 - 1,500 = 1,500
    # AAPL: entry 100.01, stop 98.00 (2% below, rounded down), 2.01 a share -> floor(1,500 / 2.01) = 746;
    # risk alone: 1,000 / 2.01 = 497 -> risk sets it
    v = evaluate(req(), ctx(positions=held, stops={"MSFT": 48.5}), lim, PCT)
    assert v.allowed and v.qty == 497
    lim = RiskLimits(risk_per_trade_pct=1.0, max_position_pct=50.0, max_portfolio_risk_pct=2.0)
    # room 2,000 - 1,500 = 500 -> floor(500 / 2.01) = 248 shares
    v = evaluate(req(), ctx(positions=held, stops={"MSFT": 48.5}), lim, PCT)
    assert v.allowed and v.qty == 248
    v = evaluate(req(), ctx(positions=held, stops={"MSFT": 48.0}), lim, PCT)  # 2,000 at risk: no room
    assert not v.allowed and {r.rule for r in v.failures} == {"sizing", "portfolio_risk"}
    # A working MSFT entry counts as if filled and stopped: with 1,500 held at
    # risk, a pending 500 at risk leaves no room under 2%.
    v = evaluate(req(), ctx(positions=held, stops={"MSFT": 48.5}, pending_risk=500.0), lim, PCT)
    assert not v.allowed and "portfolio_risk" in {r.rule for r in v.failures}


def test_pending_entry_risk_worked_by_hand():
    # Limit buy 100 @ 50 with its stop at 49: 100 x 1 = 100 at risk.
    assert pending_entry_risk("buy", 100, 50.0, 49.0, 2.0) == pytest.approx(100.0)
    # Market buy, stop 98.00 set 2% under the expected entry: entry 100, 10 x 2 = 20.
    assert pending_entry_risk("buy", 10, None, 98.0, 2.0) == pytest.approx(20.0)
    # Market sell (short), stop 102 set 2% above: entry 100, 10 x 2 = 20.
    assert pending_entry_risk("sell", 10, None, 102.0, 2.0) == pytest.approx(20.0)
    assert pending_entry_risk("buy", 10, None, None, 2.0) == 0.0  # no bracket stop: nothing known
    assert pending_entry_risk("buy", 0, 50.0, 49.0, 2.0) == 0.0  # fully filled: it is a position now


# ---- in flight, close window -----------------------------------------------------------------


def test_in_flight():
    assert rule_in_flight("AAPL", ("MSFT",)).ok
    r = rule_in_flight("AAPL", ("AAPL", "MSFT"))
    assert not r.ok and r.reason == "an entry for AAPL is already in flight"


def test_evaluate_in_flight_blocks_a_second_entry_but_not_an_exit():
    assert not evaluate(req(), ctx(in_flight=("AAPL",)), RiskLimits(), PCT).allowed
    pos = (Position("AAPL", 5.0, 100.0, 500.0),)
    assert evaluate(req(side="sell"), ctx(in_flight=("AAPL",), positions=pos), RiskLimits(), PCT).allowed


@pytest.mark.parametrize("minutes, ok", [(10.1, True), (10.0, False), (3.0, False), (None, True)])
def test_close_window_at_its_threshold(minutes, ok):
    assert rule_close_window(minutes, 10.0).ok is ok


def test_close_window_off():
    assert rule_close_window(1.0, 0.0).ok


# ---- size scales, worked by hand ---------------------------------------------------------------


def _qty(**kw) -> int:
    lim = RiskLimits(
        risk_per_trade_pct=1.0,
        max_position_pct=100.0,
        confidence_floor=kw.pop("floor", 1.0),
        target_volatility_pct=kw.pop("target", 0.0),
    )
    v = evaluate(req(**kw), ctx(), lim, PCT)
    assert v.allowed, v.failures
    return v.qty


def test_confidence_scales_the_size():
    # full size: 1% of 100,000 = 1,000 at risk over 100.01 - 98.00 = 2.01 -> 497 shares
    assert _qty(confidence=1.0, floor=0.5) == 497
    # floor 0.5, confidence 0.5 -> 0.5 + 0.5 x 0.5 = 0.75 -> 750 / 2.01 = 373.1 -> 373
    assert _qty(confidence=0.5, floor=0.5) == 373
    # confidence 0 -> the floor: 500 / 2.01 = 248.7 -> 248
    assert _qty(confidence=0.0, floor=0.5) == 248
    assert _qty(confidence=0.0, floor=1.0) == 497  # floor 1: confidence ignored


def test_volatility_scales_the_size():
    # ATR 4.00 on 100.01 is 4.0% a bar; target 2% -> half size: 500 / 2.01 = 248
    assert _qty(atr=4.0, target=2.0) == 248
    # ATR 1.00 (1%) is under the target: never scaled up
    assert _qty(atr=1.0, target=2.0) == 497
    assert _qty(atr=4.0, target=0.0) == 497  # off


def test_regime_scale_multiplies_with_the_others():
    # size_scale 0.5 (defensive) x confidence scale 0.75 = 0.375 -> 375 / 2.01 = 186.6 -> 186
    assert _qty(size_scale=0.5, confidence=0.5, floor=0.5) == 186


def test_day_trade_budget_in_evaluate_is_off_by_default_and_judged_on_the_lower_equity():
    ours = DayTradeStatus(3, frozenset())
    small = account(equity=20_000.0, last_equity=20_000.0, bp=40_000.0)
    assert evaluate(req(), ctx(account=small, start_of_day_equity=20_000.0, day_trades=ours), RiskLimits(), PCT).allowed
    old_guard = RiskLimits(day_trade_budget=3, day_trade_budget_below_equity=25_000.0)
    v = evaluate(req(), ctx(account=small, start_of_day_equity=20_000.0, day_trades=ours), old_guard, PCT)
    assert v.first_failure.rule == "day_trade_budget"
    # the lower of today's and the previous close's equity
    v = evaluate(
        req(),
        ctx(account=account(equity=30_000.0, last_equity=24_000.0), start_of_day_equity=24_000.0, day_trades=ours),
        old_guard,
        PCT,
    )
    assert v.first_failure.rule == "day_trade_budget"
    v = evaluate(
        req(),
        ctx(account=account(equity=30_000.0, last_equity=26_000.0), start_of_day_equity=26_000.0, day_trades=ours),
        old_guard,
        PCT,
    )
    assert v.allowed


def test_risk_bench_runs_small():
    from stockade.bench.risk import bench_risk_checks

    r = bench_risk_checks(300)
    assert r["risk_check_us"]["n"] == 300 and 0 < r["risk_check_us"]["p50"] <= r["risk_check_us"]["p99"]
    assert 0 < r["allowed"] < 300  # the seeded mix has both outcomes
