"""The exchange's day and sessions, from the broker's calendar (pure).

US equities live on New York time: a trading day, the day-trade window and
the daily counters all change at New York midnight, not UTC midnight (which
falls at 19:00 or 20:00 New York, mid after-hours session). Sessions come
from the broker's `/v2/calendar`, so holidays and early closes are the
broker's, not a table of ours.

Extended hours (Alpaca): pre-market 04:00-09:30 and after-hours 16:00-20:00
New York time; on an early-close day the after-hours session ends at 17:00
(four hours after the 13:00 close). alpaca-py's `Calendar` model drops the
`session_open`/`session_close` fields of `/v2/calendar`, so the extended
bounds are derived from the regular close by that published rule unless a
caller passes the broker's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Literal

import msgspec

# Defined with the records they key; re-exported (`x as x`) for the calendar's users.
from stockade.codecs.exchange_dates import NEW_YORK as NEW_YORK
from stockade.codecs.exchange_dates import NS_PER_S as NS_PER_S
from stockade.codecs.exchange_dates import exchange_date as exchange_date
from stockade.codecs.exchange_dates import exchange_day as exchange_day

Phase = Literal["regular", "closed"]
SessionPhase = Literal["regular", "pre", "post", "closed"]
PRE_MARKET_OPEN = time(4, 0)
POST_MARKET_CLOSE = time(20, 0)
EARLY_POST_MARKET_CLOSE = time(17, 0)  # Alpaca: half days trade 04:00-17:00
REGULAR_CLOSE = time(16, 0)


class Session(msgspec.Struct, frozen=True):
    """One trading day of the broker's calendar; open/close in epoch ns.

    `pre_open_ns`/`post_close_ns` bound the extended sessions (0: not known,
    then the day has no extended session for `classify_session`).
    """

    day: date
    open_ns: int
    close_ns: int
    pre_open_ns: int = 0
    post_close_ns: int = 0


def _hhmm(t: object) -> object:
    """Alpaca's "0400"/"04:00" calendar strings as a time; anything else unchanged."""
    if isinstance(t, str):
        digits = t.replace(":", "")
        return time(int(digits[:2]), int(digits[2:4]))
    return t


def session_from_calendar(
    day: date, open_t: object, close_t: object, session_open: object = None, session_close: object = None
) -> Session:
    """A Session from a calendar row: `open_t`/`close_t` are New York datetimes or times.

    `session_open`/`session_close` are the row's extended bounds when the
    caller has them (raw `/v2/calendar`: "0400"/"2000"); without them the
    pre-market opens at 04:00 and the after-hours session ends at 20:00, or
    at 17:00 after an early (before 16:00) close, as Alpaca publishes.
    """

    def ns(t: object) -> int:
        t = _hhmm(t)
        if isinstance(t, datetime):
            moment = t if t.tzinfo else t.replace(tzinfo=NEW_YORK)
        elif isinstance(t, time):
            moment = datetime.combine(day, t, tzinfo=NEW_YORK)
        else:
            raise TypeError(f"a calendar time must be a datetime, a time or HHMM, got {t!r}")
        return int(moment.timestamp()) * NS_PER_S

    open_ns, close_ns = ns(open_t), ns(close_t)
    if session_close is None:
        early = datetime.fromtimestamp(close_ns / NS_PER_S, tz=NEW_YORK).time() < REGULAR_CLOSE
        session_close = EARLY_POST_MARKET_CLOSE if early else POST_MARKET_CLOSE
    pre = ns(session_open if session_open is not None else PRE_MARKET_OPEN)
    return Session(day, open_ns, close_ns, min(pre, open_ns), max(ns(session_close), close_ns))


def classify_session(now_ns: int, session: Session | None) -> SessionPhase:
    """Where `now_ns` falls in a day's session (None: no session that day, e.g. a holiday).

    Half-open intervals, as the broker's clock: 09:30:00 is regular, 16:00:00
    is post-market, 20:00:00 is closed.
    """
    if session is None:
        return "closed"
    if session.open_ns <= now_ns < session.close_ns:
        return "regular"
    if session.pre_open_ns and session.pre_open_ns <= now_ns < session.open_ns:
        return "pre"
    if session.post_close_ns and session.close_ns <= now_ns < session.post_close_ns:
        return "post"
    return "closed"


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

    def session_phase(self, now_ns: int) -> SessionPhase:
        """regular / pre / post / closed, extended sessions included (see `classify_session`)."""
        return classify_session(now_ns, self.session(exchange_day(now_ns)))

    def minutes_to_close(self, now_ns: int) -> float | None:
        """Minutes until today's close while the session is open, else None."""
        s = self.session(exchange_day(now_ns))
        if s is None or not s.open_ns <= now_ns < s.close_ns:
            return None
        return (s.close_ns - now_ns) / NS_PER_S / 60.0

    def recent_sessions(self, today: date, n: int) -> tuple[date, ...]:
        """`today` (if a session) and the sessions before it, `n` in all (the day-trade window).

        Without calendar rows that far back, weekdays stand in for sessions
        (a holiday then counts as a day of the window).
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
