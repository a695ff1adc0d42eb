"""Fence tokens and busy deadlines with real actors, real lmdb and the real
alpaca-py client against the in-process venue.

A handler that was already running when its instance was replaced (found
hung) must not change anything when it wakes up: its storage write, journal
entry, tell and REST call are each refused, counted and logged once. A
handler inside a slow but bounded REST call is busy, not hung; a real hang
(and a "bounded" call that overruns its own bound) is still replaced.
"""

from __future__ import annotations

import logging
import time

import pytest
from actor_probes import venue_services
from supervision_probes import FAST
from waiting import wait_for

from stockade.codecs.messages import Tick
from stockade.codecs.records import PositionRecord, Reconciled
from stockade.config.settings import Settings
from stockade.supervisors import fence
from stockade.supervisors.base import StockadeActor, handles
from stockade.supervisors.fence import Fenced, FenceToken
from stockade.supervisors.health import Health, silent_for
from stockade.supervisors.router import Router
from stockade.supervisors.spec import ChildSpec
from stockade.venue.faults import Faults


class Worker(StockadeActor):
    """Ticks: "act" (wait for the gate, then try every kind of side effect),
    "slow" (one REST read), "overrun" (declare 0.2 s of bounded work, then block)."""

    def setup(self) -> None:
        self.svc = self.ctx.extra("services")
        self.rec = self.ctx.extra("rec")
        self.client = self.svc.broker.trading_client()  # a TimeoutSession, as every actor's
        self.rec.add("start", self.name, self.generation)

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what == "slow":
            self.client.get_account()
            self.rec.add("answered", self.name, self.generation)
        elif tick.what == "overrun":
            with fence.busy(0.2, "a call that claims 0.2 s"):
                self.rec.gate.wait(30.0)
        elif tick.what == "act":
            self.rec.add("blocked", self.name, self.generation)
            self.rec.gate.wait(30.0)  # replaced as hung meanwhile
            outcomes = {
                kind: self._try(attempt)
                for kind, attempt in (
                    ("storage", self._write_ledger),
                    ("journal", self._journal),
                    ("tell", lambda: self.tell("sink", Tick("late"))),
                    ("rest", self._submit),
                )
            }
            self.rec.add("outcomes", self.name, self.generation, outcomes)
            self._write_ledger()  # not caught: the handler unwinds here
            self.rec.add("carried-on", self.name, self.generation)

    @staticmethod
    def _try(attempt) -> str:
        try:
            attempt()
        except Fenced:
            return "refused"
        return "done"

    def _write_ledger(self) -> None:
        self.svc.store.positions.put(
            "MSFT", PositionRecord(symbol="MSFT", qty=23, avg_entry_price=400.0, updated_ns=time.time_ns())
        )

    def _journal(self) -> None:
        self.svc.store.journal.append(
            Reconciled(ts_ns=time.time_ns(), positions=1, open_orders=0, mismatches=("MSFT: ledger 0 vs broker 23",))
        )

    def _submit(self) -> None:
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import LimitOrderRequest

        # A buy far below the market: it would rest at the venue for anyone to see.
        self.client.submit_order(
            LimitOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, limit_price=1.0, time_in_force=TimeInForce.GTC)
        )


class Sink(StockadeActor):
    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        self.ctx.extra("rec").add("got", self.name, self.generation, tick.what)


def gen(tree, name):
    status = tree.router.status(name)
    return status.generation if status is not None and status.state == "up" and status.alive else None


def children():
    return [
        ChildSpec(name="worker", start=Worker.start, shutdown_timeout_s=2.0, start_timeout_s=10.0),
        ChildSpec(name="sink", start=Sink.start, shutdown_timeout_s=2.0),
    ]


@pytest.fixture
def svc(tmp_path):
    with venue_services(tmp_path / "data", Settings(), seed=11) as svc:
        yield svc


def test_a_replaced_instance_can_neither_write_nor_journal_nor_tell_nor_reach_the_broker(make_tree, rec, svc, caplog):
    caplog.set_level(logging.INFO)
    tree = make_tree(FAST, children(), extras={"services": svc})
    wait_for(lambda: gen(tree, "worker") == 1 and gen(tree, "sink") == 1, timeout=10)
    tree.router.tell("worker", Tick("act"), "test")
    wait_for(lambda: rec.of("blocked", "worker"), timeout=10)
    wait_for(lambda: gen(tree, "worker") == 2, timeout=10, what="the blocked worker replaced as hung")
    journal_before = svc.store.journal.last_seq()

    rec.gate.set()  # the old handler wakes up and carries on with its stale work
    ((name, generation, outcomes),) = wait_for(lambda: rec.of("outcomes"), timeout=10)
    assert (name, generation) == ("worker", 1)
    assert outcomes == {"storage": "refused", "journal": "refused", "tell": "refused", "rest": "refused"}

    # Nothing it tried happened: no ledger row, no journal entry, no message, no order at the venue.
    assert svc.store.positions.get("MSFT") is None
    assert svc.store.journal.last_seq() == journal_before
    own_client = svc.broker.trading_client()  # the test's thread: no token, not fenced
    from alpaca.trading.enums import QueryOrderStatus
    from alpaca.trading.requests import GetOrdersRequest

    assert own_client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL)) == []
    # The uncaught refusal unwound the handler; it is not a failure of anyone.
    wait_for(lambda: tree.router.refusal_counts().get("worker", {}).get("storage") == 2, timeout=10)
    assert rec.of("carried-on") == []
    assert [w for _, _, w in rec.of("got", "sink")] == []

    # Counted per kind, visible in the actor's status, logged once.
    assert tree.router.refusal_counts() == {"worker": {"storage": 2, "journal": 1, "tell": 1, "rest": 1}}
    assert tree.router.status("worker").refused == 5
    assert tree.router.dead_letter_counts().get("fenced") == 1  # the refused tell
    fenced_logs = [r for r in caplog.records if "is fenced (replaced)" in r.getMessage()]
    assert len(fenced_logs) == 1 and "worker gen 1" in fenced_logs[0].getMessage()
    assert not [r for r in caplog.records if "failed in" in r.getMessage()]

    # The successor acts normally.
    assert gen(tree, "worker") == 2 and tree.router.status("worker").restarts == 1
    tree.router.tell("worker", Tick("slow"), "test")
    wait_for(lambda: ("worker", 2, None) in rec.of("answered"), timeout=10)


def test_a_slow_bounded_rest_call_is_busy_not_hung_while_a_real_hang_is_replaced(make_tree, rec, tmp_path):
    # Every REST answer takes 1 s, more than three times the 0.3 s heartbeat timeout.
    with venue_services(tmp_path / "data", Settings(), seed=12, faults=Faults(latency_ms=1000.0)) as svc:
        tree = make_tree(FAST, children(), extras={"services": svc})
        wait_for(lambda: gen(tree, "worker") == 1, timeout=10)
        for _ in range(2):
            tree.router.tell("worker", Tick("slow"), "test")
        wait_for(lambda: len(rec.of("answered", "worker")) == 2, timeout=30, what="two slow calls answered")
        wait_for(lambda: tree.router.status("worker").mailbox == 0, timeout=10)
        assert gen(tree, "worker") == 1 and tree.router.status("worker").restarts == 0
        assert rec.of("answered", "worker") == [("worker", 1, None)] * 2
        wait_for(tree.healthy, timeout=10)

        tree.faults.hang("worker", 30.0)  # silence with no bounded work declared: a hang
        wait_for(lambda: gen(tree, "worker") == 2, timeout=10, what="hung worker replaced")


def test_bounded_work_that_overruns_its_own_bound_is_a_hang(make_tree, rec, svc):
    tree = make_tree(FAST, children(), extras={"services": svc})
    wait_for(lambda: gen(tree, "worker") == 1, timeout=10)
    tree.router.tell("worker", Tick("overrun"), "test")
    wait_for(lambda: gen(tree, "worker") == 2, timeout=10, what="overrunning worker replaced")


# ---- the pure parts ----------------------------------------------------------------


def test_silent_for_counts_from_the_ping_or_the_end_of_busy_work():
    assert silent_for(now=10.0, ping_sent=8.0, busy_until=0.0) == 2.0  # never busy
    assert silent_for(now=10.0, ping_sent=8.0, busy_until=15.0) < 0  # inside bounded work
    assert silent_for(now=10.0, ping_sent=8.0, busy_until=9.5) == 0.5  # work ended (or its bound passed) at 9.5
    assert silent_for(now=10.0, ping_sent=9.0, busy_until=5.0) == 1.0  # busy before the ping: irrelevant


def test_busy_blocks_nest_and_restart_the_clock_when_they_end():
    token = FenceToken("a", 1, lambda: True)
    assert token.busy_until == 0.0
    with token.busy(60.0, "outer"):
        outer = token.busy_until
        assert outer > time.monotonic() + 50
        with token.busy(1.0, "inner"):
            assert token.busy_until == outer  # the longer deadline holds
        assert token.busy_until == outer
    ended = token.busy_until
    assert ended <= time.monotonic() and outer - ended > 50
    with pytest.raises(ValueError):
        with token.busy(0.0, "nothing"):
            pass


def test_health_does_not_call_a_busy_child_overdue():
    now = [100.0]
    health = Health(clock=lambda: now[0])
    token = FenceToken("a", 1, lambda: True)
    token.busy_until = 130.0  # as if inside a call bounded until then
    health.ping_sent("a", 3.0, token)
    health.ping_sent("b", 3.0)
    now[0] = 110.0
    assert health.report()["overdue_heartbeats"] == ["b"]
    token.busy_until = 111.0  # the call returned at 111
    now[0] = 113.0
    assert health.report()["overdue_heartbeats"] == ["b"]
    now[0] = 114.5
    assert health.report()["overdue_heartbeats"] == ["a", "b"]


def test_a_revoked_token_refuses_counts_and_logs_once(caplog):
    current = [True]
    counted: list[tuple[str, str]] = []
    token = FenceToken("a", 3, lambda: current[0], lambda name, kind: counted.append((name, kind)))
    token.check("storage")  # current: nothing happens
    current[0] = False
    for kind in ("storage", "rest"):
        with pytest.raises(Fenced):
            token.check(kind)
    assert counted == [("a", "storage"), ("a", "rest")]
    assert len([r for r in caplog.records if "is fenced" in r.getMessage()]) == 1
    # Outside any actor thread there is no token: nothing is checked.
    fence.check("storage")


def test_tokens_are_revoked_by_the_supervisors_own_moves():
    import pykka

    router = Router()
    refs = [pykka.ThreadingActor.start(), pykka.ThreadingActor.start()]
    try:
        sup = router.next_generation("sup")
        router.register("sup", refs[0], sup)
        kid = router.next_generation("kid")
        router.register("kid", refs[1], kid, parent="sup")
        sup_token, kid_token = router.token("sup", sup), router.token("kid", kid)
        assert not sup_token.fenced and not kid_token.fenced
        router.fence("sup", sup)  # a hung supervisor: its whole subtree is fenced with it
        assert sup_token.fenced and kid_token.fenced
        again = router.next_generation("kid")
        assert not router.token("kid", again).fenced  # the successor may act
    finally:
        for ref in refs:
            ref.stop(timeout=5)
