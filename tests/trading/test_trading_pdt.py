"""The optional day-trade budget (the pattern-day-trader rule is gone): the
window of sessions across a holiday, the count from our own fills, and the
rule at its thresholds."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from stockade.trading.market_hours import NEW_YORK, Calendar, exchange_date, exchange_day, session_from_calendar
from stockade.trading.pdt import DayTradeCounter, DayTradeStatus
from stockade.trading.risk_rules import RiskLimits, rule_day_trade_budget

LIM = RiskLimits(day_trade_budget=3)  # the budget is off by default
THANKSGIVING = date(2026, 11, 26)  # NYSE closed; Friday the 27th closes at 13:00


def broker_calendar(start: date, end: date) -> Calendar:
    """What /v2/calendar answers for late 2026: weekdays but Thanksgiving, an early close after it."""
    rows = []
    d = start
    while d <= end:
        if d.weekday() < 5 and d != THANKSGIVING:
            close = time(13, 0) if d == date(2026, 11, 27) else time(16, 0)
            # alpaca-py hands naive New York datetimes
            rows.append(session_from_calendar(d, datetime.combine(d, time(9, 30)), datetime.combine(d, close)))
        d += timedelta(days=1)
    return Calendar(rows)


CAL = broker_calendar(date(2026, 11, 16), date(2026, 12, 11))


def ny_ns(d: date, hh: int, mm: int = 0) -> int:
    return int(datetime.combine(d, time(hh, mm), tzinfo=NEW_YORK).timestamp()) * 1_000_000_000


# ---- exchange day and sessions ----------------------------------------------------------------


def test_exchange_day_is_new_york_not_utc():
    # 20:30 New York on Nov 25 is 01:30 UTC on Nov 26: still the 25th on the exchange
    late = ny_ns(date(2026, 11, 25), 20, 30)
    assert exchange_date(late) == "2026-11-25"
    assert datetime.fromtimestamp(late / 1e9, UTC).date() == date(2026, 11, 26)


def test_sessions_and_minutes_to_close_with_the_early_close():
    friday = date(2026, 11, 27)
    assert CAL.phase(ny_ns(friday, 12, 50)) == "regular"
    assert CAL.minutes_to_close(ny_ns(friday, 12, 50)) == pytest.approx(10.0)
    assert CAL.phase(ny_ns(friday, 13, 0)) == "closed"  # early close
    assert CAL.phase(ny_ns(THANKSGIVING, 11, 0)) == "closed"  # holiday
    assert CAL.minutes_to_close(ny_ns(THANKSGIVING, 11, 0)) is None
    assert CAL.phase(ny_ns(date(2026, 11, 30), 9, 29)) == "closed"


def window(cal: Calendar, day: date, n: int = 5) -> tuple[date, ...]:
    return cal.recent_sessions(day, n)


def test_the_window_skips_the_holiday_and_the_weekend():
    assert window(CAL, date(2026, 12, 2)) == (
        date(2026, 12, 2),
        date(2026, 12, 1),
        date(2026, 11, 30),
        date(2026, 11, 27),
        date(2026, 11, 25),
    )
    # on a weekend day the window is the five sessions before it
    assert window(CAL, date(2026, 11, 29))[0] == date(2026, 11, 27)
    assert window(CAL, date(2026, 12, 2), 2) == (date(2026, 12, 2), date(2026, 12, 1))


def test_the_window_without_a_calendar_counts_weekdays():
    assert window(Calendar(()), date(2026, 12, 2)) == (
        date(2026, 12, 2),
        date(2026, 12, 1),
        date(2026, 11, 30),
        date(2026, 11, 27),
        THANKSGIVING,
    )


# ---- counting day trades from fills --------------------------------------------------------


def test_open_and_close_the_same_day_is_one_day_trade_per_closing_order():
    c = DayTradeCounter()
    d = date(2026, 11, 25)
    c.opening_fill("AAPL", 10, d)
    assert c.opened_today(d) == frozenset({"AAPL"})
    assert c.closing_fill("AAPL", 4, d, "sell-1")  # partial close
    assert c.closing_fill("AAPL", 6, d, "sell-1")  # same order, second fill: not a second day trade
    assert c.count([d]) == 1
    assert c.opened_today(d) == frozenset()


def test_closing_yesterdays_position_is_not_a_day_trade():
    c = DayTradeCounter()
    c.opening_fill("AAPL", 10, date(2026, 11, 24))
    assert not c.closing_fill("AAPL", 10, date(2026, 11, 25), "sell-1")
    assert c.count([date(2026, 11, 25), date(2026, 11, 24)]) == 0


def test_two_round_trips_in_one_symbol_are_two_day_trades():
    c = DayTradeCounter()
    d = date(2026, 11, 25)
    for n in range(2):
        c.opening_fill("AAPL", 5, d)
        assert c.closing_fill("AAPL", 5, d, f"sell-{n}")
    assert c.count([d]) == 2


def test_four_day_trades_across_the_holiday_window():
    """Day trades on Tue Nov 24, Wed Nov 25, Fri Nov 27 (early close), Tue Dec 1, budget 3 in 5 sessions.

    On Wed Dec 2 the window is Dec 2, Dec 1, Nov 30, Nov 27, Nov 25 (Thanksgiving
    and the weekend are not sessions): three count, so a fourth is blocked.
    On Thu Dec 3 Nov 25 has left the window: two count, and trading may go on.
    """
    c = DayTradeCounter()
    for i, d in enumerate((date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 27), date(2026, 12, 1))):
        c.opening_fill("AAPL", 1, d)
        c.closing_fill("AAPL", 1, d, f"o{i}")
    dec2, dec3 = date(2026, 12, 2), date(2026, 12, 3)
    assert c.count(window(CAL, dec2)) == 3
    assert not rule_day_trade_budget(20_000.0, c.status(dec2, window(CAL, dec2)), False, "MSFT", LIM).ok
    assert c.count(window(CAL, dec3)) == 2
    assert rule_day_trade_budget(20_000.0, c.status(dec3, window(CAL, dec3)), False, "MSFT", LIM).ok
    # Counting weekdays instead of sessions would have dropped Nov 25 a day early
    assert c.count(window(Calendar(()), dec2)) == 2


def test_prune_forgets_days_out_of_the_window():
    c = DayTradeCounter({date(2026, 11, 16): 2, date(2026, 12, 1): 1})
    c.prune(window(CAL, date(2026, 12, 2)))
    assert c.day_trades == {date(2026, 12, 1): 1}


# ---- the rule at its thresholds ---------------------------------------------------------------


def test_off_by_default_at_any_count_and_equity():
    for equity in (1_000.0, 24_999.99, 1e6):
        r = rule_day_trade_budget(equity, DayTradeStatus(99, frozenset({"AAPL"})), False, "MSFT", RiskLimits())
        assert r.ok and r.reason == "no day-trade budget set"


@pytest.mark.parametrize("equity, applies", [(24_999.99, True), (25_000.0, False), (25_000.01, False)])
def test_the_optional_equity_bound(equity, applies):
    lim = RiskLimits(day_trade_budget=3, day_trade_budget_below_equity=25_000.0)
    assert rule_day_trade_budget(equity, DayTradeStatus(3, frozenset()), False, "AAPL", lim).ok is not applies
    # without a bound the budget applies at any equity
    assert not rule_day_trade_budget(equity, DayTradeStatus(3, frozenset()), False, "AAPL", LIM).ok


@pytest.mark.parametrize(
    "count, opened, ok",
    [
        (2, frozenset(), True),  # this entry could become day trade 3: allowed
        (2, frozenset({"MSFT"}), False),  # MSFT's exits could be the 3rd, this one's the 4th
        (1, frozenset({"MSFT"}), True),
        (3, frozenset(), False),
        (2, frozenset({"AAPL"}), True),  # adding to AAPL: it is one potential day trade already
    ],
)
def test_a_new_entry_counts_potential_day_trades(count, opened, ok):
    assert rule_day_trade_budget(20_000.0, DayTradeStatus(count, opened), False, "AAPL", LIM).ok is ok


@pytest.mark.parametrize("count", [2, 3, 7])
def test_an_exit_is_never_held_back(count):
    """Closing a position opened today goes even past the budget: the budget is a speed bump,
    not a reason to keep risk on (and each entry reserved its day trade anyway)."""
    r = rule_day_trade_budget(20_000.0, DayTradeStatus(count, frozenset({"AAPL"})), True, "AAPL", LIM)
    assert r.ok and r.reason == "exits are never held back by the day-trade budget"


def test_exchange_day_of_a_fill_after_hours():
    # A fill at 19:30 New York (00:30 UTC next day) belongs to the same exchange day as the open
    assert exchange_day(ny_ns(date(2026, 11, 24), 19, 30)) == date(2026, 11, 24)
