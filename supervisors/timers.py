"""Timer threads for actors and supervisors: bounded, stoppable, never leaked.

A timer only *sends a message*; the work happens in the actor's own thread
when the message is handled, so actor state is never touched from a timer
thread. Each timer stops when cancelled or when its actor stops (it watches
the actor's `actor_stopped` event), whichever comes first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pykka

logger = logging.getLogger(__name__)


class RepeatingTimer:
    """Call `fire()` every `interval_s` seconds in a daemon thread until cancelled or `stopped` is set."""

    def __init__(
        self,
        interval_s: float,
        fire: Callable[[], None],
        stopped: threading.Event | None = None,
        name: str = "timer",
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"timer interval must be > 0, got {interval_s!r}")
        self.interval_s = interval_s
        self._fire = fire
        self._stopped = stopped
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> RepeatingTimer:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop firing (the thread ends within one wake-up; never blocks)."""
        self._cancel.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        # Wait on the cancel event so cancel() wakes the thread at once.
        while not self._cancel.wait(self.interval_s):
            if self._stopped is not None and self._stopped.is_set():
                return
            try:
                self._fire()
            except pykka.ActorDeadError:
                return  # the actor is gone: so is the reason to tick
            except Exception:
                logger.exception("timer %s failed to fire", self._thread.name)
