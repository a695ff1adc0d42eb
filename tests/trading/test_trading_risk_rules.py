"""Every risk rule both ways, the full evaluation, and the failure breaker.

The newer rules (loss breaker, sector, portfolio risk, in flight, close
window, day-trade budget) and sizing scales are in test_trading_risk_limits.py.
"""

from __future__ import annotations

import msgspec
import pytest

from stockade.codecs.messages import AccountSnapshot, Position, Proposal
from stockade.trading.brackets import BracketParams
from stockade.trading.pdt import DayTradeStatus
from stockade.trading.risk_rules import (
    BreakerStatus,
    CircuitBreaker,
    OrderRateWindow,
    RiskContext,
    RiskLimits,
    RiskRequest,
    evaluate,
    rule_daily_loss,
    rule_day_trade_budget,
    rule_failure_breaker,
    rule_gross_exposure,
    rule_market_open,
    rule_max_open_positions,
    rule_max_position,
    rule_order_rate,
    rule_price_range,
    rule_short,
    rule_spread,
    rule_stale_quote,
    rule_trading_state,
)

S = 1_000_000_000
NOW = 1_700_000_000 * S
LIM = RiskLimits()


class FakeClock:
    def __init__(self, t: int = NOW) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def account(equity=100_000.0, last_equity=100_000.0, bp=200_000.0, blocked=False):
    return AccountSnapshot(equity, last_equity, equity, bp, blocked, NOW)


def ctx(**kw):
    base = dict(now_ns=NOW, trading_state="ACTIVE", market_open=True, account=account(), start_of_day_equity=100_000.0)
    base.update(kw)
    return RiskContext(**base)


def req(**kw):
    base = dict(symbol="AAPL", side="buy", price=100.0, bid=99.99, ask=100.01, quote_recv_ns=NOW - S // 2, atr=0.5)
    base.update(kw)
    return RiskRequest(**base)


# ---- each rule, allowed and blocked ---------------------------------------------------


def test_trading_state():
    assert rule_trading_state("ACTIVE", False).ok
    assert rule_trading_state("REDUCING", True).ok
    r = rule_trading_state("REDUCING", False)
    assert not r.ok and r.reason == "state REDUCING: only exposure-reducing orders"
    r = rule_trading_state("HALTED", True)
    assert not r.ok and r.reason == "state HALTED: no orders"
    assert "blocked" in rule_trading_state("ACTIVE", False, account_blocked=True).reason


def test_market_open():
    assert rule_market_open(True).ok
    r = rule_market_open(False)
    assert not r.ok and r.reason == "market is closed"
    assert rule_market_open(False, required=False).ok


def test_stale_quote():
    assert rule_stale_quote(NOW, NOW - 2 * S, 5.0).ok
    r = rule_stale_quote(NOW, NOW - 7 * S, 5.0)
    assert not r.ok and r.reason == "quote age 7.0 s > max 5 s"
    assert not rule_stale_quote(NOW, 0, 5.0).ok


def test_spread():
    assert rule_spread(10.0, 25.0).ok
    r = rule_spread(45.1, 25.0)
    assert not r.ok and r.reason == "spread 45.1 bps > max 25 bps"
    assert not rule_spread(None, 25.0).ok


def test_price_range():
    assert rule_price_range(50.0, 1.0, 5000.0).ok
    r = rule_price_range(0.5, 1.0, 5000.0)
    assert not r.ok and r.reason == "price 0.5000 < min 1"
    assert rule_price_range(6000.0, 1.0, 5000.0).reason == "price 6000.00 > max 5000"


def test_max_position():
    assert rule_max_position("AAPL", 0.0, 9_000.0, 100_000.0, 10.0).ok
    r = rule_max_position("AAPL", 5_000.0, 6_000.0, 100_000.0, 10.0)
    assert not r.ok and r.reason == "AAPL would be $11,000.00 = 11.0% of equity > max 10%"
    r = rule_max_position("AAPL", 10_500.0, 0.0, 100_000.0, 10.0)
    assert not r.ok and "is 10.5% of equity: no room under max 10%" in r.reason


def test_max_open_positions():
    assert rule_max_open_positions("A", ("B",), (), 2).ok
    assert rule_max_open_positions("B", ("A", "B"), (), 2).ok  # adding to a held symbol
    r = rule_max_open_positions("C", ("A",), ("B",), 2)
    assert not r.ok and r.reason == "2 positions/pending entries >= max 2"


def test_gross_exposure():
    assert rule_gross_exposure(50_000.0, 100_000.0, 100.0).ok
    r = rule_gross_exposure(100_000.0, 100_000.0, 100.0)
    assert not r.ok and r.reason == "gross exposure 100.0% of equity >= max 100%"


def test_daily_loss():
    assert rule_daily_loss(99_000.0, 100_000.0, 2.0).ok
    r = rule_daily_loss(97_690.0, 100_000.0, 2.0)
    assert not r.ok
    assert r.reason == "daily loss 2.31% (equity $97,690.00 vs start $100,000.00) >= limit 2%"
    assert not rule_daily_loss(97_690.0, None, 2.0).ok


def test_failure_breaker_rule():
    assert rule_failure_breaker(BreakerStatus(False), NOW).ok
    r = rule_failure_breaker(BreakerStatus(True, "3 consecutive order failures", NOW + 60 * S), NOW)
    assert not r.ok and r.reason == "failure breaker tripped (3 consecutive order failures); 60 s of cool-off left"


def test_day_trade_budget():
    # (day trades in the window, symbols opened today and still held)
    three = DayTradeStatus(3, frozenset())
    assert rule_day_trade_budget(20_000.0, three, False, "A", LIM).ok  # off by default
    on = msgspec.structs.replace(LIM, day_trade_budget=3)
    assert rule_day_trade_budget(20_000.0, DayTradeStatus(2, frozenset()), False, "A", on).ok
    r = rule_day_trade_budget(20_000.0, three, False, "A", on)
    assert not r.ok and r.rule == "day_trade_budget"
    assert (
        r.reason == "3 day trades in the last 5 sessions, budget 3, 0 other position(s) opened today: "
        "a new bracketed entry could make day trade 4 > 3"
    )
    # an exit is never held back, not even one that makes a day trade past the budget
    assert rule_day_trade_budget(20_000.0, DayTradeStatus(3, frozenset({"A"})), True, "A", on).ok
    below = msgspec.structs.replace(on, day_trade_budget_below_equity=25_000.0)
    assert rule_day_trade_budget(30_000.0, three, False, "A", below).ok  # above the equity it applies below
    assert not rule_day_trade_budget(20_000.0, three, False, "A", below).ok


def test_order_rate():
    assert rule_order_rate(29, 30).ok
    r = rule_order_rate(30, 30)
    assert not r.ok and r.reason == "30 orders in the last minute >= max 30"


def test_short():
    assert rule_short("sell", False, True).ok
    assert rule_short("sell", True, False).ok  # selling a long is not a short
    r = rule_short("sell", False, False)
    assert not r.ok and "shorting is disabled" in r.reason


# ---- evaluate --------------------------------------------------------------------------


def test_evaluate_allows_and_sizes_a_clean_buy():
    v = evaluate(req(), ctx(), LIM, BracketParams(stop_atr=2.0, take_profit_atr=3.0))
    assert v.allowed, v.failures
    # entry at the ask 100.01; stop 99.01 -> 500 / 1.00 = 500 shares, capped by 10% = 99
    assert v.entry == 100.01 and v.stop_loss == 99.01 and v.take_profit == 101.51
    assert v.qty == 99 and not v.reduce_only
    assert v.first_failure is None
    names = [r.rule for r in v.results]
    for rule in (
        "trading_state",
        "market_open",
        "stale_quote",
        "day_trade_budget",
        "spread",
        "price_range",
        "short_selling",
        "max_positions",
        "gross_exposure",
        "daily_loss",
        "loss_breaker",
        "failure_breaker",
        "order_rate",
        "in_flight",
        "close_window",
        "sizing",
        "max_position",
        "sector",
        "portfolio_risk",
    ):
        assert rule in names


def test_evaluate_runs_every_rule_and_reports_all_failures():
    v = evaluate(
        req(bid=99.0, ask=101.0, quote_recv_ns=NOW - 10 * S),
        ctx(market_open=False, account=account(equity=97_000.0), orders_last_minute=99),
        LIM,
    )
    assert not v.allowed and v.qty == 0
    failed = {r.rule for r in v.failures}
    assert failed == {"market_open", "stale_quote", "spread", "daily_loss", "order_rate"}
    assert v.first_failure.rule == "market_open"


def test_evaluate_reducing_order_passes_exposure_rules():
    pos = (Position("AAPL", 40.0, 90.0, 4_000.0),)
    c = ctx(trading_state="REDUCING", positions=pos, account=account(equity=90_000.0), orders_last_minute=99)
    v = evaluate(req(side="sell", bid=99.0, ask=101.0), c, LIM)
    assert v.allowed, v.failures
    assert v.qty == 40 and v.reduce_only and v.stop_loss is None
    # the same order while HALTED is blocked
    v = evaluate(req(side="sell"), msgspec.structs.replace(c, trading_state="HALTED"), LIM)
    assert not v.allowed and v.first_failure.rule == "trading_state"


def test_evaluate_reducing_blocks_new_exposure():
    v = evaluate(req(), ctx(trading_state="REDUCING"), LIM)
    assert not v.allowed and v.first_failure.reason == "state REDUCING: only exposure-reducing orders"


def test_evaluate_short_position_bought_back_is_reducing():
    pos = (Position("AAPL", -10.0, 100.0, -1_000.0),)
    v = evaluate(req(side="buy"), ctx(positions=pos, trading_state="REDUCING"), LIM)
    assert v.allowed and v.qty == 10 and v.reduce_only


def test_evaluate_existing_position_uses_up_room():
    pos = (Position("AAPL", 100.0, 100.0, 10_000.0),)
    v = evaluate(req(), ctx(positions=pos), LIM)
    assert not v.allowed
    assert {r.rule for r in v.failures} == {"sizing", "max_position"}


def test_evaluate_breaker_and_day_trade_budget_and_account():
    v = evaluate(req(), ctx(breaker=BreakerStatus(True, "3 losing trades", NOW + 10 * S)), LIM)
    assert not v.allowed and v.first_failure.rule == "failure_breaker"
    small = account(equity=20_000.0, last_equity=20_000.0, bp=40_000.0)
    three = DayTradeStatus(3, frozenset())
    # no pattern-day-trader rule any more: a small account with three day trades may trade on
    assert evaluate(req(), ctx(account=small, start_of_day_equity=20_000.0, day_trades=three), LIM).allowed
    v = evaluate(
        req(),
        ctx(account=small, start_of_day_equity=20_000.0, day_trades=three),
        msgspec.structs.replace(LIM, day_trade_budget=3),
    )
    assert not v.allowed and v.first_failure.rule == "day_trade_budget"
    v = evaluate(req(), ctx(account=None), LIM)
    assert not v.allowed and v.failures[-1].reason == "no account snapshot yet"


def test_evaluate_start_equity_falls_back_to_last_equity():
    c = ctx(account=account(equity=97_000.0, last_equity=100_000.0), start_of_day_equity=None)
    v = evaluate(req(), c, LIM)
    assert v.first_failure.rule == "daily_loss"


def test_request_from_proposal():
    p = Proposal("p1", "AAPL", "sell", -0.5, 0.9, 100.0, 99.98, 100.02, NOW, NOW)
    r = RiskRequest.from_proposal(p, atr=0.4)
    assert r.entry == 99.98 and r.spread_bps == pytest.approx(4.0, rel=1e-3) and r.atr == 0.4


# ---- circuit breaker ---------------------------------------------------------------------


def test_breaker_trips_on_consecutive_failures_and_resets_after_cooloff():
    clock = FakeClock()
    cb = CircuitBreaker(max_consecutive_failures=3, cooloff_s=60, clock=clock)
    assert not cb.record_order_failure("422")
    assert not cb.record_order_failure("422")
    cb.record_order_ok()  # streak broken
    assert not cb.record_order_failure("422")
    assert not cb.record_order_failure("422")
    assert cb.record_order_failure("insufficient qty")  # trips now
    st = cb.status()
    assert st.tripped and st.reason == "3 consecutive order failures: last insufficient qty"
    assert st.until_ns == NOW + 60 * S
    assert not cb.record_order_failure("again")  # already tripped: not a new trip
    clock.t += 59 * S
    assert cb.tripped
    clock.t += 1 * S
    assert not cb.tripped and cb.status() == BreakerStatus(False)
    assert not cb.record_order_failure("x")  # counters were reset


def test_breaker_trips_on_losses_in_window_only():
    clock = FakeClock()
    cb = CircuitBreaker(max_losses=3, loss_window_s=600, cooloff_s=60, clock=clock)
    assert not cb.record_trade(-10)
    clock.t += 400 * S
    assert not cb.record_trade(-10)
    assert not cb.record_trade(+50)  # wins do not count
    clock.t += 300 * S  # the first loss left the window
    assert not cb.record_trade(-10)
    assert cb.record_trade(-5)
    assert "3 losing trades within 600 s" in cb.status().reason


def test_breaker_manual_trip_and_reset_and_from_limits():
    cb = CircuitBreaker.from_limits(RiskLimits(circuit_breaker_cooloff_s=10), clock=FakeClock())
    assert cb.trip("operator")
    assert cb.status().until_ns == NOW + 10 * S
    cb.reset()
    assert not cb.tripped


def test_order_rate_window():
    clock = FakeClock()
    w = OrderRateWindow(60, clock)
    for _ in range(3):
        w.record()
        clock.t += 20 * S
    assert w.count() == 2  # the first is now exactly 60 s old
    clock.t += 60 * S
    assert w.count() == 0
