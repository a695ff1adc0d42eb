"""Extended-hours trading: session classification from the broker calendar, the
market-hours rule at the session edges, and the pricing and sizing of the
marketable limit the risk guard sends in the pre-market and after-hours sessions."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from stockade.codecs.messages import AccountSnapshot, Position
from stockade.trading.brackets import BracketParams
from stockade.trading.market_hours import (
    NEW_YORK,
    Calendar,
    classify_session,
    session_from_calendar,
)
from stockade.trading.risk_rules import (
    RiskContext,
    RiskLimits,
    RiskRequest,
    evaluate,
    extended_limit_price,
    rule_market_open,
)

S = 1_000_000_000
MONDAY = date(2026, 11, 23)
THANKSGIVING = date(2026, 11, 26)
BLACK_FRIDAY = date(2026, 11, 27)  # NYSE closes at 13:00


def ny_ns(day: date, h: int, m: int = 0, s: int = 0) -> int:
    return int(datetime.combine(day, time(h, m, s), tzinfo=NEW_YORK).timestamp()) * S


def alpaca_row(day: date, close: time = time(16, 0)):
    # alpaca-py's Calendar model: naive New York datetimes, no session_open/close.
    return session_from_calendar(day, datetime.combine(day, time(9, 30)), datetime.combine(day, close))


CAL = Calendar(
    [
        alpaca_row(date(2026, 11, 20)),
        alpaca_row(MONDAY),
        alpaca_row(date(2026, 11, 24)),
        alpaca_row(date(2026, 11, 25)),
        alpaca_row(BLACK_FRIDAY, time(13, 0)),
    ]
)


# ---- classification -----------------------------------------------------------------


@pytest.mark.parametrize(
    "day,hms,phase",
    [
        (MONDAY, (3, 59, 59), "closed"),
        (MONDAY, (4, 0, 0), "pre"),
        (MONDAY, (9, 29, 59), "pre"),
        (MONDAY, (9, 30, 0), "regular"),
        (MONDAY, (15, 59, 59), "regular"),
        (MONDAY, (16, 0, 0), "post"),
        (MONDAY, (19, 59, 59), "post"),
        (MONDAY, (20, 0, 0), "closed"),
        (MONDAY, (23, 0, 0), "closed"),
        (BLACK_FRIDAY, (12, 59, 59), "regular"),
        (BLACK_FRIDAY, (13, 0, 0), "post"),  # early close: after-hours from 13:00 ...
        (BLACK_FRIDAY, (16, 30, 0), "post"),
        (BLACK_FRIDAY, (17, 0, 0), "closed"),  # ... to 17:00, not 20:00
        (THANKSGIVING, (8, 0, 0), "closed"),  # holiday: no session at all
        (THANKSGIVING, (11, 0, 0), "closed"),
        (THANKSGIVING, (17, 0, 0), "closed"),
        (date(2026, 11, 22), (10, 0, 0), "closed"),  # Sunday
    ],
)
def test_session_phase_from_the_calendar(day, hms, phase):
    assert CAL.session_phase(ny_ns(day, *hms)) == phase


def test_regular_only_phase_is_unchanged():
    # `phase` keeps its regular/closed meaning: the day-trade window and close logic rely on it.
    assert CAL.phase(ny_ns(MONDAY, 9, 0)) == "closed"
    assert CAL.phase(ny_ns(MONDAY, 17, 0)) == "closed"
    assert CAL.phase(ny_ns(MONDAY, 10, 0)) == "regular"


def test_classify_without_a_session_is_closed():
    assert classify_session(ny_ns(THANKSGIVING, 10), None) == "closed"


def test_raw_calendar_rows_give_their_own_extended_bounds():
    # Raw /v2/calendar rows carry "HH:MM" open/close and "HHMM" session bounds.
    s = session_from_calendar(MONDAY, "09:30", "16:00", "0700", "1800")
    assert classify_session(ny_ns(MONDAY, 6, 59, 59), s) == "closed"
    assert classify_session(ny_ns(MONDAY, 7, 0), s) == "pre"
    assert classify_session(ny_ns(MONDAY, 17, 59, 59), s) == "post"
    assert classify_session(ny_ns(MONDAY, 18, 0), s) == "closed"
    derived = session_from_calendar(MONDAY, "09:30", "16:00")
    assert derived == alpaca_row(MONDAY)
    assert (derived.pre_open_ns, derived.post_close_ns) == (ny_ns(MONDAY, 4), ny_ns(MONDAY, 20))


# ---- the rule -------------------------------------------------------------------------


def test_market_open_rule_by_phase():
    assert rule_market_open(True, phase="regular").ok
    r = rule_market_open(False, phase="pre")
    assert not r.ok and r.reason == "market is closed (pre-market session; extended-hours trading is off)"
    r = rule_market_open(False, phase="post", extended=True)
    assert r.ok and r.reason == "after-hours session: extended-hours limit order"
    r = rule_market_open(False, phase="closed", extended=True)
    assert not r.ok and r.reason == "market is closed"
    assert not rule_market_open(False, phase=None, extended=True).ok  # calendar unknown: closed


def account(equity: float = 100_000.0) -> AccountSnapshot:
    return AccountSnapshot(equity, equity, equity, 2 * equity, False, 0)


def context_at(now: int, **kw) -> RiskContext:
    """What the risk guard would know at `now`: the broker clock agrees with the calendar."""
    base = dict(
        now_ns=now,
        trading_state="ACTIVE",
        market_open=CAL.phase(now) == "regular",
        session_phase=CAL.session_phase(now),
        account=account(),
        start_of_day_equity=100_000.0,
    )
    base.update(kw)
    return RiskContext(**base)


def request_at(now: int, **kw) -> RiskRequest:
    base = dict(symbol="AAPL", side="buy", price=50.0, bid=49.99, ask=50.0, quote_recv_ns=now - S // 2)
    base.update(kw)
    return RiskRequest(**base)


EXT = RiskLimits(extended_hours=True, extended_limit_slippage_bps=50.0)
BRACKETS = BracketParams(method="percent", stop_loss_pct=2.0, take_profit_pct=4.0)


@pytest.mark.parametrize(
    "hms,allowed,extended",
    [
        ((3, 59, 59), False, False),
        ((4, 0, 0), True, True),
        ((9, 29, 59), True, True),
        ((9, 30, 0), True, False),
        ((15, 59, 59), True, False),
        ((16, 0, 0), True, True),
        ((19, 59, 59), True, True),
        ((20, 0, 0), False, False),
    ],
)
def test_rule_at_the_session_edges_with_extended_hours_on(hms, allowed, extended):
    now = ny_ns(MONDAY, *hms)
    v = evaluate(request_at(now), context_at(now), EXT, BRACKETS)
    assert v.allowed is allowed, v.failures
    assert v.extended_hours is extended
    if not allowed:
        assert v.first_failure.rule == "market_open"
        assert v.first_failure.reason == "market is closed"
    elif extended:  # a day limit, no legs
        assert v.limit_price == 50.25 and v.stop_loss is None and v.take_profit is None
    else:  # the regular session: a market bracket as always
        assert v.limit_price is None and v.stop_loss is not None and v.take_profit is not None


@pytest.mark.parametrize(
    "hms,allowed",
    [
        ((9, 29, 59), False),
        ((9, 30, 0), True),
        ((15, 59, 59), True),
        ((16, 0, 0), False),
        ((19, 59, 59), False),
    ],
)
def test_rule_at_the_session_edges_with_extended_hours_off(hms, allowed):
    now = ny_ns(MONDAY, *hms)
    v = evaluate(request_at(now), context_at(now), RiskLimits(), BRACKETS)
    assert v.allowed is allowed and not v.extended_hours
    if not allowed:
        assert v.first_failure.rule == "market_open"
        assert "extended-hours trading is off" in v.first_failure.reason


def test_early_close_after_hours_end_at_17():
    ok = evaluate(
        request_at(ny_ns(BLACK_FRIDAY, 16, 59, 59)), context_at(ny_ns(BLACK_FRIDAY, 16, 59, 59)), EXT, BRACKETS
    )
    assert ok.allowed and ok.extended_hours
    late = evaluate(request_at(ny_ns(BLACK_FRIDAY, 17)), context_at(ny_ns(BLACK_FRIDAY, 17)), EXT, BRACKETS)
    assert not late.allowed and late.first_failure.rule == "market_open"


def test_holiday_is_closed_even_with_extended_hours():
    now = ny_ns(THANKSGIVING, 8)
    v = evaluate(request_at(now), context_at(now), EXT, BRACKETS)
    assert not v.allowed and v.first_failure.reason == "market is closed"


# ---- pricing and sizing ---------------------------------------------------------------------


def test_limit_price_is_the_touch_plus_slippage_rounded_towards_the_touch():
    assert extended_limit_price("buy", 49.99, 50.0, 50.0) == 50.25
    assert extended_limit_price("sell", 50.0, 50.01, 50.0) == 49.75
    # 10 bps of 100.01 is 0.10001: the buy limit rounds down to 100.11, never past the budget
    assert extended_limit_price("buy", 100.0, 100.01, 10.0) == 100.11
    assert extended_limit_price("sell", 100.0, 100.01, 10.0) == 99.9
    assert extended_limit_price("buy", 49.99, 50.0, 0.0) == 50.0  # still marketable at 0 bps
    assert extended_limit_price("buy", 49.99, 0.0, 10.0) is None
    assert extended_limit_price("sell", 0.0, 50.0, 10.0) is None


def test_entry_is_sized_at_its_limit_not_at_the_ask():
    # max_position_pct 10 of $100k = $10,000: 200 shares at the $50.00 ask, 199 at the $50.25 limit.
    pre, regular = ny_ns(MONDAY, 8), ny_ns(MONDAY, 11)
    v = evaluate(request_at(pre), context_at(pre), EXT, BRACKETS)
    assert v.allowed and v.extended_hours and not v.reduce_only
    assert (v.limit_price, v.entry, v.qty) == (50.25, 50.25, 199)
    sizing = next(r for r in v.results if r.rule == "sizing")
    assert sizing.ok
    priced = next(r for r in v.results if r.rule == "extended_price")
    assert priced.ok and priced.reason == "limit 50.25 = ask + 50 bps"
    v = evaluate(request_at(regular), context_at(regular), EXT, BRACKETS)
    assert (v.extended_hours, v.entry, v.qty) == (False, 50.0, 200)


def test_exit_in_after_hours_is_a_sell_limit_below_the_bid():
    now = ny_ns(MONDAY, 18)
    held = (Position("AAPL", 30.0, 48.0, market_value=1500.0),)
    v = evaluate(request_at(now, side="sell"), context_at(now, positions=held), EXT, BRACKETS)
    assert v.allowed and v.reduce_only and v.extended_hours
    assert (v.qty, v.limit_price) == (30, 49.75)  # 49.99 - 50 bps = 49.74005, up to the tick: 49.75


def test_no_quote_no_extended_order():
    now = ny_ns(MONDAY, 8)
    v = evaluate(request_at(now, bid=0.0, ask=0.0), context_at(now), EXT, BRACKETS)
    assert not v.allowed
    priced = next(r for r in v.results if r.rule == "extended_price")
    assert not priced.ok and priced.reason == "no bid/ask to price an extended-hours limit order"


def test_flatten_window_refuses_after_hours_entries_but_not_pre_market():
    lim = RiskLimits(extended_hours=True, flatten_before_close_min=10.0)
    post, pre = ny_ns(MONDAY, 17), ny_ns(MONDAY, 8)
    v = evaluate(request_at(post), context_at(post), lim, BRACKETS)
    assert not v.allowed and v.first_failure.rule == "close_window"
    assert "held overnight" in v.first_failure.reason
    assert evaluate(request_at(pre), context_at(pre), lim, BRACKETS).allowed


def test_other_rules_still_apply_in_extended_hours():
    now = ny_ns(MONDAY, 8)
    wide = evaluate(request_at(now, bid=49.0, ask=50.0), context_at(now), EXT, BRACKETS)
    assert not wide.allowed and wide.first_failure.rule == "spread"
    stale = evaluate(request_at(now, quote_recv_ns=now - 60 * S), context_at(now), EXT, BRACKETS)
    assert not stale.allowed and stale.first_failure.rule == "stale_quote"
    halted = evaluate(request_at(now), context_at(now, trading_state="HALTED"), EXT, BRACKETS)
    assert not halted.allowed and halted.first_failure.rule == "trading_state"


def test_calendar_wins_over_a_clock_snapshot_that_still_says_open():
    # The reconciler polls the clock: just after 16:00 its last snapshot may still say open.
    now = ny_ns(MONDAY, 16, 0, 1)
    v = evaluate(request_at(now), context_at(now, market_open=True), EXT, BRACKETS)
    assert v.allowed and v.extended_hours and v.stop_loss is None
    # An unknown phase (no calendar) leaves the clock in charge.
    v = evaluate(request_at(now), context_at(now, market_open=True, session_phase=None), EXT, BRACKETS)
    assert v.allowed and not v.extended_hours and v.stop_loss is not None
