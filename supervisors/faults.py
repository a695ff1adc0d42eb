"""Fault injection: make a named actor crash (now, or on its next message) or hang.

Used by the fault-injection tests and, when `[debug] fault_injection = true`,
by the control socket's `crash`/`hang` commands. Off by default: a disabled
injector refuses requests so an operator cannot crash a production daemon by
accident.

Two ways to crash:
- `crash_now(name, ref, times)`: a `CrashNow` fault message goes into the
  current instance's mailbox, so it crashes as soon as it gets to it, with
  no other message needed; with `times > 1` each of the next `times - 1`
  instances of the name crashes the same way as it comes up (the base actor
  asks `take_start_crash` after `setup()`). That is how an operator drills
  a supervisor past its restart intensity, up to liquidation, from the
  control socket alone.
- `crash(name)`: armed for the instance's next message, whatever it is.
  `StockadeActor` calls `apply(name)` on every message it handles (heartbeat
  pings included, so an idle actor still trips within one heartbeat).
`hang(name, seconds)` is armed the same way.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import msgspec
import pykka

logger = logging.getLogger(__name__)

# A hang is bounded like everything else: an operator typo cannot park a
# thread for a day.
MAX_HANG_S = 3600.0
# A crash drill is bounded too: enough to exhaust any sane intensity.
MAX_CRASH_TIMES = 100


class CrashNow(msgspec.Struct, frozen=True):
    """A fault message: the actor instance that handles it raises `InjectedCrash`."""


class InjectedCrash(Exception):
    """Raised inside an actor by `FaultInjector.crash`."""


class FaultInjectionDisabled(RuntimeError):
    """Fault injection was requested but is not enabled."""


class FaultInjector:
    """Thread-safe store of pending faults per actor name."""

    def __init__(self, enabled: bool = False) -> None:
        self._enabled = enabled
        self._lock = threading.Lock()
        # name -> ("crash", None) | ("hang", seconds); read without the lock
        # on the hot path (a dict membership test is atomic under the GIL).
        self._armed: dict[str, tuple[str, float | None]] = {}
        self._release = threading.Event()
        self._hanging: dict[str, int] = {}
        # name -> how many of its next instances crash as they come up
        self._start_crashes: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self._enabled

    def _check(self) -> None:
        if not self._enabled:
            raise FaultInjectionDisabled(
                "fault injection is disabled (set [debug] fault_injection = true to enable it)"
            )

    def crash(self, name: str) -> None:
        """Make `name` raise `InjectedCrash` on its next message."""
        self._check()
        with self._lock:
            self._armed[name] = ("crash", None)
        logger.warning("fault injection: %s will crash on its next message", name)

    def crash_now(self, name: str, ref: pykka.ActorRef[Any] | None, times: int = 1) -> bool:
        """Crash `name` now (a `CrashNow` into `ref`, its current instance's mailbox),
        then each of its next `times - 1` instances as it comes up.

        Returns False when there was no live instance to crash now (`name`
        is between instances): then its next `times` instances crash instead.
        """
        self._check()
        if not 1 <= times <= MAX_CRASH_TIMES:
            raise ValueError(f"crash times must be in [1, {MAX_CRASH_TIMES}], got {times!r}")
        with self._lock:
            # Counted before the message goes: the successor may start at once.
            if times > 1:
                self._start_crashes[name] = times - 1
            else:
                self._start_crashes.pop(name, None)
        delivered = False
        if ref is not None:
            try:
                ref.tell(CrashNow())
                delivered = True
            except pykka.ActorDeadError:
                pass
        if not delivered:
            with self._lock:
                self._start_crashes[name] = self._start_crashes.get(name, 0) + 1
        logger.warning(
            "fault injection: %s crashes %s%s",
            name,
            "now" if delivered else "as its next instance starts",
            f", and {times - 1} more instance(s) as they start" if times > 1 else "",
        )
        return delivered

    def take_start_crash(self, name: str) -> bool:
        """Called by a new instance of `name` after its setup: whether it must crash now (counts one down)."""
        if name not in self._start_crashes:  # hot path (every start): no lock
            return False
        with self._lock:
            left = self._start_crashes.get(name, 0)
            if left <= 1:
                self._start_crashes.pop(name, None)
            else:
                self._start_crashes[name] = left - 1
            return left > 0

    def start_crashes(self) -> dict[str, int]:
        """Instances still to crash as they come up, by name (for status)."""
        with self._lock:
            return dict(self._start_crashes)

    def hang(self, name: str, seconds: float) -> None:
        """Make `name` block on its next message for up to `seconds` (or until `release`)."""
        self._check()
        if not 0 < seconds <= MAX_HANG_S:
            raise ValueError(f"hang seconds must be in (0, {MAX_HANG_S}], got {seconds!r}")
        with self._lock:
            self._armed[name] = ("hang", float(seconds))
        logger.warning("fault injection: %s will hang for up to %.3fs on its next message", name, seconds)

    def release(self) -> None:
        """Wake every actor hanging now and disarm pending faults (crash drills included)."""
        with self._lock:
            self._armed.clear()
            self._start_crashes.clear()
            self._release.set()
            # A fresh event so later hangs are not released in advance.
            self._release = threading.Event()

    def pending(self) -> dict[str, str]:
        """Armed faults by actor name (for status)."""
        with self._lock:
            return {name: kind for name, (kind, _) in self._armed.items()}

    def hanging(self) -> list[str]:
        """Names of actors blocked in an injected hang right now."""
        with self._lock:
            return sorted(self._hanging)

    def apply(self, name: str) -> None:
        """Called by an actor on each message: raise or block if a fault is armed."""
        if name not in self._armed:  # hot path: no lock
            return
        with self._lock:
            fault = self._armed.pop(name, None)
            event = self._release
            if fault is not None and fault[0] == "hang":
                self._hanging[name] = self._hanging.get(name, 0) + 1
        if fault is None:
            return
        kind, seconds = fault
        if kind == "crash":
            raise InjectedCrash(f"injected crash in {name}")
        try:
            event.wait(seconds)
        finally:
            with self._lock:
                left = self._hanging.get(name, 1) - 1
                if left:
                    self._hanging[name] = left
                else:
                    self._hanging.pop(name, None)
