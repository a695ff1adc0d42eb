"""Tree health for the systemd watchdog: read without asking any actor.

Supervisors write here from their own threads (heartbeat rounds, pings sent
and answered, exhaustion); `healthy()` is read from the watchdog thread. It
is False when a supervisor is exhausted, when a ping is overdue (a hung actor
its supervisor has not replaced yet), or when a supervisor itself stopped
running its heartbeat rounds (a hung supervisor nobody replaced, e.g. the root).

A child inside declared bounded work (`supervisors.fence`: a REST call
within its own timeouts) is busy, not overdue: `silent_for` is the one rule
both the supervisor's hang check and this report apply.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from stockade.supervisors.fence import FenceToken


def silent_for(now: float, ping_sent: float, busy_until: float) -> float:
    """How long a child with an unanswered ping has been neither answering nor busy.

    Counted from the ping, or from the end of its last declared busy block
    when that is later (`busy_until`: the open block's deadline, or when the
    last one ended). Negative while a busy deadline is still ahead; once a
    deadline passes with the block still open, the silence counts from it.
    A child is hung when this exceeds its heartbeat timeout.
    """
    return now - max(ping_sent, busy_until)


class Health:
    """Thread-safe record of heartbeats and exhaustion across one tree."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # supervisor name -> (last round, allowed silence, generation)
        self._rounds: dict[str, tuple[float, float, int]] = {}
        # child name -> (ping sent, allowed silence, its fence token for the busy deadline)
        self._pings: dict[str, tuple[float, float, FenceToken | None]] = {}
        self._exhausted: dict[str, str] = {}
        self._answered: dict[str, float] = {}  # child name -> when its last ping was answered

    def supervisor_started(self, name: str, generation: int, interval_s: float, timeout_s: float) -> None:
        with self._lock:
            self._exhausted.pop(name, None)  # a restarted supervisor starts afresh
            self._rounds[name] = (self._clock(), 3 * interval_s + timeout_s, generation)

    def supervisor_round(self, name: str, generation: int) -> None:
        with self._lock:
            entry = self._rounds.get(name)
            if entry is not None and entry[2] == generation:
                self._rounds[name] = (self._clock(), entry[1], generation)

    def supervisor_gone(self, name: str, generation: int) -> None:
        """`name` gen `generation` stopped (a zombie's late exit leaves its successor alone)."""
        with self._lock:
            entry = self._rounds.get(name)
            if entry is not None and entry[2] == generation:
                del self._rounds[name]

    def exhausted(self, name: str, reason: str) -> None:
        with self._lock:
            self._exhausted[name] = reason

    def ping_sent(self, child: str, allowed_s: float, fence: FenceToken | None = None) -> None:
        """A ping went to `child`; overdue after `allowed_s` of silence (busy time excluded, read
        from `fence`, whose deadlines are time.monotonic: use the default clock with it)."""
        now = self._clock()
        with self._lock:
            self._pings[child] = (now, allowed_s, fence)

    def ping_answered(self, child: str) -> None:
        with self._lock:
            if self._pings.pop(child, None) is not None:
                self._answered[child] = self._clock()

    def heartbeat_ages(self) -> dict[str, float]:
        """Seconds since each child last answered a heartbeat (the dashboard's tree)."""
        now = self._clock()
        with self._lock:
            return {name: now - at for name, at in self._answered.items()}

    def forget(self, child: str) -> None:
        """`child` was replaced or stopped: its outstanding ping no longer matters."""
        with self._lock:
            self._pings.pop(child, None)

    def report(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            stale = sorted(n for n, (last, allowed, _) in self._rounds.items() if now - last > allowed)
            overdue = sorted(
                n
                for n, (sent, allowed, fence) in self._pings.items()
                if silent_for(now, sent, fence.busy_until if fence is not None else 0.0) > allowed
            )
            exhausted = dict(self._exhausted)
        return {
            "healthy": not (stale or overdue or exhausted),
            "exhausted": exhausted,
            "stale_supervisors": stale,
            "overdue_heartbeats": overdue,
        }

    def healthy(self) -> bool:
        """True while every heartbeat is answered in time and no supervisor is exhausted."""
        return bool(self.report()["healthy"])
