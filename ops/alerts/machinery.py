"""The alert machinery the application hands the Alerter actor (through `Services.alerting`).

The actor (actors/alerter.py) owns the flow: store, deduplicate, deliver,
schedule the daily summary. How each step is done (the channels and their
redactor, the delivery threads, the dedup policy, the summary) is the
application's, so the actor layer never imports ops/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stockade.ops import daily_summary
from stockade.ops.alerts.channels import Channel, JsonlChannel, LogChannel, Redactor, build_channels
from stockade.ops.alerts.delivery import DeliveryWorker
from stockade.ops.alerts.policy import AlertPolicy
from stockade.storage.store import Store


class Alerting:
    """Implements `actors.alerter.Alerting` with ops/alerts and ops/daily_summary."""

    summary_key = daily_summary.KEY

    def policy(self, cfg: Any) -> AlertPolicy:
        return AlertPolicy(cfg.dedup_window_s, cfg.max_per_key_per_hour)

    def channels(self, cfg: Any, data_dir: Path) -> tuple[Redactor, list[Channel], list[Channel]]:
        """(the shared redactor, the local channels run inline, the remote ones)."""
        channels = build_channels(cfg, data_dir)
        local: list[Channel] = [c for c in channels if isinstance(c, (LogChannel, JsonlChannel))]
        return channels[0].redact, local, [c for c in channels if c not in local]

    def worker(self, channel: Channel, cfg: Any) -> DeliveryWorker:
        """A started delivery thread for a remote channel."""
        return DeliveryWorker(
            channel,
            attempts=cfg.retry_attempts,
            retry_initial_s=cfg.retry_initial_s,
            retry_max_s=cfg.retry_max_s,
            queue_max=cfg.queue_max,
        ).start()

    def next_summary_ns(self, now_ns: int, hhmm: str) -> int:
        return daily_summary.next_summary_ns(now_ns, hhmm)

    def summary_text(self, store: Store, now_ns: int) -> str:
        return daily_summary.summary_text(daily_summary.gather(store, now_ns))
