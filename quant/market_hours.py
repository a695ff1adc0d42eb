"""The exchange's day and sessions, from the broker's calendar (pure).

US equities live on New York time: a trading day, the PDT window and the
daily counters all change at New York midnight, not UTC midnight (which
falls at 19:00 or 20:00 New York, mid after-hours session). Sessions come
from the broker's `/v2/calendar`, so holidays and early closes are the
broker's, not a table of ours.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Iterable, Literal
from zoneinfo import ZoneInfo

import msgspec

NEW_YORK = ZoneInfo("America/New_York")
NS_PER_S = 1_000_000_000
PDT_WINDOW_DAYS = 5

Phase = Literal["regular", "closed"]


def exchange_day(ts_ns: int) -> date:
    """The New York calendar date of a wall-clock instant."""
    return datetime.fromtimestamp(ts_ns / NS_PER_S, tz=NEW_YORK).date()


def exchange_date(ts_ns: int) -> str:
    """`exchange_day` as YYYY-MM-DD (the key of the daily counters)."""
    return exchange_day(ts_ns).isoformat()


class Session(msgspec.Struct, frozen=True):
    """One trading day of the broker's calendar; open/close in epoch ns."""

    day: date
    open_ns: int
    close_ns: int


def session_from_calendar(day: date, open_t: object, close_t: object) -> Session:
    """A Session from a calendar row: `open_t`/`close_t` are New York datetimes or times."""

    def ns(t: object) -> int:
        if isinstance(t, datetime):
            moment = t if t.tzinfo else t.replace(tzinfo=NEW_YORK)
        else:  # a time of day
            moment = datetime.combine(day, t, tzinfo=NEW_YORK)  # type: ignore[arg-type]
        return int(moment.timestamp()) * NS_PER_S

    return Session(day, ns(open_t), ns(close_t))


class Calendar:
    """The broker's sessions around today; answers what the rules ask of it."""

    def __init__(self, sessions: Iterable[Session]) -> None:
        self.sessions = {s.day: s for s in sessions}

    def __bool__(self) -> bool:
        return bool(self.sessions)

    def session(self, day: date) -> Session | None:
        return self.sessions.get(day)

    def phase(self, now_ns: int) -> Phase:
        s = self.session(exchange_day(now_ns))
        return "regular" if s and s.open_ns <= now_ns < s.close_ns else "closed"

    def minutes_to_close(self, now_ns: int) -> float | None:
        """Minutes until today's close while the session is open, else None."""
        s = self.session(exchange_day(now_ns))
        if s is None or not s.open_ns <= now_ns < s.close_ns:
            return None
        return (s.close_ns - now_ns) / NS_PER_S / 60.0

    def pdt_window(self, today: date, n: int = PDT_WINDOW_DAYS) -> tuple[date, ...]:
        """`today` (if a session) and the sessions before it, `n` in all.

        Without calendar rows that far back, weekdays stand in for sessions
        (the broker's own count still catches a trade this forgets).
        """
        days: list[date] = []
        d = today
        known_from = min(self.sessions) if self.sessions else today + timedelta(days=1)
        for _ in range(4 * n + 10):  # bounded even on a calendar with a long gap
            if len(days) >= n:
                break
            if d >= known_from:
                if d in self.sessions:
                    days.append(d)
            elif d.weekday() < 5:
                days.append(d)
            d -= timedelta(days=1)
        return tuple(days)
