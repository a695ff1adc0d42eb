"""Pooled actors (supervisors/pool.py): many actors on a few threads, supervised exactly as before."""

import threading

import msgspec
import pytest
from supervision_probes import FAST, PooledProbe
from waiting import wait_for

from stockade.codecs.messages import Tick
from stockade.supervisors.pool import POOL_EXTRA, ActorPool
from stockade.supervisors.spec import ChildSpec
from stockade.supervisors.supervisor import supervisor_spec


def spec(name):
    return ChildSpec(name=name, start=PooledProbe.start, shutdown_timeout_s=2.0)


def gen(tree, name):
    status = tree.router.status(name)
    return status.generation if status is not None and status.state == "up" and status.alive else None


@pytest.fixture
def pool():
    """Pools stopped after the test's trees (ask for it before `make_tree`)."""
    pools = []

    def make(threads, **kwargs):
        p = ActorPool(threads, name="test-pool", **kwargs)
        pools.append(p)
        return p

    yield make
    for p in pools:
        p.stop(timeout=5.0)


def test_a_hundred_actors_run_on_the_pools_threads_each_in_its_own_order(pool, make_tree, rec):
    p = pool(2)
    before = threading.active_count()
    names = [f"p{i}" for i in range(100)]
    tree = make_tree(FAST, [supervisor_spec("group", FAST, [spec(n) for n in names])], extras={POOL_EXTRA: p})
    wait_for(lambda: all(gen(tree, n) == 1 for n in names), timeout=30, what="100 pooled actors up")
    for i in range(20):  # interleaved across actors: each keeps its own order
        for n in names:
            tree.router.tell(n, Tick(f"m{i}"), "test")
    wait_for(lambda: all(len(rec.got(n)) == 20 for n in names), timeout=30, what="every message handled")
    for n in names:
        assert [w for _, w in rec.got(n)] == [f"m{i}" for i in range(20)], n
    # Two workers and a timer thread for 100 actors (the supervisors keep their
    # own threads: three of them, plus their heartbeat timers). A thread per
    # actor would be 100 more.
    assert p.thread_count() == 3
    assert threading.active_count() - before < 20


def test_a_crash_restarts_only_that_actor_and_what_was_queued_reaches_its_successor(pool, make_tree, rec):
    p = pool(1)
    slow = msgspec.structs.replace(FAST, backoff_initial_s=0.3, backoff_max_s=0.3, jitter=0.0)
    tree = make_tree(slow, [spec("a"), spec("b")], extras={POOL_EXTRA: p})
    wait_for(lambda: gen(tree, "a") == 1 and gen(tree, "b") == 1, timeout=5)
    tree.router.tell("a", Tick("boom"), "test")
    for i in range(3):
        tree.router.tell("a", Tick(f"m{i}"), "test")
    wait_for(lambda: gen(tree, "a") == 2, timeout=5, what="a restarted")
    wait_for(lambda: len(rec.got("a")) == 4, timeout=5)
    assert rec.got("a") == [(1, "boom"), (2, "m0"), (2, "m1"), (2, "m2")]
    assert gen(tree, "b") == 1 and rec.of("stop", "b") == []
    assert tree.router.dead_letters == 0


def test_a_hung_actor_costs_the_pool_no_capacity_and_is_replaced(pool, make_tree, rec):
    # One worker: without replacing the stuck worker, b would never run again.
    p = pool(1, hang_after_s=0.2, spare=2)
    tree = make_tree(FAST, [spec("a"), spec("b")], extras={POOL_EXTRA: p})
    wait_for(lambda: gen(tree, "a") == 1 and gen(tree, "b") == 1, timeout=5)
    tree.faults.hang("a", 30.0)
    tree.router.tell("a", Tick("x"), "test")  # a's worker is stuck in it
    wait_for(lambda: tree.faults.hanging() == ["a"], timeout=5)
    tree.router.tell("b", Tick("still-served"), "test")
    wait_for(lambda: (1, "still-served") in rec.got("b"), timeout=10, what="b served by a replacement worker")
    assert p.replaced >= 1
    wait_for(lambda: gen(tree, "a") == 2, timeout=10, what="hung a replaced by its supervisor")
    tree.router.tell("a", Tick("y"), "test")
    wait_for(lambda: (2, "y") in rec.got("a"), timeout=5)
    # Bounded: one worker, one timer thread, the abandoned worker still stuck.
    assert p.thread_count() <= 1 + 1 + 2
    tree.faults.release()  # the zombie returns; its abandoned worker ends
    wait_for(lambda: p.thread_count() == 2, timeout=10, what="the abandoned worker ended")
    assert gen(tree, "b") == 1


def test_stuck_workers_past_the_spare_cap_are_not_replaced(pool, make_tree, rec):
    p = pool(1, hang_after_s=0.1, spare=1)
    tree = make_tree(FAST, [spec("a"), spec("b"), spec("c")], extras={POOL_EXTRA: p})
    wait_for(lambda: all(gen(tree, n) == 1 for n in "abc"), timeout=5)
    tree.router.tell("a", Tick("block"), "test")
    wait_for(lambda: p.replaced == 1, timeout=5, what="first stuck worker replaced")
    tree.router.tell("b", Tick("block"), "test")
    wait_for(lambda: p.at_cap, timeout=5, what="the second stuck worker left unreplaced")
    tree.router.tell("c", Tick("waits"), "test")
    assert p.thread_count() <= 1 + 1 + 1
    assert p.replaced == 1
    rec.gate.set()  # both handlers return: c runs on what is left
    wait_for(lambda: (1, "waits") in rec.got("c") or (2, "waits") in rec.got("c"), timeout=10)


def test_declared_bounded_work_is_busy_not_stuck(pool):
    from stockade.supervisors import fence
    from stockade.supervisors.fence import FenceToken
    from stockade.supervisors.pool import PooledInbox

    p = pool(1, hang_after_s=0.05)
    release = threading.Event()

    class Busy:  # the least a pooled inbox runs: a fence token and pykka's hooks
        def __init__(self, seconds):
            self.fence = FenceToken("busy", 1, lambda: True)
            self.actor_stopped = threading.Event()
            self.seconds = seconds
            self.name = "busy"

        def _actor_loop_setup(self):
            with fence.busy(self.seconds, "a slow bounded call"):
                release.wait(10.0)
            self.actor_stopped.set()

    inbox = PooledInbox()
    inbox.attach(p, Busy(30.0))
    wait_for(lambda: inbox.actor.fence.busy_until > 0, timeout=5)
    # Many watchdog rounds past hang_after_s: declared busy for 30 s, so not replaced.
    other = [0]
    p.timer(0.02, lambda: other.__setitem__(0, other[0] + 1), None, "rounds")
    wait_for(lambda: other[0] >= 30, timeout=10, what="watchdog rounds")  # 0.6 s > hang_after_s many times
    assert p.replaced == 0
    release.set()
    # Past its declared bound the same work counts as stuck.
    release.clear()
    inbox2 = PooledInbox()
    inbox2.attach(p, Busy(0.1))
    wait_for(lambda: p.replaced == 1, timeout=10, what="overrun busy block replaced")
    release.set()


def test_a_zombie_that_wakes_up_cannot_act(pool, make_tree, rec):
    p = pool(2)
    tree = make_tree(FAST, [spec("a"), spec("sink")], extras={POOL_EXTRA: p})
    wait_for(lambda: gen(tree, "a") == 1 and gen(tree, "sink") == 1, timeout=5)
    tree.router.tell("a", Tick("block"), "test")
    tree.router.tell("a", Tick("queued"), "test")
    wait_for(lambda: gen(tree, "a") == 2, timeout=5, what="hung a replaced")
    wait_for(lambda: (2, "queued") in rec.got("a"), timeout=5)
    rec.gate.set()  # the zombie wakes up on its pool worker and tries to send
    wait_for(lambda: rec.of("woke", "a"), timeout=5)
    wait_for(lambda: tree.router.dead_letter_counts().get("fenced") == 1, timeout=5)
    assert [w for _, w in rec.got("sink")] == []


def test_timers_tick_on_the_pools_timer_thread_and_stop_with_the_actor(pool, make_tree, rec):
    p = pool(1)
    fired_on: list[str] = []
    t = p.timer(0.02, lambda: fired_on.append(threading.current_thread().name), None, "t")
    wait_for(lambda: len(fired_on) >= 3, timeout=5)
    t.cancel()
    assert set(fired_on) == {"test-pool-timers"}
    stopped = threading.Event()
    count = [0]

    def fire():
        count[0] += 1

    p.timer(0.02, fire, stopped, "s")
    wait_for(lambda: count[0] >= 2, timeout=5)
    stopped.set()
    seen = count[0]
    other = [0]

    def fire_other():
        other[0] += 1

    p.timer(0.02, fire_other, None, "other")
    wait_for(lambda: other[0] >= 5, timeout=5, what="five more intervals")
    assert count[0] <= seen + 1  # at most one already due as it was stopped


def test_stop_ends_every_thread():
    p = ActorPool(3, name="stop-pool")
    assert p.thread_count() == 4
    assert p.stop(timeout=5.0)
    assert p.thread_count() == 0
