"""The lmdb environment: atomic writes, map growth, the data dir lock, closing."""

import os
import signal
import subprocess
import sys
import textwrap

import lmdb
import pytest

from stockade.codecs.records import IntentJournaled, OrderRecord, TradingStateRecord
from stockade.storage.environment import (
    DataDirLocked,
    Environment,
    StorageClosed,
    StorageError,
    StorageFull,
)
from stockade.storage.store import Store

MiB = 1 << 20


def order(coid, reason=""):
    return OrderRecord(
        client_order_id=coid,
        intent_id="i",
        symbol="MSFT",
        side="sell",
        qty=5,
        order_type="market",
        created_ns=1,
        updated_ns=2,
        reason=reason,
    )


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path)
    yield s
    s.close()


def test_layout_in_data_dir(tmp_path):
    with Store.open(tmp_path / "var") as s:
        assert s.env.path == tmp_path / "var" / "stockade.lmdb"
        assert (tmp_path / "var" / "stockade.lmdb" / "data.mdb").is_file()
        assert (tmp_path / "var" / "stockade.lock").read_text().strip() == str(os.getpid())


def test_journal_and_table_commit_together(store):
    with store.write() as txn:
        seq = store.journal.append(IntentJournaled(ts_ns=1, order=order("a")), txn=txn)
        store.orders.put("a", order("a"), txn=txn)
        # Inside the transaction its own writes are visible through it.
        assert store.orders.get("a", txn=txn) == order("a")
    assert store.journal.last_seq() == seq == 1
    assert store.orders.get("a") == order("a")


def test_exception_inside_write_block_writes_nothing(store):
    store.orders.put("before", order("before"))
    with pytest.raises(RuntimeError):
        with store.write() as txn:
            store.journal.append(IntentJournaled(ts_ns=1, order=order("a")), txn=txn)
            store.orders.put("a", order("a"), txn=txn)
            store.orders.delete("before", txn=txn)
            store.put_trading_state(
                TradingStateRecord(state="HALTED", reason="x", changed_ns=1, changed_by="t"), txn=txn
            )
            raise RuntimeError("broker said no")
    assert store.journal.last_seq() == 0
    assert store.orders.get("a") is None
    assert store.orders.get("before") == order("before")
    assert store.trading_state() is None


def test_transact_is_atomic_and_returns_the_result(store):
    def both(txn):
        store.orders.put("a", order("a"), txn=txn)
        return store.journal.append(IntentJournaled(ts_ns=1, order=order("a")), txn=txn)

    assert store.transact(both) == 1
    assert store.orders.count() == 1


def test_nested_write_is_refused_not_deadlocked(store):
    with store.write():
        with pytest.raises(StorageError, match="nested write"):
            store.orders.put("a", order("a"))


def test_map_grows_and_transact_retries(tmp_path):
    with Store.open(tmp_path, map_size=1 * MiB) as s:
        big = "x" * 4000
        n = s.orders.put_many((f"o{i}", order(f"o{i}", big)) for i in range(2000))  # ~8 MiB, one txn
        assert n == 2000
        assert s.env.map_size >= 8 * MiB
        assert s.orders.count() == 2000
    # Reopening with a map smaller than the file: lmdb adopts the file's size
    # and the next write grows from there.
    with Store.open(tmp_path, map_size=1 * MiB) as s:
        assert s.orders.count() == 2000
        assert s.env.map_size >= s.env.used_bytes() > 8 * MiB
        assert s.orders.get("o1999").reason == big
        s.orders.put("more", order("more", big))
        assert s.orders.count() == 2001


def test_full_map_in_write_block_writes_nothing_then_fits(tmp_path):
    with Store.open(tmp_path, map_size=1 * MiB) as s:
        before = s.env.map_size
        big = "y" * 4000
        with pytest.raises(lmdb.MapFullError):
            with s.write() as txn:
                s.journal.append(IntentJournaled(ts_ns=1, order=order("j")), txn=txn)
                for i in range(400):  # ~1.6 MiB
                    s.orders.put(f"o{i}", order(f"o{i}", big), txn=txn)
        assert s.env.map_size > before
        assert s.orders.count() == 0 and s.journal.last_seq() == 0

        def again(txn):
            for i in range(400):
                s.orders.put(f"o{i}", order(f"o{i}", big), txn=txn)

        s.transact(again)
        assert s.orders.count() == 400


def test_headroom_grows_before_small_writes(tmp_path):
    with Store.open(tmp_path, map_size=1 * MiB) as s:
        for i in range(300):
            s.orders.put(f"o{i}", order(f"o{i}", "z" * 3000))
        assert s.env.map_size > 1 * MiB
        assert s.orders.count() == 300


def test_storage_full_at_max_map_size(tmp_path):
    with Store.open(tmp_path, map_size=1 * MiB, max_map_size=2 * MiB) as s:
        with pytest.raises(StorageFull, match="maximum map size"):
            s.orders.put_many((f"o{i}", order(f"o{i}", "w" * 4000)) for i in range(2000))


def test_second_open_in_same_process_is_locked(tmp_path):
    with Store.open(tmp_path):
        with pytest.raises(DataDirLocked) as info:
            Store.open(tmp_path)
        assert info.value.pid == os.getpid()
        assert str(os.getpid()) in str(info.value) and str(tmp_path) in str(info.value)
    # Released on close.
    Store.open(tmp_path).close()


LOCK_HOLDER = textwrap.dedent(
    """
    import sys
    from stockade.storage.store import Store

    store = Store.open(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.read()  # hold the lock until killed
    """
)


def test_lock_refuses_a_second_writer_process_naming_its_pid(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"  # the child exits (EOF) if it fails
        with pytest.raises(DataDirLocked) as info:
            Store.open(tmp_path)
        assert info.value.pid == proc.pid
        assert f"in use by process {proc.pid}" in str(info.value)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdin.close()
        proc.stdout.close()
    # The kernel drops the lock of a dead process: no stale lock.
    Store.open(tmp_path).close()


def test_readonly_open_reads_without_lock(tmp_path):
    with Store.open(tmp_path) as s:
        s.orders.put("a", order("a"))
    with Store.open(tmp_path, readonly=True) as ro:
        assert ro.orders.get("a") == order("a")
        with pytest.raises(lmdb.ReadonlyError):
            ro.orders.put("b", order("b"))


def test_readonly_open_of_missing_storage_fails_clearly(tmp_path):
    with pytest.raises(StorageError, match="no stockade storage"):
        Environment.open(tmp_path / "nothing", readonly=True)


def test_close_is_idempotent_and_later_use_fails(tmp_path):
    s = Store.open(tmp_path)
    s.close()
    s.close()
    with pytest.raises(StorageClosed):
        s.orders.get("a")


def test_durable_and_non_durable_writes_both_persist(tmp_path):
    with Store.open(tmp_path) as s:
        assert s.journal.append(IntentJournaled(ts_ns=1, order=order("a")), durable=True) == 1
        assert s.journal.append(IntentJournaled(ts_ns=2, order=order("b")), durable=False) == 2
    with Store.open(tmp_path) as s:
        assert s.journal.last_seq() == 2


def test_bad_sizes_rejected(tmp_path):
    with pytest.raises(ValueError):
        Environment.open(tmp_path, map_size=4 * MiB, max_map_size=1 * MiB)


def test_grow_waits_for_open_transactions_of_other_threads(tmp_path):
    import threading

    from waiting import wait_for

    with Store.open(tmp_path, map_size=1 * MiB) as s:
        holding, release = threading.Event(), threading.Event()

        def reader():
            with s.read():
                holding.set()
                release.wait(timeout=30)

        r = threading.Thread(target=reader)
        r.start()
        assert holding.wait(timeout=10)
        g = threading.Thread(target=s.env.grow)
        g.start()
        gate = s.env._gate
        wait_for(lambda: gate._waiting == 1, what="grow waiting at the gate")
        assert s.env._lmdb().info()["map_size"] == 1 * MiB  # not resized under the reader
        release.set()
        r.join(timeout=10)
        g.join(timeout=10)
        assert not r.is_alive() and not g.is_alive()
        assert s.env.map_size == 2 * MiB
