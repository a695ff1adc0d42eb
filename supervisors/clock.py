"""The runtime's clock: where actors read the time, wait, start timers and background work.

Live it is the wall clock (`WallClock`): `time.time_ns()`, `time.monotonic()`,
timer threads, daemon threads. In a backtest it is `SimClock`: time is
whatever the data says it is (`advance_to`), timers fire when the simulated
time passes their due time, background work runs inline, and ids come from a
seeded generator, so the same data and seed give the same run, byte for byte.

Actors get it as `ctx.clock` (`self.clock` in `StockadeActor`) and never ask
`time` directly on the decision path; pure code is given `now` as before.
NautilusTrader splits the same way (`LiveClock` / `TestClock` behind one
`Clock` interface, timers included): the strategy cannot tell which it has.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from stockade.supervisors.timers import RepeatingTimer


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What actors use instead of `time`, `threading.Thread` and `uuid4`."""

    def now_ns(self) -> int:
        """Wall-clock (or simulated) nanoseconds since the UTC epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals and deadlines only)."""
        ...

    def monotonic_ns(self) -> int: ...

    def sleep(self, seconds: float) -> None: ...

    def timer(
        self, interval_s: float, fire: Callable[[], None], stopped: threading.Event | None, name: str
    ) -> TimerHandle:
        """Call `fire()` every `interval_s` until cancelled or `stopped` is set (started)."""
        ...

    def background(self, fn: Callable[[], Any], name: str) -> None:
        """Run `fn` off the handler (a daemon thread live; inline, in order, in a backtest)."""
        ...

    def new_id(self) -> str:
        """A fresh 32-hex-digit id (uuid4 live; seeded in a backtest)."""
        ...


class WallClock:
    """The real clock: what every live actor gets."""

    simulated = False

    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def timer(
        self, interval_s: float, fire: Callable[[], None], stopped: threading.Event | None, name: str
    ) -> RepeatingTimer:
        return RepeatingTimer(interval_s, fire, stopped, name=name).start()

    def background(self, fn: Callable[[], Any], name: str) -> None:
        threading.Thread(target=fn, name=name, daemon=True).start()

    def new_id(self) -> str:
        return uuid.uuid4().hex


WALL_CLOCK = WallClock()


Interval = TypeVar("Interval", int, float)


class TimerEntry(Generic[Interval]):
    """A repeating timer as a scheduler keeps it: `interval` in the scheduler's own unit
    (SimClock: ns, the actor pool: s); `cancel()` only marks it, the scheduler drops it."""

    __slots__ = ("interval", "fire", "stopped", "name", "cancelled")

    def __init__(
        self, interval: Interval, fire: Callable[[], None], stopped: threading.Event | None, name: str
    ) -> None:
        self.interval: Interval = interval
        self.fire = fire
        self.stopped = stopped
        self.name = name
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SimClock:
    """A clock driven by the data: pure, single-threaded, deterministic.

    `advance_to(t)` moves time forward to `t`, firing every timer due on the
    way at its own due time, in (due time, order of scheduling); time never goes
    back. A timer due several times within one advance (a night with no
    data) fires once, at its last due time: the same coalescing the actor
    base applies live, where a tick is skipped while the previous one is
    still queued; it keeps a year's replay from spending its time on idle
    ticks. `sleep(s)` moves time forward by `s` (a retry's wait costs simulated
    time, not wall time). `background` work runs at once on the caller's
    thread, so it happens at a well-defined point of the run.
    """

    simulated = True

    def __init__(self, start_ns: int, seed: int = 0) -> None:
        self._now = int(start_ns)
        self._timers: list[tuple[int, int, TimerEntry[int]]] = []
        self._seq = itertools.count()
        self._ids = random.Random(seed ^ 0x1D5)

    def now_ns(self) -> int:
        return self._now

    def monotonic(self) -> float:
        return self._now / 1e9

    def monotonic_ns(self) -> int:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance_to(self._now + int(max(0.0, seconds) * 1e9))

    def timer(
        self, interval_s: float, fire: Callable[[], None], stopped: threading.Event | None, name: str
    ) -> TimerEntry[int]:
        if not interval_s > 0:
            raise ValueError(f"timer interval must be > 0, got {interval_s!r}")
        t = TimerEntry(int(interval_s * 1e9), fire, stopped, name)
        heapq.heappush(self._timers, (self._now + t.interval, next(self._seq), t))
        return t

    def background(self, fn: Callable[[], Any], name: str) -> None:
        fn()

    def new_id(self) -> str:
        return uuid.UUID(int=self._ids.getrandbits(128), version=4).hex

    def next_due_ns(self) -> int | None:
        """When the next live timer fires (None without timers)."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def advance_to(self, ts_ns: int, settle: Callable[[], object] | None = None) -> None:
        """Move to `ts_ns` (never back), firing due timers at their due times on the way.

        `settle()` runs after each firing (the dispatcher handles what the timer
        sent) so a timer's work happens at its own time, before later ones.
        """
        timers = self._timers
        while timers and timers[0][0] <= ts_ns:
            due, _, t = heapq.heappop(timers)
            if t.cancelled or (t.stopped is not None and t.stopped.is_set()):
                continue
            if due + t.interval <= ts_ns:
                # Due more than once before ts_ns: fire once, at its last due time.
                last = due + (ts_ns - due) // t.interval * t.interval
                heapq.heappush(timers, (last, next(self._seq), t))
                continue
            self._now = max(self._now, due)
            heapq.heappush(timers, (due + t.interval, next(self._seq), t))
            t.fire()
            if settle is not None:
                settle()
        self._now = max(self._now, int(ts_ns))
