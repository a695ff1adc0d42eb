"""The venue's market clock: NYSE regular sessions, or a market that never closes.

`nyse` computes the exchange calendar itself (weekends, the ten NYSE holidays
with their weekend-observance rules, the 13:00 early closes and the special
closures that really happened), so the venue's `/v2/clock` and `/v2/calendar`
agree with Alpaca's for any year without a data file. `always_open` is the
default for the embedded venue: a daemon started at night still sees a market.
Its `/v2/clock` describes a rolling session: the close is always
ALWAYS_OPEN_CLOSE_AHEAD_NS away (from the next whole minute) and the next open
ALWAYS_OPEN_REOPEN_NS after that close, so `next_open` follows `next_close`
as on a real exchange, a bot sees hours (not a day) to the close, and the
close never arrives because it rolls forward with the time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import msgspec

NEW_YORK = ZoneInfo("America/New_York")
NS_PER_S = 1_000_000_000
REGULAR_OPEN = dtime(9, 30)
REGULAR_CLOSE = dtime(16, 0)
EARLY_CLOSE = dtime(13, 0)

# Closures outside the rules (presidential funerals, storms, 9/11). Alpaca's
# calendar has them, so ours does too.
SPECIAL_CLOSURES = frozenset(
    {
        date(2001, 9, 11),
        date(2001, 9, 12),
        date(2001, 9, 13),
        date(2001, 9, 14),
        date(2004, 6, 11),  # Reagan
        date(2007, 1, 2),  # Ford
        date(2012, 10, 29),
        date(2012, 10, 30),  # Hurricane Sandy
        date(2018, 12, 5),  # G. H. W. Bush
        date(2025, 1, 9),  # Carter
    }
)

ClockMode = Literal["always_open", "nyse"]
ALWAYS_OPEN_CLOSE_AHEAD_NS = 8 * 3600 * NS_PER_S  # always_open: the close is this far ahead
ALWAYS_OPEN_REOPEN_NS = 60 * NS_PER_S  # always_open: the next open follows the close by this


class TradingDay(msgspec.Struct, frozen=True):
    """One session of the calendar; `open`/`close` are aware New York datetimes."""

    date: date
    open: datetime
    close: datetime

    @property
    def early_close(self) -> bool:
        return self.close.time() < REGULAR_CLOSE and self.open.time() == REGULAR_OPEN


# ---- the NYSE rules ------------------------------------------------------------


def _easter(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7  # the algorithm's own name
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th `weekday` (Mon=0) of a month; n=-1 is the last one."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: date) -> date:
    """Saturday holidays are observed on Friday, Sunday ones on Monday."""
    if day.weekday() == 5:
        return day - timedelta(days=1)
    if day.weekday() == 6:
        return day + timedelta(days=1)
    return day


@lru_cache(maxsize=256)
def nyse_holidays(year: int) -> frozenset[date]:
    """Full-day NYSE closures that fall in `year` (rules plus special closures)."""
    days = set()
    new_year = date(year, 1, 1)
    # NYSE does not move a Saturday New Year's Day back into the old year.
    if new_year.weekday() != 5:
        days.add(_observed(new_year))
    if year >= 1998:
        days.add(_nth_weekday(year, 1, 0, 3))  # Martin Luther King Jr. Day
    days.add(_nth_weekday(year, 2, 0, 3))  # Washington's Birthday
    days.add(_easter(year) - timedelta(days=2))  # Good Friday
    days.add(_nth_weekday(year, 5, 0, -1))  # Memorial Day
    if year >= 2022:
        days.add(_observed(date(year, 6, 19)))  # Juneteenth
    days.add(_observed(date(year, 7, 4)))
    days.add(_nth_weekday(year, 9, 0, 1))  # Labor Day
    days.add(_nth_weekday(year, 11, 3, 4))  # Thanksgiving
    days.add(_observed(date(year, 12, 25)))
    days.update(d for d in SPECIAL_CLOSURES if d.year == year)
    return frozenset(d for d in days if d.year == year)


@lru_cache(maxsize=256)
def nyse_early_closes(year: int) -> frozenset[date]:
    """Days the NYSE closes at 13:00 New York time."""
    days = {_nth_weekday(year, 11, 3, 4) + timedelta(days=1)}  # day after Thanksgiving
    july3 = date(year, 7, 3)
    if july3.weekday() <= 3:  # Mon-Thu: Independence Day is the next weekday
        days.add(july3)
    christmas_eve = date(year, 12, 24)
    if christmas_eve.weekday() <= 3:  # Fri would be the observed Christmas holiday
        days.add(christmas_eve)
    return frozenset(d for d in days if is_nyse_trading_day(d))


def is_nyse_trading_day(day: date) -> bool:
    return day.weekday() < 5 and day not in nyse_holidays(day.year)


# Settlement needs the banks too: Columbus Day and Veterans Day are bank
# holidays on which the NYSE trades.
@lru_cache(maxsize=256)
def _bank_holidays(year: int) -> frozenset[date]:
    return frozenset({_nth_weekday(year, 10, 0, 2), _observed(date(year, 11, 11))})


def settlement_date(trade_day: date) -> date:
    """T+1 (T+2 before the US moved on 2024-05-28): business days that are NYSE and bank days."""
    cycle = 1 if trade_day >= date(2024, 5, 28) else 2
    day = trade_day
    while cycle:
        day += timedelta(days=1)
        if is_nyse_trading_day(day) and day not in _bank_holidays(day.year):
            cycle -= 1
    return day


# ---- the clock -----------------------------------------------------------------


def _at(day: date, at: dtime) -> datetime:
    return datetime.combine(day, at, tzinfo=NEW_YORK)


def _to_ns(moment: datetime) -> int:
    return int(moment.timestamp()) * NS_PER_S


def ns_to_new_york(ts_ns: int) -> datetime:
    """Aware New York datetime of an epoch-ns instant (microsecond precision)."""
    return datetime.fromtimestamp(ts_ns / NS_PER_S, tz=UTC).astimezone(NEW_YORK)


class MarketClock:
    """When the market is open, per `mode`; `now_fn` is injectable for tests."""

    def __init__(self, mode: ClockMode = "always_open", now_fn: Callable[[], int] = time.time_ns) -> None:
        if mode not in ("always_open", "nyse"):
            raise ValueError(f"unknown clock mode {mode!r}")
        self.mode = mode
        self._now_fn = now_fn

    def now_ns(self) -> int:
        return self._now_fn()

    def session(self, day: date) -> TradingDay | None:
        """The session on `day`, or None when the market does not open that day."""
        if self.mode == "always_open":
            # A whole New York day; Alpaca's calendar speaks HH:MM, so it ends 23:59.
            return TradingDay(day, _at(day, dtime(0, 0)), _at(day + timedelta(days=1), dtime(0, 0)))
        if not is_nyse_trading_day(day):
            return None
        close = EARLY_CLOSE if day in nyse_early_closes(day.year) else REGULAR_CLOSE
        return TradingDay(day, _at(day, REGULAR_OPEN), _at(day, close))

    def is_open(self, ts_ns: int | None = None) -> bool:
        if self.mode == "always_open":
            return True
        ts_ns = self.now_ns() if ts_ns is None else ts_ns
        session = self.session(ns_to_new_york(ts_ns).date())
        return session is not None and _to_ns(session.open) <= ts_ns < _to_ns(session.close)

    def next_open(self, ts_ns: int | None = None) -> int:
        """Epoch ns of the first session open strictly after `ts_ns` (default now)."""
        ts_ns = self.now_ns() if ts_ns is None else ts_ns
        if self.mode == "always_open":
            return self.next_close(ts_ns) + ALWAYS_OPEN_REOPEN_NS  # reopens right after the rolling close
        for session in self._sessions_from(ns_to_new_york(ts_ns).date()):
            if _to_ns(session.open) > ts_ns:
                return _to_ns(session.open)
        raise AssertionError("unreachable: sessions never run out")

    def next_close(self, ts_ns: int | None = None) -> int:
        """Epoch ns of the first session close strictly after `ts_ns` (default now)."""
        ts_ns = self.now_ns() if ts_ns is None else ts_ns
        if self.mode == "always_open":
            # Hours away and rolling with the time (stable within a minute), so
            # "minutes to the close" logic sees a session, never an imminent close.
            return (ts_ns // (60 * NS_PER_S) + 1) * 60 * NS_PER_S + ALWAYS_OPEN_CLOSE_AHEAD_NS
        for session in self._sessions_from(ns_to_new_york(ts_ns).date()):
            if _to_ns(session.close) > ts_ns:
                return _to_ns(session.close)
        raise AssertionError("unreachable: sessions never run out")

    def calendar(self, start_date: date, end_date: date) -> list[TradingDay]:
        """Every session from `start_date` to `end_date`, both inclusive."""
        days = []
        day = start_date
        while day <= end_date:
            session = self.session(day)
            if session is not None:
                days.append(session)
            day += timedelta(days=1)
        return days

    def _sessions_from(self, day: date):
        while True:
            session = self.session(day)
            if session is not None:
                yield session
            day += timedelta(days=1)
