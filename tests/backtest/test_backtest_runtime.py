"""The backtest runtime: SimClock (pure) and the calling-thread dispatcher with real actors."""

from __future__ import annotations

import threading

import pytest

from stockade.codecs.messages import Alert, Tick
from stockade.supervisors.base import StockadeActor, handles
from stockade.supervisors.clock import SimClock, WallClock
from stockade.supervisors.context import ActorContext
from stockade.supervisors.dispatcher import ActorFailed, CallingThreadDispatcher

S = 1_000_000_000


def test_sim_clock_fires_timers_at_their_due_times_in_order():
    clock = SimClock(start_ns=100 * S)
    fired: list[tuple[str, int]] = []
    clock.timer(2.0, lambda: fired.append(("a", clock.now_ns())), None, "a")
    clock.timer(3.0, lambda: fired.append(("b", clock.now_ns())), None, "b")
    for t in range(101, 107):
        clock.advance_to(t * S + 1)
    assert fired == [("a", 102 * S), ("b", 103 * S), ("a", 104 * S), ("b", 106 * S), ("a", 106 * S)]
    assert clock.now_ns() == 106 * S + 1


def test_sim_clock_never_goes_back_and_sleep_costs_simulated_time():
    clock = SimClock(start_ns=50 * S)
    clock.advance_to(10 * S)
    assert clock.now_ns() == 50 * S
    clock.sleep(1.5)
    assert clock.now_ns() == 51 * S + S // 2
    assert clock.monotonic() == pytest.approx(51.5)


def test_sim_clock_coalesces_a_timer_due_many_times_in_one_gap():
    clock = SimClock(start_ns=0)
    fired: list[int] = []
    clock.timer(5.0, lambda: fired.append(clock.now_ns()), None, "roll")
    clock.advance_to(3600 * S)  # a quiet hour: once, at its last due time
    assert fired == [3600 * S]
    clock.advance_to(3605 * S)
    clock.advance_to(3610 * S)
    assert fired == [3600 * S, 3605 * S, 3610 * S]


def test_sim_clock_cancelled_and_stopped_timers_do_not_fire():
    clock = SimClock(start_ns=0)
    stopped = threading.Event()
    fired: list[str] = []
    t = clock.timer(1.0, lambda: fired.append("cancelled"), None, "x")
    clock.timer(1.0, lambda: fired.append("stopped"), stopped, "y")
    t.cancel()
    stopped.set()
    clock.advance_to(10 * S)
    assert fired == []
    assert clock.next_due_ns() is None


def test_sim_clock_ids_are_seeded_and_background_runs_inline():
    a, b, c = SimClock(0, seed=1), SimClock(0, seed=1), SimClock(0, seed=2)
    ids = [a.new_id() for _ in range(3)]
    assert ids == [b.new_id() for _ in range(3)]
    assert ids != [c.new_id() for _ in range(3)]
    assert all(len(i) == 32 for i in ids)
    ran: list[str] = []
    a.background(lambda: ran.append(threading.current_thread().name), "work")
    assert ran == [threading.current_thread().name]


def test_wall_clock_is_the_real_time():
    import time

    assert abs(WallClock().now_ns() - time.time_ns()) < 5 * S


class Recorder(StockadeActor):
    """Records what it handles, with the (simulated) time; forwards pings to `peer`."""

    def setup(self) -> None:
        self.seen: list[tuple[str, str, int]] = []
        self.peer = self.ctx.extras.get("peer:" + self.name)
        self.every(10.0, "beat")

    @handles(Alert)
    def on_alert(self, alert: Alert) -> None:
        self.seen.append((self.name, alert.key, self.clock.now_ns()))
        if alert.key == "boom":
            raise RuntimeError("boom")
        if self.peer is not None and not alert.key.endswith("-fwd"):
            self.tell(self.peer, Alert("INFO", alert.key + "-fwd", "", self.name, self.clock.now_ns()))

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        self.seen.append((self.name, "tick:" + tick.what, self.clock.now_ns()))


def _spawn(dispatcher: CallingThreadDispatcher, clock: SimClock, name: str, **extras) -> Recorder:
    ctx = ActorContext(
        name=name, generation=0, router=dispatcher.router, notify=lambda e: None, extras=extras, clock=clock
    )
    return dispatcher.spawn(Recorder, ctx)


def test_dispatcher_runs_handlers_on_the_calling_thread_in_fifo_order():
    clock = SimClock(start_ns=0)
    d = CallingThreadDispatcher()
    a = _spawn(d, clock, "a", **{"peer:a": "b"})
    b = _spawn(d, clock, "b")
    assert threading.active_count() >= 1
    before = threading.active_count()
    d.router.tell("a", Alert("INFO", "one", "", "test", 0), "test")
    d.router.tell("b", Alert("INFO", "two", "", "test", 0), "test")
    d.router.tell("a", Alert("INFO", "three", "", "test", 0), "test")
    assert d.run_until_idle() == 5
    order = [(n, k) for n, k, _ in a.seen + b.seen]
    assert sorted(order) == sorted([("a", "one"), ("a", "three"), ("b", "two"), ("b", "one-fwd"), ("b", "three-fwd")])
    # FIFO: b got "two" (queued before a forwarded anything), then the forwards in order.
    assert [k for _, k, _ in b.seen] == ["two", "one-fwd", "three-fwd"]
    assert threading.active_count() == before  # no thread per actor
    # Timers follow the simulated clock: ticks at 10 s and 20 s, handled at those times.
    clock.advance_to(15 * S, d.run_until_idle)
    clock.advance_to(25 * S, d.run_until_idle)
    assert [(k, t) for _, k, t in a.seen if k.startswith("tick")] == [("tick:beat", 10 * S), ("tick:beat", 20 * S)]
    d.stop_all()


def test_dispatcher_a_failing_handler_fails_the_run():
    clock = SimClock(start_ns=0)
    d = CallingThreadDispatcher()
    _spawn(d, clock, "a")
    d.router.tell("a", Alert("INFO", "boom", "", "test", 0), "test")
    with pytest.raises(ActorFailed, match="a failed"):
        d.run_until_idle()
