"""Supervisors with real (small) actors: restarts, strategies, hangs, fencing, escalation."""

import threading

import msgspec
import pykka
from supervision_probes import FAST, Probe
from waiting import wait_for

from stockade.codecs.messages import Tick
from stockade.supervisors.spec import ChildSpec
from stockade.supervisors.supervisor import supervisor_spec


def spec(name, **kwargs):
    return ChildSpec(name=name, start=Probe.start, shutdown_timeout_s=2.0, **kwargs)


def policy(**changes):
    return msgspec.structs.replace(FAST, **changes)


def gen(tree, name):
    status = tree.router.status(name)
    return status.generation if status is not None and status.state == "up" and status.alive else None


def test_crashed_child_is_restarted_and_reachable_under_the_same_name(make_tree, rec):
    tree = make_tree(FAST, [spec("a"), spec("b")])
    wait_for(lambda: gen(tree, "a") == 1 and gen(tree, "b") == 1, timeout=5)
    tree.router.tell("a", Tick("boom"), "test")
    wait_for(lambda: gen(tree, "a") == 2, timeout=5, what="a restarted")
    tree.router.tell("a", Tick("hello"), "test")
    wait_for(lambda: (2, "hello") in rec.got("a"), timeout=5)
    assert tree.router.status("a").restarts == 1
    assert gen(tree, "b") == 1  # one_for_one: the sibling is untouched
    assert rec.of("stop", "b") == []


def test_messages_sent_during_the_restart_reach_the_new_instance_in_order(make_tree, rec):
    slow = policy(backoff_initial_s=0.3, backoff_max_s=0.3, jitter=0.0)
    tree = make_tree(slow, [spec("a")])
    wait_for(lambda: gen(tree, "a") == 1, timeout=5)
    tree.router.tell("a", Tick("boom"), "test")
    wait_for(lambda: tree.router.status("a").state == "down", timeout=5)
    for i in range(5):
        assert tree.router.tell("a", Tick(f"m{i}"), "test")
    assert tree.router.status("a").buffered == 5  # held during the 0.3 s backoff
    wait_for(lambda: len(rec.got("a")) == 6, timeout=5)
    assert rec.got("a")[1:] == [(2, f"m{i}") for i in range(5)]
    assert tree.router.dead_letters == 0


def test_rest_for_one_restarts_the_failed_and_later_siblings_in_order(make_tree, rec):
    tree = make_tree(policy(strategy="rest_for_one"), [spec("a"), spec("b"), spec("c")])
    wait_for(lambda: len(rec.of("start")) == 3, timeout=5)
    tree.router.tell("b", Tick("boom"), "test")
    wait_for(lambda: gen(tree, "b") == 2 and gen(tree, "c") == 2, timeout=5)
    assert gen(tree, "a") == 1
    after_crash = rec.sequence("start", "stop")[3:]
    assert after_crash == [("stop", "b", 1), ("stop", "c", 1), ("start", "b", 2), ("start", "c", 2)]


def test_one_for_all_stops_all_in_reverse_and_restarts_all_in_order(make_tree, rec):
    tree = make_tree(policy(strategy="one_for_all"), [spec("a"), spec("b"), spec("c")])
    wait_for(lambda: len(rec.of("start")) == 3, timeout=5)
    tree.router.tell("b", Tick("boom"), "test")
    wait_for(lambda: all(gen(tree, n) == 2 for n in "abc"), timeout=5)
    after_crash = rec.sequence("start", "stop")[3:]
    assert after_crash == [
        ("stop", "b", 1),  # the crash itself
        ("stop", "c", 1),  # then the siblings, in reverse start order
        ("stop", "a", 1),
        ("start", "a", 2),
        ("start", "b", 2),
        ("start", "c", 2),
    ]
    assert [tree.router.status(n).restarts for n in "abc"] == [1, 1, 1]


def test_hung_actor_is_detected_by_heartbeat_and_replaced(make_tree, rec):
    tree = make_tree(FAST, [spec("a"), spec("b")])
    wait_for(lambda: gen(tree, "a") == 1, timeout=5)
    tree.faults.hang("a", 30.0)
    wait_for(lambda: gen(tree, "a") == 2, timeout=5, what="hung a replaced")
    assert tree.faults.hanging() == ["a"]  # the zombie is still stuck...
    tree.router.tell("a", Tick("x"), "test")
    wait_for(lambda: (2, "x") in rec.got("a"), timeout=5)  # ...but the name works
    wait_for(tree.healthy, timeout=5)
    assert gen(tree, "b") == 1


def test_zombie_that_wakes_up_cannot_act(make_tree, rec):
    tree = make_tree(FAST, [spec("a"), spec("sink")])
    wait_for(lambda: gen(tree, "a") == 1 and gen(tree, "sink") == 1, timeout=5)
    tree.router.tell("a", Tick("block"), "test")  # handler stuck in "I/O"
    tree.router.tell("a", Tick("queued"), "test")  # behind it in the mailbox
    wait_for(lambda: gen(tree, "a") == 2, timeout=5, what="hung a replaced")
    # What was queued behind the hung message went to the new instance.
    wait_for(lambda: (2, "queued") in rec.got("a"), timeout=5)
    rec.gate.set()  # the zombie wakes up and tries to send
    wait_for(lambda: rec.of("woke", "a"), timeout=5)
    wait_for(lambda: tree.router.dead_letter_counts().get("fenced") == 1, timeout=5)
    assert [w for _, w in rec.got("sink")] == []
    # The new instance's sends go through.
    tree.router.tell("a", Tick("relay:sink:fresh"), "test")
    wait_for(lambda: (1, "fresh") in rec.got("sink"), timeout=5)


def test_repeated_crashes_past_intensity_escalate_to_the_parent(make_tree, rec):
    inner = policy(max_restarts=1, period_s=30.0)
    tree = make_tree(policy(max_restarts=5), [spec("a"), supervisor_spec("inner", inner, [spec("x"), spec("y")])])
    wait_for(lambda: gen(tree, "x") == 1 and gen(tree, "y") == 1, timeout=5)
    tree.router.tell("x", Tick("boom"), "test")
    wait_for(lambda: gen(tree, "x") == 2, timeout=5)
    assert gen(tree, "inner") == 1
    tree.router.tell("x", Tick("boom"), "test")  # second in the window: inner gives up
    wait_for(lambda: gen(tree, "inner") == 2 and gen(tree, "x") == 3 and gen(tree, "y") == 2, timeout=5)
    assert tree.router.status("inner").restarts == 1
    # inner stopped its children before failing: y's gen 1 stopped in an orderly way.
    assert ("y", 1, None) in rec.of("stop", "y")
    assert gen(tree, "a") == 1  # the root's other child is untouched
    assert tree.exhausted_reasons == []
    wait_for(tree.healthy, timeout=5)  # a restarted supervisor is healthy again
    tree.router.tell("x", Tick("after"), "test")
    wait_for(lambda: (3, "after") in rec.got("x"), timeout=5)


def test_root_past_intensity_stops_everything_and_calls_on_exhausted(make_tree, rec):
    fired = threading.Event()
    reasons = []

    def on_exhausted(reason):
        reasons.append(reason)
        fired.set()

    tree = make_tree(policy(max_restarts=1), [spec("a"), spec("b")], on_exhausted=on_exhausted)
    wait_for(lambda: gen(tree, "a") == 1, timeout=5)
    tree.router.tell("a", Tick("boom"), "test")
    wait_for(lambda: gen(tree, "a") == 2, timeout=5)
    tree.router.tell("a", Tick("boom"), "test")
    assert fired.wait(5.0)
    assert "more than 1 restarts" in reasons[0]
    wait_for(lambda: not tree.root_ref.is_alive(), timeout=5)
    assert ("b", 1, None) in rec.of("stop", "b")
    assert not tree.healthy()
    assert tree.router.tell("a", Tick("late"), "test") is False  # retired: dropped and counted
    assert tree.router.dead_letter_counts().get("retired", 0) >= 1


def test_critical_child_failure_restarts_it_and_calls_on_exhausted(make_tree, rec):
    fired = threading.Event()
    reasons = []
    tree = make_tree(
        FAST, [spec("estop", critical=True), spec("b")], on_exhausted=lambda r: (reasons.append(r), fired.set())
    )
    wait_for(lambda: gen(tree, "estop") == 1, timeout=5)
    tree.router.tell("estop", Tick("boom"), "test")
    assert fired.wait(5.0)
    assert reasons[0].startswith("critical child estop failed")
    wait_for(lambda: gen(tree, "estop") == 2, timeout=5)


def test_exception_in_setup_is_a_failure_and_the_child_is_restarted(make_tree, rec):
    rec.setup_raises[("a", 1)] = RuntimeError("cannot open storage")
    rec.setup_raises[("b", 1)] = SystemExit(2)
    tree = make_tree(FAST, [spec("a"), spec("b"), spec("c")])
    tree.router.tell("a", Tick("early"), "test")
    wait_for(lambda: gen(tree, "a") == 2 and gen(tree, "b") == 2, timeout=5)
    wait_for(lambda: (2, "early") in rec.got("a"), timeout=5)  # held across the failed start
    assert gen(tree, "c") == 1
    assert tree.root_ref.is_alive()


def test_system_exit_in_a_handler_kills_only_that_actor(make_tree, rec):
    tree = make_tree(FAST, [spec("a"), spec("b")])
    wait_for(lambda: gen(tree, "a") == 1 and gen(tree, "b") == 1, timeout=5)
    b_ref = tree.router.lookup("b")
    tree.router.tell("a", Tick("exit"), "test")
    wait_for(lambda: gen(tree, "a") == 2, timeout=5)
    assert b_ref.is_alive() and b_ref in pykka.ActorRegistry.get_all()
    assert tree.root_ref.is_alive()
    assert gen(tree, "b") == 1


def test_injected_crash_is_restarted(make_tree, rec):
    tree = make_tree(FAST, [spec("a")])
    wait_for(lambda: gen(tree, "a") == 1, timeout=5)
    tree.faults.crash("a")  # trips on the next message, a heartbeat ping at the latest
    wait_for(lambda: gen(tree, "a") == 2, timeout=5)


def test_temporary_child_is_not_restarted_and_its_name_retires(make_tree, rec):
    tree = make_tree(FAST, [spec("t", restart="temporary"), spec("b")])
    wait_for(lambda: gen(tree, "t") == 1, timeout=5)
    tree.router.tell("t", Tick("boom"), "test")
    wait_for(lambda: tree.router.status("t").state == "retired", timeout=5)
    assert tree.router.tell("t", Tick("x"), "test") is False
    assert gen(tree, "b") == 1


def test_transient_child_restarts_only_after_an_abnormal_exit(make_tree, rec):
    tree = make_tree(FAST, [spec("t", restart="transient")])
    wait_for(lambda: gen(tree, "t") == 1, timeout=5)
    tree.router.tell("t", Tick("boom"), "test")
    wait_for(lambda: gen(tree, "t") == 2, timeout=5)
    tree.router.tell("t", Tick("stop"), "test")  # a normal exit
    wait_for(lambda: tree.router.status("t").state == "retired", timeout=5)
    assert rec.of("start", "t") == [("t", 1, None), ("t", 2, None)]


def test_crashed_supervisor_is_restarted_with_a_fresh_subtree(make_tree, rec):
    tree = make_tree(FAST, [supervisor_spec("sub", FAST, [spec("x"), spec("y")])])
    wait_for(lambda: gen(tree, "x") == 1 and gen(tree, "y") == 1, timeout=5)
    tree.faults.crash("sub")
    wait_for(lambda: gen(tree, "sub") == 2 and gen(tree, "x") == 2 and gen(tree, "y") == 2, timeout=5)
    # The failed supervisor stopped its children, in reverse order, before going.
    assert rec.sequence("stop")[:2] == [("stop", "y", 1), ("stop", "x", 1)]


def test_hung_supervisor_is_replaced_and_its_old_subtree_fenced(make_tree, rec):
    tree = make_tree(FAST, [spec("sink"), supervisor_spec("sub", FAST, [spec("x")])])
    wait_for(lambda: gen(tree, "x") == 1, timeout=5)
    tree.faults.hang("sub", 30.0)
    wait_for(lambda: gen(tree, "sub") == 2 and gen(tree, "x") == 2, timeout=5, what="subtree replaced")
    wait_for(lambda: ("x", 1, None) in rec.of("stop", "x"), timeout=5)  # old x stopped, not leaked
    tree.faults.release()  # the old supervisor wakes: it must not take x back
    tree.router.tell("x", Tick("relay:sink:hi"), "test")
    wait_for(lambda: (1, "hi") in rec.got("sink"), timeout=5)
    assert gen(tree, "x") == 2
    wait_for(tree.healthy, timeout=5)


def test_stop_is_in_reverse_start_order_children_before_parents(make_tree, rec):
    tree = make_tree(FAST, [spec("a"), supervisor_spec("sub", FAST, [spec("b"), spec("c")]), spec("d")])
    wait_for(lambda: all(gen(tree, n) == 1 for n in "abcd"), timeout=5)
    assert tree.stop(timeout=10.0)
    assert [n for _, n, _ in rec.sequence("stop")] == ["d", "c", "b", "a"]
    assert not tree.router.lookup("a")
    assert all(not ref.is_alive() for ref in [tree.root_ref])


def test_health_and_snapshot(make_tree, rec):
    tree = make_tree(FAST, [spec("a"), supervisor_spec("sub", FAST, [spec("b")])])
    wait_for(lambda: gen(tree, "b") == 1, timeout=5)
    wait_for(tree.healthy, timeout=5)
    snap = {s.name: s for s in tree.snapshot()}
    assert set(snap) == {"root", "a", "sub", "b"}
    assert snap["b"].parent == "sub" and snap["a"].parent == "root"
    assert all(s.alive and s.restarts == 0 and s.generation == 1 for s in snap.values())
    report = tree.health_report()
    assert report == {"healthy": True, "exhausted": {}, "stale_supervisors": [], "overdue_heartbeats": []}


def test_child_that_dies_without_a_report_is_found_by_heartbeat(make_tree, rec):
    tree = make_tree(FAST, [ChildSpec(name="a", start=Probe.start, shutdown_timeout_s=0.2)])
    wait_for(lambda: gen(tree, "a") == 1, timeout=5)
    # Marked stopped behind everyone's back: no teardown, no exit report.
    tree.router.lookup("a").actor_stopped.set()
    wait_for(lambda: gen(tree, "a") == 2, timeout=5, what="silent death noticed")
