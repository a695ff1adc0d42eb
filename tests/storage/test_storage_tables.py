"""Typed tables and time series on real lmdb files: CRUD, scans, decode errors, retention."""

import msgspec
import pytest

from stockade.codecs.records import (
    AlertRecord,
    DayCounters,
    DecisionRecord,
    EquitySnapshot,
    FillRecord,
    PositionRecord,
    TradingStateRecord,
)
from stockade.storage.store import DAY_NS, Retention, Store
from stockade.storage.tables import RecordDecodeError, parse_time_key, prefix_end, time_key


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path)
    yield s
    s.close()


def pos(symbol, qty=1):
    return PositionRecord(symbol=symbol, qty=qty, avg_entry_price=10.0, updated_ns=1)


def alert(ts_ns, key="k"):
    return AlertRecord(level="WARNING", key=key, text="t", source="test", ts_ns=ts_ns)


def test_put_get_delete_count(store):
    assert store.positions.get("AAPL") is None
    assert store.positions.get("AAPL", pos("DEFAULT")) == pos("DEFAULT")
    store.positions.put("AAPL", pos("AAPL", 3))
    store.positions.put("AAPL", pos("AAPL", 5))  # replaces
    assert store.positions.get("AAPL") == pos("AAPL", 5)
    assert "AAPL" in store.positions and "MSFT" not in store.positions
    assert store.positions.count() == len(store.positions) == 1
    assert store.positions.delete("AAPL") is True
    assert store.positions.delete("AAPL") is False
    assert store.positions.count() == 0


def test_put_many_and_prefix_scan(store):
    store.counters.put_many(
        {f"2024-0{m}-1{d}": DayCounters(date=f"2024-0{m}-1{d}", day_trades=d) for m in (5, 6) for d in range(3)}
    )
    assert [k for k, _ in store.counters.items("2024-06")] == ["2024-06-10", "2024-06-11", "2024-06-12"]
    assert [k for k, _ in store.counters.items("2024-06", reverse=True)] == ["2024-06-12", "2024-06-11", "2024-06-10"]
    assert [k for k, _ in store.counters.items(start="2024-05-12", limit=2)] == ["2024-05-12", "2024-06-10"]
    assert [k for k, _ in store.counters.items(start="2024-06-105", reverse=True, limit=2)] == [
        "2024-06-10",
        "2024-05-12",
    ]
    assert list(store.counters.keys("2024-07")) == []
    assert [v.day_trades for v in store.counters.values("2024-05")] == [0, 1, 2]


def test_items_across_scan_chunks(store):
    store.fills.put_many(
        (
            f"x{i:05d}",
            FillRecord(
                exec_id=f"x{i:05d}",
                client_order_id="c",
                broker_order_id=None,
                symbol="A",
                side="buy",
                qty=1,
                price=1.0,
                ts_ns=i,
            ),
        )
        for i in range(1300)
    )
    assert [f.ts_ns for _, f in store.fills.items()] == list(range(1300))
    assert [f.ts_ns for _, f in store.fills.items(reverse=True)] == list(range(1299, -1, -1))
    assert [f.ts_ns for _, f in store.fills.items(limit=600)] == list(range(600))
    assert [f.ts_ns for _, f in store.fills.items("x01")] == list(range(1000, 1300))


def test_iteration_inside_a_write_sees_its_writes(store):
    with store.write() as txn:
        store.positions.put("A", pos("A"), txn=txn)
        store.positions.put("B", pos("B"), txn=txn)
        assert [k for k, _ in store.positions.items(txn=txn)] == ["A", "B"]
        assert store.positions.count(txn=txn) == 2


def test_clear(store):
    store.positions.put_many([("A", pos("A")), ("B", pos("B"))])
    store.positions.clear()
    assert store.positions.count() == 0


def test_wrong_record_type_and_key_type_refused(store):
    with pytest.raises(TypeError, match="PositionRecord"):
        store.positions.put("A", alert(1))
    with pytest.raises(TypeError, match="keys are str"):
        store.positions.put(b"A", pos("A"))
    with pytest.raises(ValueError, match="1..511"):
        store.positions.put("", pos("A"))


def test_corrupt_value_error_names_table_and_key(store):
    db = store.env.db("positions")
    with store.write() as txn:
        txn.put(b"BAD", b"\xc1\xc1", db=db)  # not msgpack at all
        txn.put(b"OLD", msgspec.msgpack.encode({"symbol": "OLD"}), db=db)  # msgpack, missing fields
    with pytest.raises(RecordDecodeError) as info:
        store.positions.get("BAD")
    assert info.value.table == "positions" and info.value.key == "BAD"
    assert "table 'positions' key 'BAD'" in str(info.value) and "PositionRecord" in str(info.value)
    with pytest.raises(RecordDecodeError, match="key 'OLD'.*missing required field"):
        store.positions.get("OLD")
    with pytest.raises(RecordDecodeError, match="'BAD'"):
        list(store.positions.items())


def test_added_field_with_default_reads_old_values(store):
    class OldPosition(msgspec.Struct):
        symbol: str
        qty: int
        avg_entry_price: float
        updated_ns: int

    with store.write() as txn:
        txn.put(b"X", msgspec.msgpack.encode(OldPosition("X", 2, 3.0, 4)), db=store.env.db("positions"))
    assert store.positions.get("X") == PositionRecord(symbol="X", qty=2, avg_entry_price=3.0, updated_ns=4)


def test_trading_state_persists(tmp_path):
    with Store.open(tmp_path) as s:
        assert s.trading_state() is None
        s.put_trading_state(TradingStateRecord(state="HALTED", reason="kill", changed_ns=5, changed_by="ctl"))
    with Store.open(tmp_path) as s:
        assert s.trading_state().state == "HALTED"


# ---- time series -------------------------------------------------------------


def test_time_keys_sort_by_time_then_counter():
    keys = [time_key(2, 0), time_key(1, 5), time_key(1, 0), time_key(2**40, 0)]
    assert sorted(keys) == [time_key(1, 0), time_key(1, 5), time_key(2, 0), time_key(2**40, 0)]
    assert parse_time_key(time_key(123, 4)) == (123, 4)
    assert prefix_end(b"a\xff") == b"b" and prefix_end(b"\xff\xff") is None


def test_same_time_and_clock_step_back_still_append_in_order(store):
    k1 = store.alerts.add(alert(100, "a"))
    k2 = store.alerts.add(alert(100, "b"))
    k3 = store.alerts.add(alert(50, "c"))  # the clock stepped back
    assert [parse_time_key(k) for k in (k1, k2, k3)] == [(100, 0), (100, 1), (100, 2)]
    assert [a.key for a in store.alerts.latest(2)] == ["c", "b"]
    assert [a.key for _, a in store.alerts.items()] == ["a", "b", "c"]


def test_time_series_keys_continue_after_reopen(tmp_path):
    with Store.open(tmp_path) as s:
        s.alerts.add(alert(100))
    with Store.open(tmp_path) as s:
        assert parse_time_key(s.alerts.add(alert(100))) == (100, 1)


def test_since_and_add_many_in_callers_transaction(store):
    with store.write() as txn:
        keys = store.decisions.add_many(
            [
                DecisionRecord(ts_ns=t, proposal_id=f"p{t}", symbol="A", allowed=t % 2 == 0, rule="r", reason="x")
                for t in range(1, 6)
            ],
            txn=txn,
        )
    assert len(keys) == 5
    assert [d.ts_ns for _, d in store.decisions.since(3)] == [3, 4, 5]


def test_trim_by_age_and_by_count(store):
    store.equity.add_many(EquitySnapshot(ts_ns=t, equity=100.0 + t, cash=1.0) for t in range(1, 101))
    assert store.equity.trim(older_than_ns=31, batch=7) == 30
    assert [e.ts_ns for e in store.equity.latest(1)] == [100]
    assert store.equity.count() == 70
    assert store.equity.trim(keep_last=10, batch=7) == 60
    assert [e.ts_ns for _, e in store.equity.items()] == list(range(91, 101))
    assert store.equity.trim(keep_last=10) == 0
    assert store.equity.trim(older_than_ns=10**18) == 10
    assert store.equity.count() == 0
    assert store.equity.trim(older_than_ns=10**18) == 0


def test_apply_retention(store):
    now = 100 * DAY_NS
    store.alerts.add_many(alert(now - d * DAY_NS) for d in (40, 20, 1))
    store.decisions.add_many(
        DecisionRecord(ts_ns=now - i, proposal_id="p", symbol="A", allowed=True, rule="ok", reason="")
        for i in range(10, 0, -1)
    )
    policy = Retention(alerts_days=30, decisions_max=4)
    assert store.apply_retention(policy, now_ns=now) == {
        "alerts": 1,
        "decisions": 6,
        "equity": 0,
        "voter_decisions": 0,
        "audit": 0,
        "model_events": 0,
        "model_evaluations": 0,
    }
    assert store.alerts.count() == 2 and store.decisions.count() == 4


def test_open_orders_index_follows_put_order_and_is_rebuilt_at_open(tmp_path):
    from stockade.codecs.records import OrderRecord
    from stockade.storage.store import Store

    def order(coid: str, state: str) -> OrderRecord:
        return OrderRecord(
            client_order_id=coid,
            intent_id=coid,
            symbol="AAPL",
            side="buy",
            qty=1,
            order_type="market",
            state=state,
            created_ns=1,
            updated_ns=1,
        )

    store = Store.open(tmp_path)
    store.put_order(order("a", "accepted"))
    store.put_order(order("b", "intent"))
    store.put_order(order("c", "filled"))
    assert sorted(o.client_order_id for o in store.open_orders()) == ["a", "b"]
    store.put_order(order("a", "filled"))  # terminal: leaves the index
    assert [o.client_order_id for o in store.open_orders()] == ["b"]
    assert store.orders_placed == 3  # an update is not a new order
    adopted = msgspec.structs.replace(order("x", "accepted"), intent_id="")  # external: not ours
    store.put_order(adopted)
    assert store.orders_placed == 3
    # A writer that bypassed put_order is caught by the rebuild at open.
    store.orders.put("d", order("d", "partially_filled"))
    store.close()
    store = Store.open(tmp_path)
    assert sorted(o.client_order_id for o in store.open_orders()) == ["b", "d", "x"]
    assert store.orders_placed == 4  # counted afresh at open
    store.close()


def test_open_orders_decoded_once_per_change_and_never_cached_from_an_aborted_write(tmp_path):
    from stockade.codecs.records import OrderRecord
    from stockade.storage.store import Store

    def order(coid: str, state: str, qty: int = 1) -> OrderRecord:
        return OrderRecord(
            client_order_id=coid,
            intent_id=coid,
            symbol="AAPL",
            side="buy",
            qty=qty,
            order_type="market",
            state=state,
            created_ns=1,
            updated_ns=1,
        )

    store = Store.open(tmp_path)
    store.put_order(order("a", "accepted"))
    first, again = list(store.open_orders()), list(store.open_orders())
    assert [o.client_order_id for o in first] == ["a"]
    assert again[0] is first[0]  # unchanged index: the same decoded record, not a second decode
    with store.read() as txn:  # a caller's snapshot is served from the cache too
        assert next(store.open_orders(txn=txn)) is first[0]
    store.put_order(order("a", "accepted", qty=2))
    assert [o.qty for o in store.open_orders()] == [2]

    # A write that aborts after reading its own uncommitted index: lmdb gives
    # its transaction id to the next write, whose contents differ.
    with pytest.raises(RuntimeError):
        with store.write() as txn:
            store.put_order(order("b", "accepted"), txn=txn)
            assert sorted(o.client_order_id for o in store.open_orders(txn=txn)) == ["a", "b"]
            raise RuntimeError("abort")
    store.put_order(order("c", "accepted"))  # committed under the aborted write's transaction id
    assert sorted(o.client_order_id for o in store.open_orders()) == ["a", "c"]
    store.close()


def test_values_reusing_decodes_only_what_changed(store):
    t = store.positions
    t.put("A", pos("A", 1))
    t.put("B", pos("B", 2))
    with store.read() as txn:
        first, memo = t.values_reusing(txn, {})
    assert [r.qty for r in first] == [1, 2]
    t.put("B", pos("B", 3))
    t.put("C", pos("C", 4))
    with store.read() as txn:
        second, memo = t.values_reusing(txn, memo)
    assert [r.qty for r in second] == [1, 3, 4]  # the changed record is decoded again, not reused
    assert second[0] is first[0]  # the unchanged one is the same object
    t.delete("A")
    with store.read() as txn:
        third, memo = t.values_reusing(txn, memo)
    assert [r.qty for r in third] == [3, 4] and set(memo) == {b"B", b"C"}
