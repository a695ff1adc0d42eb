"""Crash drills: `crash_now` crashes an instance through its mailbox with no
other message needed, and `times` crashes each new instance as it comes up,
so a drill can drive supervisors past their restart intensity up to the
tree's on_exhausted hook (the daemon's full liquidation)."""

from __future__ import annotations

import threading

import msgspec
import pytest
from supervision_probes import FAST, Probe
from waiting import wait_for

from stockade.codecs.messages import Tick
from stockade.supervisors.faults import FaultInjectionDisabled, FaultInjector
from stockade.supervisors.spec import ChildSpec
from stockade.supervisors.supervisor import supervisor_spec

# No heartbeat during these tests (an hour between pings): a crash armed for
# the next message would wait for a message that never comes.
QUIET = msgspec.structs.replace(FAST, heartbeat_interval_s=3600.0, heartbeat_timeout_s=3600.0)


def spec(name, **kwargs):
    return ChildSpec(name=name, start=Probe.start, shutdown_timeout_s=2.0, **kwargs)


def gen(tree, name):
    status = tree.router.status(name)
    return status.generation if status is not None and status.state == "up" and status.alive else None


def test_crash_now_needs_no_other_message(make_tree, rec):
    tree = make_tree(QUIET, [spec("a"), spec("b")])
    wait_for(lambda: gen(tree, "a") == 1 and gen(tree, "b") == 1, timeout=5)
    assert tree.faults.crash_now("a", tree.router.lookup("a")) is True
    wait_for(lambda: gen(tree, "a") == 2, timeout=5, what="a crashed and restarted without any message")
    assert tree.router.status("a").restarts == 1
    assert rec.got("a") == []  # it handled nothing: the fault message did it
    assert gen(tree, "b") == 1
    assert tree.faults.start_crashes() == {}

    # The armed mode is kept: it waits for the next message, then crashes.
    tree.faults.crash("a")
    assert tree.faults.pending() == {"a": "crash"}
    tree.router.tell("a", Tick("hello"), "test")
    wait_for(lambda: gen(tree, "a") == 3, timeout=5)


def test_crash_times_crashes_each_new_instance_as_it_comes_up(make_tree, rec):
    tree = make_tree(QUIET, [spec("a")])
    wait_for(lambda: gen(tree, "a") == 1, timeout=5)
    tree.faults.crash_now("a", tree.router.lookup("a"), times=3)
    wait_for(lambda: gen(tree, "a") == 4, timeout=10, what="three crashes, a fourth instance up")
    assert tree.router.status("a").restarts == 3
    assert tree.faults.start_crashes() == {}
    tree.router.tell("a", Tick("after"), "test")  # the drill is over: the fourth one stays
    wait_for(lambda: (4, "after") in rec.got("a"), timeout=5)


def test_a_crash_drill_past_intensity_escalates_up_to_on_exhausted(make_tree, rec):
    fired = threading.Event()
    reasons = []
    # inner gives up on x's second crash in its window; the root on inner's third failure.
    inner = msgspec.structs.replace(QUIET, max_restarts=1, period_s=60.0)
    root = msgspec.structs.replace(QUIET, max_restarts=2, period_s=60.0)
    tree = make_tree(
        root,
        [spec("a"), supervisor_spec("inner", inner, [spec("x")])],
        on_exhausted=lambda r: (reasons.append(r), fired.set()),
    )
    wait_for(lambda: gen(tree, "x") == 1, timeout=5)
    tree.faults.crash_now("x", tree.router.lookup("x"), times=3 * 2)
    assert fired.wait(20.0), f"not exhausted; inner at gen {gen(tree, 'inner')}, x at gen {gen(tree, 'x')}"
    assert "more than 2 restarts" in reasons[0] and "inner" in reasons[0]
    assert tree.faults.start_crashes() == {}  # exactly the six crashes it took
    wait_for(lambda: not tree.root_ref.is_alive(), timeout=10)
    assert not tree.healthy()


def test_crash_now_between_instances_crashes_the_next_one(make_tree, rec):
    tree = make_tree(QUIET, [spec("a")])
    wait_for(lambda: gen(tree, "a") == 1, timeout=5)
    assert tree.faults.crash_now("a", None, times=1) is False  # no live instance to tell now
    assert tree.faults.start_crashes() == {"a": 1}
    tree.router.tell("a", Tick("boom"), "test")  # a's next instance takes it as it comes up
    wait_for(lambda: gen(tree, "a") == 3, timeout=10)
    assert tree.faults.start_crashes() == {}


def test_crash_drills_are_refused_when_disabled_and_bounded():
    with pytest.raises(FaultInjectionDisabled):
        FaultInjector().crash_now("a", None)
    faults = FaultInjector(enabled=True)
    for times in (0, 101):
        with pytest.raises(ValueError, match="crash times"):
            faults.crash_now("a", None, times=times)
    faults.crash_now("a", None, times=5)
    faults.release()  # also ends a drill
    assert faults.start_crashes() == {}
