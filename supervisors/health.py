"""Tree health for the systemd watchdog: read without asking any actor.

Supervisors write here from their own threads (heartbeat rounds, pings sent
and answered, exhaustion); `healthy()` is read from the watchdog thread. It
is False when a supervisor is exhausted, when a ping is overdue (a hung actor
its supervisor has not replaced yet), or when a supervisor itself stopped
running its heartbeat rounds (a hung supervisor nobody replaced, e.g. the root).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


class Health:
    """Thread-safe record of heartbeats and exhaustion across one tree."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # supervisor name -> (last round, allowed silence, generation)
        self._rounds: dict[str, tuple[float, float, int]] = {}
        # child name -> (ping sent, deadline after which it counts as overdue)
        self._pings: dict[str, tuple[float, float]] = {}
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

    def ping_sent(self, child: str, allowed_s: float) -> None:
        now = self._clock()
        with self._lock:
            self._pings[child] = (now, now + allowed_s)

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
            overdue = sorted(n for n, (_, deadline) in self._pings.items() if now > deadline)
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
