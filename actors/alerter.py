"""Alerter: delivers alerts (log, JSONL, webhook, SMTP), keeps their history, sends the daily summary.

Senders `tell` and never wait. Every alert is stored (history and counts)
with secrets redacted, then deduplicated and rate limited per key. The log
and JSONL channels are local and fast, so they run inline; each remote
channel has its own `DeliveryWorker` thread with a bounded queue and retries,
so a hanging webhook can neither block this actor past its heartbeat, nor
delay the e-mail, nor grow memory.

The machinery (channels, delivery threads, policy, summary) is the
application's, handed in as `Services.alerting` (ops/alerts/machinery.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from stockade.actors import names, ticks
from stockade.actors.services import Services
from stockade.codecs.messages import Alert, Tick
from stockade.codecs.records import AlertRecord
from stockade.storage.store import Store
from stockade.supervisors.base import StockadeActor, handles

log = logging.getLogger(__name__)

NAME = names.ALERTER
STATS_INTERVAL_S = 1.0
SUMMARY_CHECK_S = 20.0
WORKER_STOP_S = 1.0


class Alerting(Protocol):
    """What the Alerter needs from the application (ops/alerts/machinery.py)."""

    summary_key: str

    def policy(self, cfg: Any) -> Any: ...

    def channels(self, cfg: Any, data_dir: Path) -> tuple[Callable[[str], str], list[Any], list[Any]]: ...

    def worker(self, channel: Any, cfg: Any) -> Any: ...

    def next_summary_ns(self, now_ns: int, hhmm: str) -> int: ...

    def summary_text(self, store: Store, now_ns: int) -> str: ...


class Alerter(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        kit: Alerting | None = self.svc.alerting
        if kit is None:
            raise RuntimeError("alerter: Services.alerting is not set (the application's alert machinery)")
        self.kit = kit
        cfg = self.cfg = self.svc.settings.alerts
        self.policy = kit.policy(cfg)
        self.redact, self.local, remote = kit.channels(cfg, Path(self.ctx.extra("data_dir")))
        self.workers = [kit.worker(c, cfg) for c in remote]
        self.received = self.suppressed = 0
        self.every(STATS_INTERVAL_S, ticks.STATS)
        self.next_summary_ns = 0
        if cfg.daily_summary:
            # Strictly after now: a restart after the time does not send the day's summary twice.
            self.next_summary_ns = kit.next_summary_ns(self.clock.now_ns(), cfg.daily_summary_time)
            self.every(SUMMARY_CHECK_S, ticks.DAILY_SUMMARY)

    def teardown(self) -> None:
        for worker in getattr(self, "workers", ()):
            worker.stop(WORKER_STOP_S)

    @handles(Alert)
    def on_alert(self, alert: Alert) -> None:
        self.received += 1
        # The history must never hold a secret, whatever a sender put in the text.
        record = AlertRecord(
            level=alert.level,
            key=self.redact(alert.key),
            text=self.redact(alert.text),
            source=alert.source,
            ts_ns=alert.ts_ns,
        )
        try:
            # History is high-rate data (fills): only the serious ones are synced at once.
            self.svc.store.add_alert(record, durable=alert.level in ("CRITICAL", "EMERGENCY"))
        except Exception:
            # A full disk is exactly when the alert must still go out: deliver without the history.
            log.exception("alerts: could not store %s %s; delivering anyway", record.level, record.key)
        decision = self.policy.decide(alert.key, alert.level)
        if not decision.deliver:
            self.suppressed += 1
            return
        for channel in self.local:
            if channel.accepts(alert.level):
                try:
                    channel.send(alert, decision.suppressed)
                except Exception as exc:  # one failing channel spoils none of the others
                    log.warning("alert channel %s failed: %s", channel.name, exc)
        for worker in self.workers:
            if worker.channel.accepts(alert.level):
                worker.submit(alert, decision.suppressed)

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what == ticks.STATS:
            self.svc.stats["alerts"] = self.delivery_stats()
        elif tick.what == ticks.DAILY_SUMMARY:
            self.maybe_send_summary(self.clock.now_ns())

    def maybe_send_summary(self, now_ns: int) -> bool:
        """Start the daily summary if its time has come; True if started.

        Gathering reads the whole orders table, which grows for ever: it runs
        on a thread of its own, and the alert comes back through the mailbox.
        """
        if not self.next_summary_ns or now_ns < self.next_summary_ns:
            return False
        self.next_summary_ns = self.kit.next_summary_ns(now_ns, self.cfg.daily_summary_time)
        # A thread of the clock's: live a daemon thread, in a backtest inline (deterministic).
        self.clock.background(lambda: self._summarize(now_ns), "alerts-daily-summary")
        return True

    def _summarize(self, now_ns: int) -> None:
        try:
            text = self.kit.summary_text(self.svc.store, now_ns)
        except Exception as exc:
            log.exception("alerts: daily summary failed")
            text = f"daily summary failed: {type(exc).__name__}: {exc}"
        self.router.tell(NAME, Alert("INFO", self.kit.summary_key, text, NAME, now_ns), NAME)

    def delivery_stats(self) -> dict:
        """Counters for `status` and `ctl alerts` (this process only; history counts are in storage)."""
        return {
            "received": self.received,
            "suppressed": self.suppressed,
            "suppressed_pending": sum(self.policy.pending_suppressed().values()),
            "channels": {w.channel.name: w.stats() for w in self.workers},
            "next_summary_ns": self.next_summary_ns,
        }
