"""Alerter: delivers alerts (log, JSONL, webhook, SMTP) and keeps their history.

Senders `tell` and never wait. Slow channels (webhook, SMTP) are served by a
worker thread behind a bounded queue, so a dead mail server can neither block
this actor past its heartbeat nor grow memory: when the queue is full the
alert is still logged and stored, and the drop is counted.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

from stockade.actors.base import StockadeActor, handles
from stockade.actors.services import Services
from stockade.codecs.messages import Alert
from stockade.codecs.records import AlertRecord
from stockade.ops.alert_channels import Channel, JsonlChannel, LogChannel, build_channels
from stockade.ops.alert_policy import AlertPolicy

log = logging.getLogger(__name__)

_QUEUE_MAX = 256


class Alerter(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        cfg = self.svc.settings.alerts
        self.policy = AlertPolicy(cfg.dedup_window_s, cfg.max_per_key_per_hour)
        channels = build_channels(cfg, Path(self.ctx.extra("data_dir")))
        # Local channels are fast and run inline; remote ones go to the worker.
        self.local: list[Channel] = [c for c in channels if isinstance(c, (LogChannel, JsonlChannel))]
        self.remote: list[Channel] = [c for c in channels if c not in self.local]
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_MAX)
        self._worker_stop = threading.Event()
        self._worker = None
        if self.remote:
            self._worker = threading.Thread(target=self._deliver_remote, name="alerter-remote", daemon=True)
            self._worker.start()

    def teardown(self) -> None:
        self._worker_stop.set()
        if self._worker is not None:
            self._worker.join(timeout=2.0)

    @handles(Alert)
    def on_alert(self, alert: Alert) -> None:
        record = AlertRecord(level=alert.level, key=alert.key, text=alert.text, source=alert.source, ts_ns=alert.ts_ns)
        # History is high-rate data (fills): not synced per alert.
        self.svc.store.alerts.add(record, ts_ns=alert.ts_ns, durable=False)
        decision = self.policy.decide(alert.key, alert.level)
        if not decision.deliver:
            return
        _send_all(self.local, alert, decision.suppressed)
        if self.remote and any(c.accepts(alert.level) for c in self.remote):
            try:
                self._queue.put_nowait((alert, decision.suppressed))
            except queue.Full:
                self.dropped += 1
                log.error("alert queue full: %s not sent to remote channels (%d dropped)", alert.key, self.dropped)

    def _deliver_remote(self) -> None:
        while not self._worker_stop.is_set():
            try:
                alert, suppressed = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            _send_all(self.remote, alert, suppressed)


def _send_all(channels: list[Channel], alert: Alert, suppressed: int) -> None:
    """Send to every channel that takes this level; one failing channel spoils none of the others."""
    for channel in channels:
        if channel.accepts(alert.level):
            try:
                channel.send(alert, suppressed)
            except Exception as exc:
                log.warning("alert channel %s failed: %s", type(channel).__name__, exc)
