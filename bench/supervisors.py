"""Micro-benchmarks of the actor substrate, for `python run.py bench`.

- `bench_pykka_hop`: the floor: a tell round trip between two bare pykka
  actors (no envelope, no router, no span);
- `bench_restart`: supervision cost: from a child's crash to its replacement
  handling the next message (the one sent right behind the crashing one, so
  it goes through the mailbox hand-over and the router's hold buffer).
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any

import pykka

from stockade.codecs.messages import Tick
from stockade.supervisors.base import StockadeActor, handles
from stockade.supervisors.runtime import start_tree
from stockade.supervisors.spec import ChildSpec, RestartPolicy
from stockade.trading.stats import percentiles

_TIMEOUT_S = 10.0


def _percentiles(samples_ns: list[int]) -> dict[str, Any]:
    p = percentiles(samples_ns, scale=1e-3, digits=2)
    return {"n": p["n"], "p50_us": p["p50"], "p99_us": p["p99"], "max_us": p["max"]}


class _Echo(pykka.ThreadingActor):
    """Bare pykka on purpose: this measures pykka itself, the floor under StockadeActor."""

    use_daemon_thread = True

    def __init__(self, peer: pykka.ActorRef[Any] | None = None, out: queue.Queue[int] | None = None) -> None:
        super().__init__()
        self.peer = peer
        self.out = out

    def on_receive(self, message: Any) -> None:
        kind, t0, reply_to = message
        if kind == "ping":
            reply_to.tell(("pong", t0, None))
        elif kind == "go":
            assert self.peer is not None
            self.peer.tell(("ping", time.perf_counter_ns(), self.actor_ref))
        else:  # pong: back where it started
            assert self.out is not None
            self.out.put(time.perf_counter_ns() - t0)


def bench_pykka_hop(n: int = 10_000) -> dict[str, Any]:
    """Round trip A -> B -> A of a tell between two bare pykka actors (µs); `hop_p50_us` is half of it."""
    out: queue.Queue[int] = queue.Queue()
    b = _Echo.start()
    a = _Echo.start(peer=b, out=out)
    samples = []
    try:
        for _ in range(n):
            a.tell(("go", 0, None))
            samples.append(out.get(timeout=_TIMEOUT_S))
    finally:
        a.stop(timeout=_TIMEOUT_S)
        b.stop(timeout=_TIMEOUT_S)
    result = _percentiles(samples)
    result["hop_p50_us"] = round(result["p50_us"] / 2, 2)
    return result


class _Crashy(StockadeActor):
    """Crashes on Tick("boom") (noting when); reports when it handles Tick("probe")."""

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        probe = self.ctx.extras["probe"]
        if tick.what == "boom":
            probe["t0"] = time.perf_counter_ns()
            raise RuntimeError("bench crash")
        probe["out"].put((self.generation, time.perf_counter_ns() - probe["t0"]))


def bench_restart(n: int = 200) -> dict[str, Any]:
    """Crash -> replacement handled its next message, over `n` restarts (µs); zero backoff."""
    probe: dict[str, Any] = {"t0": 0, "out": queue.Queue()}
    policy = RestartPolicy(
        max_restarts=n + 10,
        period_s=3600.0,
        backoff_initial_s=0.0,
        backoff_max_s=0.0,
        jitter=0.0,
        heartbeat_interval_s=1.0,
        heartbeat_timeout_s=5.0,
    )
    # Each crash logs a traceback by design; not n of them on the bench's stderr.
    base_logger = logging.getLogger("stockade.supervisors.base")
    sup_logger = logging.getLogger("stockade.supervisors.supervisor")
    levels = (base_logger.level, sup_logger.level)
    base_logger.setLevel(logging.CRITICAL)
    sup_logger.setLevel(logging.CRITICAL)
    tree = start_tree(
        policy, [ChildSpec(name="crashy", start=_Crashy.start)], extras={"probe": probe}, name="bench-root"
    )
    samples = []
    try:
        for _ in range(n):
            tree.router.tell("crashy", Tick("boom"), "bench")
            tree.router.tell("crashy", Tick("probe"), "bench")
            _, elapsed = probe["out"].get(timeout=_TIMEOUT_S)
            samples.append(elapsed)
    finally:
        tree.stop(_TIMEOUT_S)
        base_logger.setLevel(levels[0])
        sup_logger.setLevel(levels[1])
    return _percentiles(samples)


if __name__ == "__main__":  # pragma: no cover - manual run
    import json

    print(json.dumps({"pykka_hop": bench_pykka_hop(), "restart": bench_restart()}, indent=2))
