"""Fault injection: make a named actor crash or hang on its next message.

Used by the fault-injection tests and, when `[debug] fault_injection = true`,
by the control socket's `crash`/`hang` commands. Off by default: a disabled
injector refuses requests so an operator cannot crash a production daemon by
accident. `StockadeActor` calls `apply(name)` on every message it handles
(heartbeat pings included, so an idle actor still trips within one heartbeat).
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

# A hang is bounded like everything else: an operator typo cannot park a
# thread for a day.
MAX_HANG_S = 3600.0


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

    @property
    def enabled(self) -> bool:
        return self._enabled

    def _check(self) -> None:
        if not self._enabled:
            raise FaultInjectionDisabled("fault injection is disabled (set [debug] fault_injection = true to enable it)")

    def crash(self, name: str) -> None:
        """Make `name` raise `InjectedCrash` on its next message."""
        self._check()
        with self._lock:
            self._armed[name] = ("crash", None)
        logger.warning("fault injection: %s will crash on its next message", name)

    def hang(self, name: str, seconds: float) -> None:
        """Make `name` block on its next message for up to `seconds` (or until `release`)."""
        self._check()
        if not 0 < seconds <= MAX_HANG_S:
            raise ValueError(f"hang seconds must be in (0, {MAX_HANG_S}], got {seconds!r}")
        with self._lock:
            self._armed[name] = ("hang", float(seconds))
        logger.warning("fault injection: %s will hang for up to %.3fs on its next message", name, seconds)

    def release(self) -> None:
        """Wake every actor hanging now and disarm pending faults."""
        with self._lock:
            self._armed.clear()
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
