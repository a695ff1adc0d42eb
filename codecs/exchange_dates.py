"""The exchange date: the New York calendar date a wall-clock instant falls on.

The key of the daily records (the risk guard's day counters, the alert
counts), so it is defined with the records; the trading calendar
(`trading/market_hours.py`) builds on it.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
NS_PER_S = 1_000_000_000


def exchange_day(ts_ns: int) -> date:
    """The New York calendar date of a wall-clock instant."""
    return datetime.fromtimestamp(ts_ns / NS_PER_S, tz=NEW_YORK).date()


def exchange_date(ts_ns: int) -> str:
    """`exchange_day` as YYYY-MM-DD (the key of the daily counters)."""
    return exchange_day(ts_ns).isoformat()
