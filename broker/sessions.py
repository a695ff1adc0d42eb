"""The broker's trading sessions (`/v2/calendar`) as a `Calendar`: holidays and early closes are the broker's."""

from __future__ import annotations

from datetime import date
from typing import Any

from stockade.trading.market_hours import Calendar, session_from_calendar


def broker_calendar(client: Any, start: date, end: date) -> Calendar:
    """The sessions from `start` to `end` (both included) by an alpaca-py trading client."""
    from alpaca.trading.requests import GetCalendarRequest

    rows = client.get_calendar(GetCalendarRequest(start=start, end=end))
    return Calendar(session_from_calendar(r.date, r.open, r.close) for r in rows)
