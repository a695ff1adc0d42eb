"""Audit records (non-durable by design) committed in groups by the Store, not one flush each.

They wait in the environment's buffer (not an actor's), go first into the
next write transaction, are committed by the buffer's thread within its max
delay, before their series is read, and at close; a `kill -9` loses at most
the records queued since the last group commit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from waiting import wait_for

from stockade.codecs.records import DecisionRecord, IntentJournaled, OrderRecord
from stockade.storage.store import Store

HOUR = 3600.0  # a max delay no test outlives: only the path under test commits


def _decision(i: int) -> DecisionRecord:
    return DecisionRecord(ts_ns=1_000 + i, proposal_id=f"p{i}", symbol="AAPL", allowed=False, rule="spread", reason="")


def _stored(store: Store) -> list[str]:
    """The decisions committed, oldest first, read without settling the buffer."""
    with store.read() as txn:
        return [r.proposal_id for _, r in store.decisions.table.items(txn=txn)]


def test_records_wait_for_a_group_commit_then_read_back_in_order(tmp_path):
    store = Store.open(tmp_path, audit_max_delay_s=HOUR)
    try:
        for i in range(5):
            store.decisions.add_later(_decision(i))
        assert _stored(store) == [] and store.env.audit.pending == 5  # no commit (no flush) each
        # A reader of the series sees them: they are committed first, together.
        assert [r.proposal_id for r in reversed(store.decisions.latest(10))] == [f"p{i}" for i in range(5)]
        assert store.env.audit.pending == 0 and store.env.audit.commits == 1
    finally:
        store.close()


def test_the_next_write_carries_them_before_its_own_records(tmp_path):
    # An intent's durable commit (or a kill switch's HALTED state) commits the
    # verdicts queued before it, in the same transaction: causal order, no extra flush.
    store = Store.open(tmp_path, audit_max_delay_s=HOUR)
    try:
        store.decisions.add_later(_decision(0))
        order = OrderRecord(
            client_order_id="c1", intent_id="i1", symbol="AAPL", side="buy", qty=1, order_type="market",
            state="intent", created_ns=1, updated_ns=1,
        )  # fmt: skip
        with store.write() as txn:
            store.journal.append(IntentJournaled(ts_ns=2, order=order), txn=txn)
        assert store.env.audit.pending == 0 and store.env.audit.commits == 0
        assert _stored(store) == ["p0"]
    finally:
        store.close()


def test_an_aborted_write_puts_them_back_for_the_next_commit(tmp_path):
    store = Store.open(tmp_path, audit_max_delay_s=HOUR)
    try:
        store.decisions.add_later(_decision(0))
        with pytest.raises(RuntimeError, match="boom"), store.write():
            raise RuntimeError("boom")
        assert _stored(store) == [] and store.env.audit.pending == 1
        store.decisions.add_later(_decision(1))
        store.env.audit.flush()
        assert _stored(store) == ["p0", "p1"]
    finally:
        store.close()


def test_the_buffer_thread_commits_them_within_its_delay(tmp_path):
    store = Store.open(tmp_path, audit_max_delay_s=0.01)
    try:
        for i in range(3):
            store.decisions.add_later(_decision(i))
        wait_for(lambda: _stored(store) == ["p0", "p1", "p2"], 10, 0.005, "the group commit")
        assert store.env.audit.pending == 0
    finally:
        store.close()


def test_a_clean_stop_commits_what_waits(tmp_path):
    store = Store.open(tmp_path, audit_max_delay_s=HOUR)
    for i in range(4):
        store.decisions.add_later(_decision(i))
    store.close()
    again = Store.open(tmp_path)
    try:
        assert _stored(again) == [f"p{i}" for i in range(4)]
    finally:
        again.close()


def test_without_a_flush_per_commit_records_are_written_at_once(tmp_path):
    store = Store.open(tmp_path, sync_mode="fast")
    try:
        assert store.env.audit is None
        store.decisions.add_later(_decision(0))
        assert _stored(store) == ["p0"]
    finally:
        store.close()


KILLED = textwrap.dedent(
    """
    import sys
    from stockade.codecs.records import DecisionRecord
    from stockade.storage.environment import Environment
    from stockade.storage.store import Store

    store = Store.open(sys.argv[1], audit_max_delay_s=3600.0)
    store.env.audit.max_records = int(sys.argv[2])
    for i in range(int(sys.argv[3])):
        store.decisions.add_later(
            DecisionRecord(ts_ns=1_000 + i, proposal_id=f"p{i}", symbol="AAPL", allowed=False, rule="r", reason="")
        )
    print(store.env.audit.pending, flush=True)
    sys.stdin.read()  # killed here
    """
)


def test_kill_9_loses_at_most_the_last_unflushed_batch(tmp_path):
    # max_records 10, 25 records queued, no timer commit (an hour's delay): the
    # queuing thread committed 10 and 20; a SIGKILL loses the 5 still waiting.
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(tmp_path), "10", "25"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "5"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    store = Store.open(tmp_path)
    try:
        assert _stored(store) == [f"p{i}" for i in range(20)]
    finally:
        store.close()
