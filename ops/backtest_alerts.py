"""The alert machinery of a backtest: alerts are recorded in the out dir, never delivered.

The Alerter actor runs in a backtest as live (store, dedup, rate limit), but
a backtest must not page anyone: replaying June must not send June's alerts
to the on-call phone again. So the channels are the out dir's JSONL file
only (`alerts.jsonl`, beside the records, whose alert history the report and
tearsheet read): no log line, no webhook, no SMTP, whatever `[alerts]` says.
Dedup and rate limits run on the simulated clock, and the daily summary is
gathered inline (the clock's `background`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from stockade.ops.alerts.channels import Channel, JsonlChannel, Redactor
from stockade.ops.alerts.machinery import Alerting
from stockade.ops.alerts.policy import AlertPolicy

ALERTS_FILE = "alerts.jsonl"


class BacktestAlerting(Alerting):
    """`Alerting` whose only channel is OUT/alerts.jsonl, timed on the backtest's clock."""

    def __init__(self, out: Path, monotonic: Callable[[], float]) -> None:
        self.path = Path(out) / ALERTS_FILE
        self._monotonic = monotonic

    def policy(self, cfg: Any) -> AlertPolicy:
        return AlertPolicy(cfg.dedup_window_s, cfg.max_per_key_per_hour, clock=self._monotonic)

    def channels(self, cfg: Any, data_dir: Path) -> tuple[Redactor, list[Channel], list[Channel]]:
        redact = Redactor.from_environment()
        return redact, [JsonlChannel(self.path, "INFO", redact)], []

    def worker(self, channel: Channel, cfg: Any) -> Any:
        raise RuntimeError("a backtest delivers no alert to a remote channel")
