"""Alert benchmark: what raising an alert costs the alerter, and what `ctl alerts` costs.

- store: `Store.add_alert` (history append + counts update, one unsynced
  transaction), per alert;
- policy: `AlertPolicy.decide` per alert over many keys;
- submit: `DeliveryWorker.submit` while the channel hangs (the actor's cost
  with a dead webhook), per alert;
- counts: `alert_report.counts` with `n` alerts stored, to show it does not
  grow with the history.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

from stockade.codecs.messages import AlertLevel
from stockade.codecs.records import AlertRecord
from stockade.ops.alerts import report as alert_report
from stockade.ops.alerts.channels import Channel
from stockade.ops.alerts.delivery import DeliveryWorker
from stockade.ops.alerts.policy import AlertPolicy
from stockade.storage.store import Store
from stockade.trading.stats import percentiles

LEVELS: tuple[AlertLevel, ...] = ("INFO", "WARNING", "CRITICAL")


class _Hanging(Channel):
    """A channel whose every send blocks until released (a webhook that never answers)."""

    name = "hanging"

    def __init__(self) -> None:
        super().__init__("INFO")
        self.release = threading.Event()

    def send(self, alert: object, suppressed: int = 0) -> None:
        self.release.wait(30)


def bench_alerts(n: int = 20_000, data_dir: str | os.PathLike[str] | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="stockade-bench-", dir=data_dir) as tmp:
        store = Store.open(tmp)
        try:
            t0 = time.time_ns()
            records = [
                AlertRecord(
                    level=LEVELS[i % 3],
                    key=f"kind{i % 12}:{i % 500}",
                    text="benchmark alert text",
                    source="bench",
                    ts_ns=t0 + i,
                )
                for i in range(n)
            ]
            store_us = []
            for record in records:
                t = time.perf_counter_ns()
                store.add_alert(record)
                store_us.append((time.perf_counter_ns() - t) / 1000.0)

            counts_us = []
            for _ in range(200):
                t = time.perf_counter_ns()
                alert_report.counts(store, now_ns=t0)
                counts_us.append((time.perf_counter_ns() - t) / 1000.0)
            t = time.perf_counter_ns()
            alert_report.report(store, None, limit=20, min_level="CRITICAL")
            report_us = (time.perf_counter_ns() - t) / 1000.0
        finally:
            store.close()

    policy = AlertPolicy(60.0, 20)
    decide_us = []
    for record in records:
        t = time.perf_counter_ns()
        policy.decide(record.key, record.level)
        decide_us.append((time.perf_counter_ns() - t) / 1000.0)

    channel = _Hanging()
    worker = DeliveryWorker(channel, attempts=1, queue_max=256).start()
    submit_us = []
    try:
        for record in records[:5_000]:
            t = time.perf_counter_ns()
            worker.submit(record)
            submit_us.append((time.perf_counter_ns() - t) / 1000.0)
        dropped = worker.stats()["dropped"]
    finally:
        channel.release.set()
        worker.stop(5.0)

    return {
        "alerts": n,
        "store_add_alert_us": percentiles(store_us),
        "policy_decide_us": percentiles(decide_us),
        "submit_with_hanging_channel_us": percentiles(submit_us),
        "submit_dropped": dropped,
        "counts_with_full_history_us": percentiles(counts_us),
        "report_critical_20_us": round(report_us, 1),
    }
