"""Storage benchmarks: the journal (durable append latency, batched throughput) and the lmdb sync modes."""

from __future__ import annotations

import os
import tempfile
import time

from stockade.codecs.records import IntentJournaled, OrderRecord, OrderStateChanged
from stockade.storage.store import Store
from stockade.trading.stats import percentiles

BATCH = 1000


def bench_journal(n: int = 2000, data_dir: str | os.PathLike[str] | None = None) -> dict:
    """Measure the journal in a fresh store (a temporary dir unless `data_dir` is given).

    - durable append: `n` single appends of an order intent, each committed and
      synced before returning (what the order manager pays per order);
    - batched append: `n * 10` small events through `append_many` in batches
      of 1000 (the high-rate path), events per second.
    """
    with tempfile.TemporaryDirectory(prefix="stockade-bench-", dir=data_dir) as tmp:
        store = Store.open(tmp)
        try:
            order = OrderRecord(
                client_order_id="bench-0",
                intent_id="i-0",
                symbol="AAPL",
                side="buy",
                qty=10,
                order_type="limit",
                limit_price=187.25,
                take_profit=190.0,
                stop_loss=185.0,
                order_class="bracket",
                created_ns=time.time_ns(),
                updated_ns=time.time_ns(),
            )
            latencies = []
            for _ in range(n):
                event = IntentJournaled(ts_ns=time.time_ns(), order=order)
                t0 = time.perf_counter_ns()
                store.journal.append(event, durable=True)
                latencies.append((time.perf_counter_ns() - t0) / 1000.0)
            latencies.sort()

            total = n * 10
            events = [
                OrderStateChanged(ts_ns=i, client_order_id=f"c-{i}", old="accepted", new="filled", event="fill")
                for i in range(total)
            ]
            began = time.perf_counter()
            for start in range(0, total, BATCH):
                store.journal.append_many(events[start : start + BATCH])
            elapsed = time.perf_counter() - began
            return {
                "journal_durable_append_us": percentiles(latencies),
                "journal_batched_append_per_s": round(total / elapsed) if elapsed > 0 else None,
                "journal_batch_size": BATCH,
                "journal_bytes_used": store.env.used_bytes(),
            }
        finally:
            store.close()


# What the order path commits per order after its durable intent: submitted,
# acknowledged, a state change or two, the fill (tests/broker/test_broker_order_syncs.py).
COMMITS_AFTER_INTENT = 5


def bench_sync_modes(n: int = 500, data_dir: str | os.PathLike[str] | None = None) -> dict:
    """The price of each lmdb sync mode (storage/environment.py), in a fresh store per mode.

    Per mode: one small non-durable commit (an ack, a fill), one durable
    commit (an intent), and one order's worth (a durable intent, then
    COMMITS_AFTER_INTENT non-durable commits), in microseconds. Put
    `data_dir` on the disk the daemon's data dir lives on: a tmpfs makes
    every sync free.
    """
    out: dict = {"commits_after_intent": COMMITS_AFTER_INTENT}
    for mode in ("safe", "fast"):
        with tempfile.TemporaryDirectory(prefix="stockade-bench-", dir=data_dir) as tmp:
            store = Store.open(tmp, sync_mode=mode)
            try:
                env = store.env
                db = env.db("bench")
                value = b"x" * 200  # about an order record
                plain, durable, order = [], [], []
                for i in range(n):
                    t0 = time.perf_counter_ns()
                    with env.write(durable=False) as txn:
                        txn.put(b"p%08d" % i, value, db=db)
                    plain.append((time.perf_counter_ns() - t0) / 1000.0)
                    t0 = time.perf_counter_ns()
                    with env.write(durable=True) as txn:
                        txn.put(b"d%08d" % i, value, db=db)
                    durable.append((time.perf_counter_ns() - t0) / 1000.0)
                for i in range(max(1, n // COMMITS_AFTER_INTENT)):
                    t0 = time.perf_counter_ns()
                    with env.write(durable=True) as txn:
                        txn.put(b"i%08d" % i, value, db=db)
                    for k in range(COMMITS_AFTER_INTENT):
                        with env.write(durable=False) as txn:
                            txn.put(b"o%08d-%d" % (i, k), value, db=db)
                    order.append((time.perf_counter_ns() - t0) / 1000.0)
                for xs in (plain, durable, order):
                    xs.sort()
                out[mode] = {
                    "commit_us": percentiles(plain),
                    "durable_commit_us": percentiles(durable),
                    "order_us": percentiles(order),
                }
            finally:
                store.close()
    return out


if __name__ == "__main__":  # pragma: no cover - manual use
    import json
    import sys

    print(json.dumps(bench_journal(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)))


def bench_audit_records(n: int = 500, data_dir: str | os.PathLike[str] | None = None) -> dict:
    """An audit record (a risk verdict) on the writing actor's thread, in "safe" mode: a commit
    of its own (`add(durable=False)`, before the audit buffer) beside `add_later` (queued in the
    Store's buffer, committed in groups: storage/audit_buffer.py), in microseconds; and how many
    group commits the buffer made for the `n` records (the rest rode on other commits or groups)."""
    from stockade.codecs.records import DecisionRecord

    out: dict = {"records": n}
    with tempfile.TemporaryDirectory(prefix="stockade-bench-", dir=data_dir) as tmp:
        store = Store.open(tmp, sync_mode="safe")
        try:
            for name, add in (
                ("own_commit_us", lambda r: store.decisions.add(r, ts_ns=r.ts_ns, durable=False)),
                ("add_later_us", lambda r: store.decisions.add_later(r, ts_ns=r.ts_ns)),
            ):
                took = []
                for i in range(n):
                    r = DecisionRecord(
                        ts_ns=time.time_ns(), proposal_id=f"{i:032x}", symbol="XAAA", allowed=False, rule="spread",
                        reason="spread 200 bps > 25 bps", side="buy",
                    )  # fmt: skip
                    t0 = time.perf_counter_ns()
                    add(r)
                    took.append((time.perf_counter_ns() - t0) / 1000.0)
                    if i % 10 == 9:
                        time.sleep(0.002)  # bursts of 10 with gaps, as proposals come
                out[name] = percentiles(sorted(took))
            audit = store.env.audit
            store.decisions.count()  # settles the last group
            out["group_commits"] = audit.commits if audit is not None else None
        finally:
            store.close()
    return out
