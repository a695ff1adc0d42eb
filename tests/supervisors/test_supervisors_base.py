"""StockadeActor alone (no supervisor): dispatch, timers, failure reporting, BaseException guard."""

import queue

import pykka
import pytest
from waiting import wait_for

from stockade.codecs.messages import Alert, Message, Tick
from stockade.supervisors.base import StockadeActor, handles
from stockade.supervisors.context import ActorContext
from stockade.supervisors.events import ChildExit, Ping
from stockade.supervisors.faults import FaultInjector, InjectedCrash
from stockade.supervisors.router import Router


class Other(Message, frozen=True):
    n: int


class Dispatching(StockadeActor):
    @handles(Tick)
    def on_tick(self, tick, envelope):
        self.ctx.extras["out"].put(("tick", tick.what, envelope.sender))
        if tick.what == "exit":
            raise SystemExit(1)
        if tick.what == "interrupt":
            raise KeyboardInterrupt
        if tick.what == "boom":
            raise ValueError("boom")
        return tick.what

    @handles(Message)
    def on_any(self, msg):
        self.ctx.extras["out"].put(("any", type(msg).__name__))


class Ticking(StockadeActor):
    def setup(self):
        self.timer = self.every(0.01, "beat")
        self.ctx.extras["timers"].append(self.timer)

    @handles(Tick)
    def on_tick(self, tick):
        self.ctx.extras["out"].put(tick.what)


class FailsInSetup(StockadeActor):
    def setup(self):
        raise self.ctx.extras["exc"]


@pytest.fixture
def spawn():
    refs = []
    router = Router()
    exits: queue.Queue = queue.Queue()

    def start(cls, name, faults=None, **extras):
        gen = router.next_generation(name)
        ctx = ActorContext(
            name=name,
            generation=gen,
            router=router,
            notify=lambda e: isinstance(e, ChildExit) and exits.put(e),
            faults=faults or FaultInjector(),
            extras=extras,
        )
        ref = cls.start(ctx)
        router.register(name, ref, gen)
        refs.append(ref)
        return ref

    start.router = router
    start.exits = exits
    yield start
    for ref in refs:
        ref.stop(block=False)


def test_overriding_pykka_hooks_is_refused():
    with pytest.raises(TypeError, match="setup"):

        class Bad(StockadeActor):
            def on_start(self):
                pass

    with pytest.raises(TypeError, match="handle"):

        class Bad2(StockadeActor):
            def on_receive(self, message):
                pass


def test_dispatch_by_type_with_and_without_envelope(spawn):
    out = queue.Queue()
    spawn(Dispatching, "d", out=out)
    spawn.router.tell("d", Tick("x"), "me")
    spawn.router.tell("d", Other(1), "me")
    assert out.get(timeout=5) == ("tick", "x", "me")
    assert out.get(timeout=5) == ("any", "Other")  # falls back along the message's MRO
    assert spawn.router.ask("d", Tick("asked"), timeout=5.0) == "asked"


def test_answers_heartbeat_pings_itself(spawn):
    ref = spawn(Dispatching, "d", out=queue.Queue())
    assert ref.ask(Ping(), timeout=5.0) is True


def test_exception_in_handler_reports_and_stops_only_this_actor(spawn):
    out = queue.Queue()
    ref = spawn(Dispatching, "d", out=out)
    spawn.router.tell("d", Tick("boom"), "me")
    exit_ = spawn.exits.get(timeout=5)
    assert isinstance(exit_, ChildExit) and exit_.abnormal and exit_.name == "d" and exit_.generation == 1
    assert "ValueError('boom')" in exit_.reason
    wait_for(lambda: not ref.is_alive(), timeout=5)


@pytest.mark.parametrize("what", ["exit", "interrupt"])
def test_base_exception_in_handler_does_not_stop_other_actors(spawn, what):
    victim = spawn(Dispatching, "victim", out=queue.Queue())
    bystander = spawn(Dispatching, "bystander", out=queue.Queue())
    spawn.router.tell("victim", Tick(what), "me")
    exit_ = spawn.exits.get(timeout=5)
    assert exit_.name == "victim" and exit_.abnormal
    wait_for(lambda: not victim.is_alive(), timeout=5)
    assert bystander.is_alive()
    assert bystander in pykka.ActorRegistry.get_all()
    assert bystander.ask(Ping(), timeout=5.0) is True


def test_base_exception_in_an_asked_handler_reaches_the_caller_as_an_exception(spawn):
    spawn(Dispatching, "victim", out=queue.Queue())
    with pytest.raises(Exception, match="SystemExit"):
        spawn.router.ask("victim", Tick("exit"), timeout=5.0)
    assert spawn.exits.get(timeout=5).abnormal


@pytest.mark.parametrize("exc", [RuntimeError("setup failed"), SystemExit(2)])
def test_exception_in_setup_is_reported_and_stops_the_actor(spawn, exc):
    bystander = spawn(Dispatching, "bystander", out=queue.Queue())
    ref = spawn(FailsInSetup, "f", exc=exc)
    exit_ = spawn.exits.get(timeout=5)
    assert exit_.name == "f" and exit_.abnormal and exit_.reason.startswith("setup:")
    wait_for(lambda: not ref.is_alive(), timeout=5)
    assert bystander.is_alive()


def test_mailbox_of_a_crashed_actor_is_kept_for_the_next_instance(spawn):
    faults = FaultInjector(enabled=True)
    out = queue.Queue()
    spawn(Dispatching, "d", faults=faults, out=out)
    faults.hang("d", 5.0)
    spawn.router.tell("d", Tick("first"), "me")  # hangs on this one...
    spawn.router.tell("d", Tick("boom"), "me")
    spawn.router.tell("d", Tick("after"), "me")
    faults.release()
    assert spawn.exits.get(timeout=5).abnormal
    assert [out.get(timeout=5) for _ in range(2)] == [("tick", "first", "me"), ("tick", "boom", "me")]
    wait_for(lambda: spawn.router.status("d").buffered == 1, timeout=5)  # "after" waits for gen 2


def test_injected_crash_hits_the_next_message(spawn):
    faults = FaultInjector(enabled=True)
    spawn(Dispatching, "d", faults=faults, out=queue.Queue())
    faults.crash("d")
    spawn.router.tell("d", Tick("x"), "me")
    exit_ = spawn.exits.get(timeout=5)
    assert InjectedCrash.__name__ in exit_.reason


def test_normal_stop_reports_a_normal_exit(spawn):
    ref = spawn(Dispatching, "d", out=queue.Queue())
    ref.stop(timeout=5.0)
    exit_ = spawn.exits.get(timeout=5)
    assert not exit_.abnormal and exit_.reason == "normal"


def test_timer_ticks_and_stops_with_the_actor(spawn):
    out, timers = queue.Queue(), []
    ref = spawn(Ticking, "t", out=out, timers=timers)
    assert [out.get(timeout=5) for _ in range(3)] == ["beat"] * 3
    ref.stop(timeout=5.0)
    assert timers[0].join(5.0)


def test_timer_skips_while_a_tick_is_still_queued(spawn):
    faults = FaultInjector(enabled=True)
    out, timers = queue.Queue(), []
    ref = spawn(Ticking, "t", faults=faults, out=out, timers=timers)
    out.get(timeout=5)
    faults.hang("t", 5.0)
    wait_for(lambda: faults.hanging() == ["t"], timeout=5)
    # The timer keeps firing every 10 ms while the actor hangs, but at most
    # one tick is ever queued.
    wait_for(lambda: ref.actor_inbox.qsize() == 1, timeout=5)
    assert ref.actor_inbox.qsize() <= 1
    faults.release()


def test_too_many_timers_is_an_error(spawn):
    class Greedy(StockadeActor):
        max_timers = 2

        def setup(self):
            self.every(10, "a")
            self.every(10, "a")  # replaces, does not add
            self.every(10, "b")
            self.every(10, "c")

    ref = spawn(Greedy, "g")
    exit_ = spawn.exits.get(timeout=5)
    assert "more than 2 timers" in exit_.reason
    wait_for(lambda: not ref.is_alive(), timeout=5)


def test_unhandled_message_is_not_a_failure(spawn, caplog):
    class Picky(StockadeActor):
        @handles(Tick)
        def on_tick(self, tick):
            return "ok"

    spawn(Picky, "p")
    spawn.router.tell("p", Alert("INFO", "k", "t", "s", 0), "me")
    assert spawn.router.ask("p", Tick("x"), timeout=5.0) == "ok"
    assert spawn.exits.empty()


def test_base_exception_in_teardown_does_not_stop_other_actors(spawn):
    class BadTeardown(StockadeActor):
        def teardown(self):
            raise SystemExit(4)

    ref = spawn(BadTeardown, "bad")
    bystander = spawn(Dispatching, "bystander", out=queue.Queue())
    ref.stop(timeout=5.0)
    assert not spawn.exits.get(timeout=5).abnormal
    assert bystander.ask(Ping(), timeout=5.0) is True


def test_ask_needs_a_timeout(spawn):
    spawn(Dispatching, "d", out=queue.Queue())
    with pytest.raises(ValueError):
        spawn.router.ask("d", Tick("x"), timeout=None)
