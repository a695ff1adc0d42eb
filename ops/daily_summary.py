"""The daily summary alert: when to send it, what goes in it, and the text.

`next_summary_ns` and `summary_text` are pure; `gather` reads the store once
(a day's orders and fills, the latest equity snapshot, the day's alert counts).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import msgspec

from stockade.codecs.records import AlertCounts, EquitySnapshot
from stockade.storage.alert_counts import period_of
from stockade.storage.store import Store
from stockade.venue.clock import NEW_YORK, is_nyse_trading_day

KEY = "daily-summary"


class DaySummary(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the summary says about one exchange day."""

    date: str  # YYYY-MM-DD, America/New_York
    equity: float | None = None
    day_pl: float | None = None  # equity minus the previous close (Alpaca's last_equity)
    orders: int = 0  # entry orders created today (bracket legs not counted)
    rejected: int = 0
    fills: int = 0
    filled_shares: int = 0
    alerts: int = 0
    alerts_by_level: dict[str, int] = {}


def next_summary_ns(now_ns: int, hhmm: str, is_trading_day: Callable[[dt.date], bool] = is_nyse_trading_day) -> int:
    """The first `hhmm` (America/New_York) strictly after `now_ns` on a trading day."""
    hour, minute = (int(part) for part in hhmm.split(":"))
    now = dt.datetime.fromtimestamp(now_ns / 1e9, tz=NEW_YORK)
    day = now.date()
    for _ in range(30):  # the longest run of closed days is far shorter
        # Built from wall-clock fields in the zone: a DST change moves UTC, not the local time.
        at = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=NEW_YORK)
        at_ns = int(at.timestamp()) * 1_000_000_000
        if at_ns > now_ns and is_trading_day(day):
            return at_ns
        day += dt.timedelta(days=1)
    raise ValueError(f"no trading day within 30 days of {now.isoformat()}")


def day_start_ns(now_ns: int) -> int:
    """Midnight America/New_York of the exchange day containing `now_ns`."""
    day = dt.datetime.fromtimestamp(now_ns / 1e9, tz=NEW_YORK).date()
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=NEW_YORK).timestamp()) * 1_000_000_000


def gather(store: Store, now_ns: int) -> DaySummary:
    """Read the day's figures from `store` in one snapshot."""
    start = day_start_ns(now_ns)
    with store.read() as txn:
        latest = store.equity.latest(1, txn=txn)
        orders = [o for o in store.orders.values(txn=txn) if o.created_ns >= start and o.parent_id is None]
        fills = [f for f in store.fills.values(txn=txn) if f.ts_ns >= start]
        counts = store.alert_counts.get(period_of(now_ns), txn=txn)
    return summarize(
        date=dt.datetime.fromtimestamp(now_ns / 1e9, tz=NEW_YORK).date().isoformat(),
        equity=latest[0] if latest else None,
        orders=len(orders),
        rejected=sum(1 for o in orders if o.state == "rejected"),
        fill_qtys=[f.qty for f in fills],
        counts=counts,
    )


def summarize(
    *,
    date: str,
    equity: EquitySnapshot | None,
    orders: int,
    rejected: int,
    fill_qtys: list[int],
    counts: AlertCounts | None,
) -> DaySummary:
    """The summary from already-read figures (pure)."""
    day_pl = None
    if equity is not None and equity.last_equity > 0:
        day_pl = equity.equity - equity.last_equity
    return DaySummary(
        date=date,
        equity=equity.equity if equity is not None else None,
        day_pl=day_pl,
        orders=orders,
        rejected=rejected,
        fills=len(fill_qtys),
        filled_shares=sum(abs(q) for q in fill_qtys),
        alerts=counts.total if counts else 0,
        alerts_by_level=dict(counts.by_level) if counts else {},
    )


def summary_text(s: DaySummary) -> str:
    """One line for chat and e-mail."""
    equity = f"equity ${s.equity:,.2f}" if s.equity is not None else "equity unknown"
    if s.day_pl is not None:
        base = (s.equity or 0.0) - s.day_pl
        pct = f" ({s.day_pl / base * 100:+.2f}%)" if base else ""
        pl = f"day P&L {'+' if s.day_pl >= 0 else '-'}${abs(s.day_pl):,.2f}{pct}"
    else:
        pl = "day P&L unknown"
    levels = ", ".join(
        f"{lvl} {s.alerts_by_level[lvl]}"
        for lvl in ("EMERGENCY", "CRITICAL", "WARNING", "INFO")
        if s.alerts_by_level.get(lvl)
    )
    alerts = f"alerts {s.alerts}" + (f" ({levels})" if levels else "")
    return (
        f"{s.date}: {equity}, {pl}; orders {s.orders} ({s.rejected} rejected), "
        f"fills {s.fills} ({s.filled_shares} shares); {alerts}"
    )
