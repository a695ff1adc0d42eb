"""What `ctl alerts` shows: recent history (filtered), stored counts, delivery counters.

Counts come from the counters record kept on every write (`Store.add_alert`),
so the cost does not grow with the history; the filtered history walk is
bounded by `MAX_SCAN` records.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from stockade.ops.alerts.policy import LEVEL_RANK
from stockade.storage.alert_counts import kind_of, period_of
from stockade.storage.store import Store

MAX_LIMIT = 1000
MAX_SCAN = 20_000  # history records looked at per request, at most


def recent(store: Store, limit: int, *, min_level: str = "INFO", kind: str = "") -> tuple[list[dict[str, Any]], bool]:
    """The newest `limit` alerts at `min_level` or above (and of `kind`), newest first.

    The bool says whether the scan stopped at MAX_SCAN before finding `limit`.
    """
    rank = LEVEL_RANK[min_level]
    found: list[dict[str, Any]] = []
    scanned = 0
    for _, record in store.alerts.items(reverse=True, limit=MAX_SCAN):
        scanned += 1
        if LEVEL_RANK.get(record.level, 0) >= rank and (not kind or kind_of(record.key) == kind):
            found.append(msgspec.to_builtins(record))
            if len(found) >= limit:
                return found, False
    return found, scanned >= MAX_SCAN


def counts(store: Store, now_ns: int | None = None) -> dict[str, Any]:
    """Stored counts: since the data dir was created, and today (exchange date, New York)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    today = period_of(now_ns)
    with store.read() as txn:
        total = store.alert_counts.get("all", txn=txn)
        day = store.alert_counts.get(today, txn=txn)

    def shape(c: Any) -> dict[str, Any]:
        if c is None:
            return {"total": 0, "by_level": {}, "by_kind": {}}
        by_kind = dict(sorted(c.by_kind.items(), key=lambda kv: (-kv[1], kv[0])))
        return {
            "total": c.total,
            "by_level": c.by_level,
            "by_kind": by_kind,
            "since_ns": c.first_ns,
            "last_ns": c.last_ns,
        }

    return {"all": shape(total), "today": {"date": today, **shape(day)}}


def report(
    store: Store, delivery: dict[str, Any] | None, *, limit: int = 20, min_level: str = "INFO", kind: str = ""
) -> dict[str, Any]:
    """The `alerts` command's reply."""
    if min_level not in LEVEL_RANK:
        raise ValueError(f"level must be one of {', '.join(LEVEL_RANK)}, got {min_level!r}")
    alerts, truncated = recent(store, min(limit, MAX_LIMIT), min_level=min_level, kind=kind)
    out: dict[str, Any] = {"alerts": alerts, "counts": counts(store), "delivery": delivery or {}}
    if truncated:
        out["scan_truncated"] = MAX_SCAN
    return out
