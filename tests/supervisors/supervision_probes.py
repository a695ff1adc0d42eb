"""Small test actors and a recorder for the supervision tests."""

from __future__ import annotations

import threading
from typing import Any

from stockade.codecs.messages import Tick
from stockade.supervisors.base import StockadeActor, handles
from stockade.supervisors.pool import PooledActor
from stockade.supervisors.spec import RestartPolicy

# Fast enough for tests that run in seconds; the heartbeat timeout leaves a
# wide margin over a real answer (microseconds) so a loaded machine does not
# produce false hangs.
FAST = RestartPolicy(
    strategy="one_for_one",
    max_restarts=10,
    period_s=10.0,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
    jitter=0.2,
    heartbeat_interval_s=0.05,
    heartbeat_timeout_s=0.3,
    jitter_seed=7,
    alerts_to="alerter",
)


class Recorder:
    """Thread-safe log of (event, name, generation, detail) plus knobs for the probes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, str, int, Any]] = []
        self.gate = threading.Event()  # releases Probe's "block" handler
        # name -> set of generations whose setup() raises (value: exception factory)
        self.setup_raises: dict[tuple[str, int], BaseException] = {}

    def add(self, event: str, name: str, generation: int, detail: Any = None) -> None:
        with self._lock:
            self.events.append((event, name, generation, detail))

    def of(self, event: str, name: str | None = None) -> list[tuple[str, int, Any]]:
        with self._lock:
            return [(n, g, d) for e, n, g, d in self.events if e == event and (name is None or n == name)]

    def got(self, name: str) -> list[tuple[int, Any]]:
        return [(g, d) for _, g, d in self.of("got", name)]

    def sequence(self, *events: str) -> list[tuple[str, str, int]]:
        with self._lock:
            return [(e, n, g) for e, n, g, _ in self.events if e in events]


class Probe(StockadeActor):
    """Does what its Tick says: boom, exit, block, stop, relay:TARGET:WHAT; records everything."""

    def setup(self) -> None:
        rec: Recorder = self.ctx.extras["rec"]
        rec.add("start", self.name, self.generation)
        exc = rec.setup_raises.get((self.name, self.generation))
        if exc is not None:
            raise exc

    def teardown(self) -> None:
        self.ctx.extras["rec"].add("stop", self.name, self.generation)

    @handles(Tick)
    def on_tick(self, tick: Tick) -> Any:
        rec: Recorder = self.ctx.extras["rec"]
        rec.add("got", self.name, self.generation, tick.what)
        what = tick.what
        if what == "boom":
            raise RuntimeError(f"boom in {self.name}")
        if what == "exit":
            raise SystemExit(3)
        if what == "stop":
            self.stop()
        if what == "block":
            # A handler stuck in I/O that later returns and carries on.
            rec.gate.wait(10.0)
            rec.add("woke", self.name, self.generation)
            self.tell("sink", Tick("late"))
        if what.startswith("relay:"):
            _, target, payload = what.split(":", 2)
            self.tell(target, Tick(payload))
        if what == "echo":
            return (self.name, self.generation)
        return None


class PooledProbe(PooledActor, Probe):
    """`Probe` run by an `ActorPool` (`extras["actor_pool"]`) instead of a thread of its own."""
