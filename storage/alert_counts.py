"""Pure helpers for the alert counts record (`codecs.records.AlertCounts`)."""

from __future__ import annotations

from stockade.codecs.exchange_dates import exchange_date
from stockade.codecs.records import AlertCounts, AlertRecord

# Kinds are a small fixed set by convention (HACKING.md); a sender that puts
# ids in the kind must not grow the record without bound.
MAX_KINDS = 200
OTHER_KIND = "(other)"


def kind_of(key: str) -> str:
    """The alert type: the key up to its first ":" (`order-rejected:AAPL` -> `order-rejected`)."""
    return key.partition(":")[0] or key


def period_of(ts_ns: int) -> str:
    """The exchange (New York) date, YYYY-MM-DD, an alert is counted under: the
    same day as the daily counters and the daily summary."""
    return exchange_date(ts_ns)


def bump(counts: AlertCounts | None, period: str, alert: AlertRecord) -> AlertCounts:
    """`counts` with `alert` added (a new record when None)."""
    if counts is None:
        counts = AlertCounts(period=period, first_ns=alert.ts_ns)
    by_level = dict(counts.by_level)
    by_level[alert.level] = by_level.get(alert.level, 0) + 1
    by_kind = dict(counts.by_kind)
    kind = kind_of(alert.key)
    if kind not in by_kind and len(by_kind) >= MAX_KINDS:
        kind = OTHER_KIND
    by_kind[kind] = by_kind.get(kind, 0) + 1
    return AlertCounts(
        period=period,
        total=counts.total + 1,
        by_level=by_level,
        by_kind=by_kind,
        first_ns=counts.first_ns or alert.ts_ns,
        last_ns=max(counts.last_ns, alert.ts_ns),
    )
