"""Delivery of alerts to one remote channel: a thread, a bounded queue, retries.

Each remote channel (webhook, SMTP) gets its own `DeliveryWorker`, so a mail
server that hangs for its whole timeout delays no webhook, and `submit` never
blocks: when the queue is full the oldest waiting alert is dropped (counted
and logged; it is still in the history and the log/JSONL channels). A failed
send is retried with exponential backoff and full jitter, up to a bounded
number of attempts, unless the receiver refused it for good.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from typing import Any

from stockade.broker.backoff import Backoff
from stockade.ops.alerts.channels import AlertLike, Channel, ChannelError

log = logging.getLogger(__name__)

DROP_LOG_EVERY_S = 10.0


class DeliveryWorker:
    """Serve one channel from a bounded queue on a daemon thread. `start()`, then `submit()`."""

    def __init__(
        self,
        channel: Channel,
        *,
        attempts: int = 4,
        retry_initial_s: float = 2.0,
        retry_max_s: float = 60.0,
        queue_max: int = 256,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1 or queue_max < 1:
            raise ValueError(f"attempts ({attempts}) and queue_max ({queue_max}) must be >= 1")
        self.channel = channel
        self.attempts = attempts
        self._backoff = Backoff(retry_initial_s, retry_max_s, rng=rng)
        self._queue: collections.deque[tuple[AlertLike, int]] = collections.deque()
        self._queue_max = queue_max
        self._cond = threading.Condition()
        self._closing = False
        self._hurry = threading.Event()  # set at stop: retry waits end early
        self._busy = False
        self._drop_logged_at = float("-inf")
        self.sent = self.failed = self.dropped = self.retries = 0
        self._thread = threading.Thread(target=self._run, name=f"alerts-{channel.name}", daemon=True)

    def start(self) -> DeliveryWorker:
        self._thread.start()
        return self

    def submit(self, alert: AlertLike, suppressed: int = 0) -> None:
        """Queue `alert` for this channel; never blocks, never raises."""
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self._queue_max:
                oldest, _ = self._queue.popleft()
                self.dropped += 1
                now = time.monotonic()
                if now - self._drop_logged_at >= DROP_LOG_EVERY_S:  # a storm gets a line, not a flood
                    self._drop_logged_at = now
                    log.error(
                        "alerts: %s queue full (%d): dropped %s %s (%d dropped so far)",
                        self.channel.name,
                        self._queue_max,
                        oldest.level,
                        self.channel.redact(oldest.key),
                        self.dropped,
                    )
            self._queue.append((alert, suppressed))
            self._cond.notify()

    def idle(self) -> bool:
        """Nothing queued and nothing being sent."""
        with self._cond:
            return not self._queue and not self._busy

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = len(self._queue)
        return {
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "retries": self.retries,
            "queued": queued,
        }

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is queued without retry waits for up to `timeout` seconds, then give up."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._hurry.set()
        if self._thread.ident is None:
            return  # never started
        self._thread.join(timeout)
        if self._thread.is_alive():  # a daemon thread: it cannot keep the process alive
            log.warning("alerts: %s still busy at stop; %d queued alerts not sent", self.channel.name, len(self._queue))

    # ---- worker thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing and drained
                alert, suppressed = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(alert, suppressed)
            except Exception:  # a bug in a channel must not end deliveries for good
                self.failed += 1
                log.exception("alerts: %s crashed on %s", self.channel.name, self.channel.redact(alert.key))
            finally:
                with self._cond:
                    self._busy = False

    def _deliver(self, alert: AlertLike, suppressed: int) -> None:
        self._backoff.reset()
        for attempt in range(1, self.attempts + 1):
            try:
                self.channel.send(alert, suppressed)
            except ChannelError as exc:
                last_try = attempt == self.attempts or not exc.retryable or self._closing
                if last_try:
                    self.failed += 1
                    log.error(
                        "alerts: %s %s not delivered by %s after %d attempt(s): %s",
                        alert.level,
                        self.channel.redact(alert.key),
                        self.channel.name,
                        attempt,
                        exc,
                    )
                    return
                delay = self._backoff.next_delay()
                self.retries += 1
                log.warning(
                    "alerts: %s failed (%s); retry %d/%d in %.1fs",
                    self.channel.name,
                    exc,
                    attempt,
                    self.attempts - 1,
                    delay,
                )
                self._hurry.wait(delay)  # at stop: one last immediate try
            else:
                self.sent += 1
                return
