"""The journal on real lmdb files: order, durability, restarts, a SIGKILLed writer."""

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from stockade.codecs.records import (
    FillRecord,
    FillRecorded,
    IntentJournaled,
    OrderRecord,
    OrderStateChanged,
    TradingStateSet,
)
from stockade.storage.store import Store
from stockade.storage.tables import RecordDecodeError


def order(coid="c-1"):
    return OrderRecord(
        client_order_id=coid,
        intent_id="i-1",
        symbol="AAPL",
        side="buy",
        qty=10,
        order_type="limit",
        limit_price=187.5,
        created_ns=1,
        updated_ns=1,
    )


def changed(i):
    return OrderStateChanged(ts_ns=i, client_order_id=f"c-{i}", old="accepted", new="filled", event="fill")


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path)
    yield s
    s.close()


def test_append_assigns_increasing_sequence_from_one(store):
    assert store.journal.last_seq() == 0
    assert store.journal.append(IntentJournaled(ts_ns=1, order=order())) == 1
    assert store.journal.append(changed(2)) == 2
    assert list(store.journal.read()) == [(1, IntentJournaled(ts_ns=1, order=order())), (2, changed(2))]


def test_read_from_and_limit_across_chunks(store):
    seqs = store.journal.append_many(changed(i) for i in range(1500))
    assert seqs == range(1, 1501)
    assert [s for s, _ in store.journal.read(from_seq=700, limit=600)] == list(range(700, 1300))
    assert [e.ts_ns for _, e in store.journal.read()] == list(range(1500))
    assert store.journal.get(10) == changed(9)
    assert store.journal.get(99999) is None
    assert store.journal.count() == 1500


def test_append_many_of_nothing(store):
    assert store.journal.append_many([]) == range(0)
    assert store.journal.last_seq() == 0


def test_sequence_survives_close_and_reopen(tmp_path):
    with Store.open(tmp_path) as s:
        s.journal.append(IntentJournaled(ts_ns=1, order=order()))
        s.journal.append_many([changed(2), changed(3)])
    with Store.open(tmp_path) as s:
        assert s.journal.last_seq() == 3
        assert s.journal.append(changed(4)) == 4
        assert [type(e).__name__ for _, e in s.journal.read()] == [
            "IntentJournaled",
            "OrderStateChanged",
            "OrderStateChanged",
            "OrderStateChanged",
        ]


def test_aborted_transaction_gives_sequence_numbers_back(store):
    store.journal.append(changed(1))
    with pytest.raises(RuntimeError):
        with store.write() as txn:
            assert store.journal.append(changed(2), txn=txn) == 2
            raise RuntimeError("boom")
    assert store.journal.append(changed(3)) == 2


def test_concurrent_appends_get_unique_sequences(tmp_path):
    # A small map so the threads also race the map growing.
    store = Store.open(tmp_path, map_size=1 << 20)
    try:
        errors = []

        def writer(t):
            try:
                for i in range(150):
                    store.journal.append(IntentJournaled(ts_ns=i, order=order(f"c-{t}-{i}")), durable=False)
                    if i % 50 == 0:
                        store.journal.append_many([IntentJournaled(ts_ns=i, order=order())] * 200)
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert not errors
        assert not any(th.is_alive() for th in threads)
        seqs = [s for s, _ in store.journal.read()]
        assert seqs == list(range(1, 4 * (150 + 3 * 200) + 1))
        assert store.env.map_size > 1 << 20
    finally:
        store.close()


def test_fill_event_round_trips_nested_record(store):
    fill = FillRecord(
        exec_id="x-1",
        client_order_id="c-1",
        broker_order_id="b-1",
        symbol="AAPL",
        side="buy",
        qty=3,
        price=1.5,
        ts_ns=7,
    )
    seq = store.journal.append(FillRecorded(ts_ns=7, fill=fill))
    assert store.journal.get(seq) == FillRecorded(ts_ns=7, fill=fill)


def test_corrupt_journal_value_names_table_and_sequence(store):
    store.journal.append(changed(1))
    with store.write() as txn:
        txn.put((2).to_bytes(8, "big"), b"\xc1garbage", db=store.env.db("journal"))
    with pytest.raises(RecordDecodeError) as info:
        list(store.journal.read())
    assert "'journal'" in str(info.value) and "key 2" in str(info.value)


CHILD = textwrap.dedent(
    """
    import sys
    from stockade.codecs.records import TradingStateSet
    from stockade.storage.store import Store

    store = Store.open(sys.argv[1])
    seq = store.journal.append(
        TradingStateSet(ts_ns=42, state="HALTED", reason="durable", changed_by="child"), durable=True
    )
    print("ready", seq, flush=True)
    sys.stdin.read()  # park until killed
    """
)


def start_child(data_dir):
    """Run CHILD on `data_dir`; returns (process, its "ready" line)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail("child never said ready")
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.wait(timeout=10)
        pytest.fail(f"child failed: {line!r} {proc.stderr.read()}")
    return proc, line


def kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    proc.stdin.close()
    proc.stdout.close()
    proc.stderr.close()


def test_durable_append_survives_sigkill(tmp_path):
    proc, line = start_child(tmp_path)
    try:
        assert line.split() == ["ready", "1"]
    finally:
        kill(proc)
    with Store.open(tmp_path) as s:
        assert list(s.journal.read()) == [
            (1, TradingStateSet(ts_ns=42, state="HALTED", reason="durable", changed_by="child"))
        ]
        assert s.journal.append(changed(2)) == 2


def test_bench_journal_reports_latency_and_throughput(tmp_path):
    from stockade.bench.storage import bench_journal

    result = bench_journal(50, data_dir=tmp_path)
    lat = result["journal_durable_append_us"]
    assert 0 < lat["p50"] <= lat["p99"] and lat["n"] == 50
    assert result["journal_batched_append_per_s"] > 0


def test_bench_sync_modes_reports_both_modes(tmp_path):
    from stockade.bench.storage import bench_sync_modes

    result = bench_sync_modes(10, data_dir=tmp_path)
    for mode in ("safe", "fast"):
        for figure in ("commit_us", "durable_commit_us", "order_us"):
            lat = result[mode][figure]
            assert lat["n"] > 0 and 0 < lat["p50"] <= lat["p99"], (mode, figure, lat)
