"""`Environment.batched()`: one write transaction for many writes (a backtest's replay), same results.

Real lmdb files; a second reader is a real subprocess (another process sees
only committed data).
"""

from __future__ import annotations

import subprocess
import sys
import threading

import msgspec
import pytest

from stockade.codecs.records import IntentJournaled, OrderRecord
from stockade.storage.environment import StorageError
from stockade.storage.store import Store


def order(coid: str, qty: int = 5) -> OrderRecord:
    return OrderRecord(
        client_order_id=coid,
        intent_id="i",
        symbol="MSFT",
        side="sell",
        qty=qty,
        order_type="market",
        created_ns=1,
        updated_ns=2,
    )


def orders_seen_by_another_process(data_dir) -> list[str]:
    code = (
        "import sys; from stockade.storage.store import Store\n"
        "s = Store.open(sys.argv[1], readonly=True)\n"
        "print(','.join(sorted(k for k in s.orders.keys())))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(data_dir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [k for k in done.stdout.strip().split(",") if k]


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path)
    yield s
    s.close()


def test_writes_in_a_batch_are_read_back_at_once_and_committed_at_its_end(store, tmp_path):
    store.orders.put("before", order("before"))
    with store.env.batched():
        store.orders.put("a", order("a"))
        store.transact(lambda t: store.journal.append(IntentJournaled(ts_ns=1, order=order("b")), txn=t))
        assert store.orders.get("a") == order("a")  # the thread sees its writes, as if committed
        assert store.journal.last_seq() == 1
        with store.read() as txn:
            assert sorted(store.orders.keys(txn=txn)) == ["a", "before"]
        assert orders_seen_by_another_process(tmp_path) == ["before"]  # not committed yet
    assert orders_seen_by_another_process(tmp_path) == ["a", "before"]


def test_a_failed_write_block_in_a_batch_is_undone_alone(store):
    with store.env.batched():
        store.orders.put("kept", order("kept"))
        with pytest.raises(RuntimeError):
            with store.write() as txn:
                store.orders.put("lost", order("lost"), txn=txn)
                store.orders.delete("kept", txn=txn)
                raise RuntimeError("broker said no")
        assert store.orders.get("lost") is None and store.orders.get("kept") == order("kept")
    assert sorted(store.orders.keys()) == ["kept"]


def test_an_exception_out_of_the_batch_commits_nothing_of_it(store):
    store.orders.put("before", order("before"))
    with pytest.raises(RuntimeError):
        with store.env.batched():
            store.orders.put("a", order("a"))
            raise RuntimeError("the run failed")
    assert sorted(store.orders.keys()) == ["before"]


def test_batch_refuses_nesting_other_threads_and_new_tables(store):
    with store.env.batched():
        with pytest.raises(StorageError, match="another batch"):
            with store.env.batched():
                pass
        with store.write():
            with pytest.raises(StorageError, match="nested write"):
                store.orders.put("a", order("a"))
        with pytest.raises(StorageError, match="outside a write transaction"):
            store.env.db("a_new_table")
        errors: list[Exception] = []

        def other() -> None:
            try:
                store.orders.get("a")
            except StorageError as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(timeout=30)
        assert not t.is_alive() and len(errors) == 1 and "another thread" in str(errors[0])


def test_the_open_orders_seen_in_a_batch_follow_every_write_in_it(store):
    """Every nested write of a batch has the batch's transaction id: the open-orders
    cache must still tell two of them apart (else the order manager saw stale orders
    and placed protective stops for shares its stops already covered)."""

    def working(coid: str) -> OrderRecord:
        return msgspec.structs.replace(order(coid), state="accepted")

    with store.env.batched():
        store.put_order(working("a"))
        assert [o.client_order_id for o in store.open_orders_snapshot()] == ["a"]
        store.put_order(working("b"))
        assert sorted(o.client_order_id for o in store.open_orders_snapshot()) == ["a", "b"]
        store.put_order(msgspec.structs.replace(working("a"), state="filled"))
        assert [o.client_order_id for o in store.open_orders_snapshot()] == ["b"]
    assert [o.client_order_id for o in store.open_orders_snapshot()] == ["b"]
