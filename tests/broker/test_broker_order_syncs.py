"""Exactly one fsync per order: the intent's, before the broker hears of it.

The order manager's exactly-once argument needs the intent on disk before
the REST call; everything after it (submitted, acknowledged, state changes,
fills) is committed without a sync and re-derived from the broker after a
power loss. A sync-on-commit environment would fsync all of them.

Syncs are counted by wrapping `Environment.sync`, the only call that makes
a commit durable. In the daemon's default "safe" sync mode lmdb also flushes
each commit's data pages itself (MDB_NOMETASYNC: a power cut cannot corrupt
the file) but not its meta page, so a commit without `Environment.sync` may
still be undone by a power cut: the explicit syncs are the durability points,
and there is one per order. In "fast" mode lmdb flushes nothing by itself.
A real daemon (in-process, embedded venue) places the orders with the real
alpaca-py client.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback

import pytest
from waiting import wait_for

from stockade.codecs.messages import OrderIntent
from stockade.codecs.records import IntentJournaled, OrderSubmitted
from stockade.config.settings import settings_from_dict
from stockade.storage.environment import Environment

SYMBOLS = ("AAPL", "MSFT")
ORDER_MANAGER = "actors/order_manager.py"


class SyncLog:
    """Which functions of the order manager were on the stack of each sync."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, ...]] = []

    def record(self) -> None:
        stack = tuple(f.name for f in traceback.extract_stack() if f.filename.endswith(ORDER_MANAGER))
        with self.lock:
            self.calls.append(stack)

    def order_manager(self) -> list[tuple[str, ...]]:
        with self.lock:
            return [c for c in self.calls if c]

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()


@pytest.fixture
def syncs(monkeypatch):
    log = SyncLog()
    real = Environment.sync

    def counted(self: Environment) -> None:
        log.record()
        real(self)

    monkeypatch.setattr(Environment, "sync", counted)
    return log


@pytest.fixture
def daemon(embedded_daemon, syncs):
    return embedded_daemon(SYMBOLS)


def _intent(daemon, i: int) -> OrderIntent:
    symbol = SYMBOLS[i % len(SYMBOLS)]
    q = daemon.venue.call(lambda: daemon.venue.ctx.exchange.quotes[symbol])
    # Brackets: the position is protected from the start, so the reconciler
    # adds no protective stop (an intent of its own) during the test.
    return OrderIntent(
        intent_id=f"s{i:02d}",
        symbol=symbol,
        side="buy",
        qty=3,
        order_type="market",
        limit_price=None,
        take_profit=round(q.ask * 1.2, 2),
        stop_loss=round(q.bid * 0.8, 2),
        reason="test",
        proposal_id="",
        quote_recv_ns=time.time_ns(),
    )


@pytest.mark.parametrize(
    ("kw", "data_sync"),
    [
        ({}, True),  # "safe", the default: every commit flushes its data pages, never its meta page
        ({"sync_mode": "safe"}, True),
        ({"sync_mode": "fast"}, False),  # MDB_NOSYNC: only the durable writes flush
        ({"sync_durable": False}, False),  # a store rebuilt from its inputs (a backtest's)
    ],
)
def test_lmdb_sync_flags_per_mode(tmp_path, kw, data_sync):
    env = Environment.open(tmp_path, **kw)
    try:
        flags = env._lmdb().flags()
        assert flags["sync"] is data_sync and flags["metasync"] is False, flags
    finally:
        env.close()


def test_an_unknown_sync_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sync_mode must be one of safe, fast, got 'turbo'"):
        Environment.open(tmp_path, sync_mode="turbo")
    with pytest.raises(ValueError, match=r'storage.sync_mode = "turbo"'):
        settings_from_dict({"storage": {"sync_mode": "turbo"}})


def test_non_durable_commits_do_not_sync_durable_ones_do(tmp_path, syncs):
    env = Environment.open(tmp_path)
    try:
        db = env.db("t")
        for i in range(5):
            with env.write(durable=False) as txn:
                txn.put(b"k%d" % i, b"v", db=db)
        assert syncs.calls == []
        with env.write() as txn:  # durable by default
            txn.put(b"intent", b"v", db=db)
        assert len(syncs.calls) == 1
    finally:
        env.close()


def test_a_store_rebuilt_from_its_inputs_syncs_only_at_close(tmp_path, syncs):
    # A backtest's store: durable writes skip their fsync, close syncs once.
    env = Environment.open(tmp_path, sync_durable=False)
    db = env.db("t")
    with env.write() as txn:
        txn.put(b"intent", b"v", db=db)
    assert syncs.calls == []
    env.close()
    reopened = Environment.open(tmp_path)
    try:
        db = reopened.db("t")
        with reopened.read() as txn:
            assert txn.get(b"intent", db=db) == b"v"
    finally:
        reopened.close()


def _wait_ready(daemon) -> None:
    """Until the daemon has reconciled once and the venue quotes every symbol."""
    wait_for(lambda: daemon.svc.first_reconcile.is_set(), 30, 0.05, "first reconcile")
    wait_for(
        lambda: all(daemon.venue.call(lambda s=s: daemon.venue.ctx.exchange.quotes.get(s)) for s in SYMBOLS),
        30,
        0.05,
        "quotes",
    )


def _place_and_fill(daemon, n: int) -> None:
    """Tell the order manager `n` intents (`_intent`) and wait until every one is filled."""
    store = daemon.svc.store
    for i in range(n):
        daemon.tree.router.tell("order_manager", _intent(daemon, i), "test")
    wait_for(
        lambda: all((r := store.orders.get(f"stk-s{i:02d}")) is not None and r.state == "filled" for i in range(n)),
        60,
        0.05,
        "every order filled",
    )


def test_one_sync_per_order_the_intent_before_the_broker_sees_it(daemon, syncs):
    _wait_ready(daemon)
    store = daemon.svc.store
    assert store.env._lmdb().flags()["sync"] is True  # the daemon's default sync mode: safe
    journal_before = store.journal.last_seq()
    syncs.clear()
    n = 6
    _place_and_fill(daemon, n)

    ours = syncs.order_manager()
    # Each sync of the order manager is an intent's, taken in on_intent (before
    # _submit makes the REST call), and there is one per order.
    assert all("on_intent" in stack and "_submit" not in stack for stack in ours), ours
    assert len(ours) == n, ours
    # ...while the order path wrote much more than the intents, unsynced:
    # submitted, acknowledged (with its legs), state changes and fills.
    events = [e for _, e in store.journal.read(journal_before + 1)]
    intents = [e for e in events if isinstance(e, IntentJournaled)]
    assert len(intents) == n
    assert len(events) >= 4 * n, [type(e).__name__ for e in events]


class CommitLog:
    """The order manager's functions on the stack of each write transaction committed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stacks: list[tuple[str, ...]] = []

    def order_manager(self) -> list[tuple[str, ...]]:
        with self.lock:
            return [s for s in self.stacks if s]


@pytest.fixture
def commits(monkeypatch):
    log = CommitLog()
    real = Environment.write

    @contextlib.contextmanager
    def counted(self: Environment, durable: bool = True):
        with real(self, durable) as txn:
            yield txn
        stack = tuple(f.name for f in traceback.extract_stack() if f.filename.endswith(ORDER_MANAGER))
        with log.lock:
            log.stacks.append(stack)

    monkeypatch.setattr(Environment, "write", counted)
    return log


def test_no_commit_between_the_intent_and_the_post(embedded_daemon, commits):
    # In "safe" mode every commit flushes: a commit of its own for the first
    # attempt's OrderSubmitted would be one more flush before the broker hears
    # of the order. It is journaled in the intent's (durable) transaction.
    daemon = embedded_daemon(SYMBOLS)
    _wait_ready(daemon)
    store = daemon.svc.store
    journal_before = store.journal.last_seq()
    n = 4
    _place_and_fill(daemon, n)
    ours = commits.order_manager()
    # From the intent to the REST call's answer, only the intent's commit:
    # what `_send` commits comes after the broker answered (ack, rejection, look-up).
    after_answer = ("_acknowledged", "_rejected", "_find", "_adopt")
    before_post = [s for s in ours if "_send" in s and not any(f in s for f in after_answer)]
    assert before_post == [], before_post
    assert sum(1 for s in ours if "on_intent" in s and "_submit" not in s) == n, ours
    # Every order still has its first attempt journaled, right beside its intent.
    events = list(store.journal.read(journal_before + 1))
    for i in range(n):
        coid = f"stk-s{i:02d}"
        at = next(seq for seq, e in events if isinstance(e, IntentJournaled) and e.order.client_order_id == coid)
        submitted = [(seq, e) for seq, e in events if isinstance(e, OrderSubmitted) and e.client_order_id == coid]
        assert [(seq, e.attempt) for seq, e in submitted] == [(at + 1, 1)], submitted
