"""The store: stockade's lmdb environment with the named tables the actors use.

store = Store.open(data_dir)
with store.write() as txn:                      # one atomic, durable commit
    store.journal.append(IntentJournaled(...), txn=txn)
    store.orders.put(order.client_order_id, order, txn=txn)
store.close()
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import lmdb
import msgspec

from stockade.codecs.records import (
    TERMINAL_ORDER_STATES,
    AlertCounts,
    AlertRecord,
    ControlAuditRecord,
    DayCounters,
    DecisionRecord,
    EquitySnapshot,
    FillMark,
    FillRecord,
    ModelEvaluationRecord,
    ModelEventRecord,
    ModelSetRecord,
    OrderRecord,
    PositionRecord,
    TradingStateRecord,
    VoterDecisionRecord,
    VoterWeightRecord,
)
from stockade.storage.alert_counts import bump, period_of
from stockade.storage.environment import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, Environment, StorageError
from stockade.storage.journal import Journal
from stockade.storage.tables import Table, TimeSeries

T = TypeVar("T")

TRADING_STATE_KEY = "trading"
# The id of the last write transaction that changed the open-orders index.
OPEN_GEN_TABLE = "orders_open_gen"
OPEN_GEN_KEY = b"gen"
DAY_NS = 86_400 * 1_000_000_000


class Retention(msgspec.Struct, frozen=True, kw_only=True):
    """How much history the time-ordered tables keep (age in days, and a count cap)."""

    alerts_days: float = 30.0
    alerts_max: int = 100_000
    decisions_days: float = 30.0
    decisions_max: int = 500_000
    equity_days: float = 400.0
    equity_max: int = 1_000_000
    audit_days: float = 400.0
    audit_max: int = 1_000_000
    model_events_days: float = 400.0
    model_events_max: int = 100_000
    # One per analyzer evaluation: a few days is enough to audit a swap.
    model_evaluations_days: float = 3.0
    model_evaluations_max: int = 2_000_000


class Store:
    """The open storage of one data dir; use `Store.open(data_dir)`."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        # Orders stockade placed itself (records with an intent), counted once
        # at open and then by `put_order`, so `ctl status` never scans history.
        self.orders_placed = 0
        self.journal = Journal(env, "journal")
        self.orders: Table[OrderRecord] = Table(env, "orders", OrderRecord)  # by client_order_id
        self.fills: Table[FillRecord] = Table(env, "fills", FillRecord)  # by broker exec id
        self.positions: Table[PositionRecord] = Table(env, "positions", PositionRecord)  # by symbol
        # The newest fill per symbol (a sequence), so a broker snapshot older than it is never adopted.
        self.fill_marks: Table[FillMark] = Table(env, "fill_marks", FillMark)  # by symbol
        self.state: Table[TradingStateRecord] = Table(env, "state", TradingStateRecord)  # key "trading"
        self.counters: Table[DayCounters] = Table(env, "counters", DayCounters)  # by date YYYY-MM-DD
        self.alerts: TimeSeries[AlertRecord] = TimeSeries(env, "alerts", AlertRecord)
        self.alert_counts: Table[AlertCounts] = Table(env, "alert_counts", AlertCounts)  # "all" and by UTC date
        self.equity: TimeSeries[EquitySnapshot] = TimeSeries(env, "equity", EquitySnapshot)
        self.decisions: TimeSeries[DecisionRecord] = TimeSeries(env, "decisions", DecisionRecord)
        # The ensemble voter's proposals, each step with its votes and weights (report, parked restore).
        self.voter_decisions: TimeSeries[VoterDecisionRecord] = TimeSeries(env, "voter_decisions", VoterDecisionRecord)
        self.audit: TimeSeries[ControlAuditRecord] = TimeSeries(env, "audit", ControlAuditRecord)  # control commands
        self.voter_weights: Table[VoterWeightRecord] = Table(env, "voter_weights", VoterWeightRecord)  # by member
        # The model lifecycle (actors/model_keeper.py): sets by role, its steps, and
        # which set each evaluation voted with.
        self.model_sets: Table[ModelSetRecord] = Table(env, "model_sets", ModelSetRecord)  # by role
        self.model_events: TimeSeries[ModelEventRecord] = TimeSeries(env, "model_events", ModelEventRecord)
        self.model_evaluations: TimeSeries[ModelEvaluationRecord] = TimeSeries(
            env, "model_evaluations", ModelEvaluationRecord
        )
        # Index of the orders that may still be working, kept in the same
        # transaction as `orders` by `put_order`: the risk guard asks for them
        # on every proposal, and the orders table grows all day.
        self.open_index: Table[OrderRecord] = Table(env, "orders_open", OrderRecord)
        # The open orders decoded once per change of the index, not once per
        # read: the risk guard and the order manager's protection pass read
        # them far more often than they change. Keyed by the index's
        # generation (stored with it, so a snapshot's generation names its
        # contents exactly); None on a readonly dir written before it existed.
        try:
            self._open_gen_db: Any = env.db(OPEN_GEN_TABLE)
        except StorageError:
            self._open_gen_db = None
        self._open_cache: tuple[bytes, tuple[OrderRecord, ...]] | None = None
        # Generations are never written twice: a counter that continues from
        # the stored one and never steps back (an aborted write's number is
        # skipped, not reused; one writer per data dir, by its lock). Not the
        # transaction's id: an aborted write's id is given to the next one,
        # every nested write of a backtest's batch has its parent's id, and a
        # batched run must write the same bytes as an unbatched one.
        self._gen_counter = itertools.count(self._stored_gen() + 1)
        self._open_memo: dict[bytes, tuple[bytes, OrderRecord]] = {}

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        readonly: bool = False,
        sync_durable: bool = True,
        sync_mode: str = "safe",
        audit_max_delay_s: float | None = None,
    ) -> Store:
        """Open (creating if needed) the storage of `data_dir`; raises DataDirLocked if in use.

        `sync_mode`, `sync_durable` and `audit_max_delay_s`: see `Environment.open`."""
        env = Environment.open(
            data_dir,
            map_size=map_size,
            max_map_size=max_map_size,
            readonly=readonly,
            sync_durable=sync_durable,
            sync_mode=sync_mode,
            audit_max_delay_s=audit_max_delay_s,
        )
        try:
            store = cls(env)
            if not readonly:
                store.rebuild_open_index()
            return store
        except BaseException:
            env.close()
            raise

    # ---- transactions -------------------------------------------------------

    def write(self, durable: bool = True) -> contextlib.AbstractContextManager[lmdb.Transaction]:
        """A write transaction: everything in the block commits together, or nothing if it raises."""
        return self.env.write(durable=durable)

    def read(self) -> contextlib.AbstractContextManager[lmdb.Transaction]:
        """A consistent read snapshot across tables."""
        return self.env.read()

    def transact(self, fn: Callable[[lmdb.Transaction], T], durable: bool = True) -> T:
        """Run `fn(txn)` atomically; if the map fills, grow it and run `fn` again."""
        return self.env.transact(fn, durable=durable)

    # ---- conveniences -------------------------------------------------------

    def trading_state(self, *, txn: lmdb.Transaction | None = None) -> TradingStateRecord | None:
        """The persisted trading state, or None on a fresh data dir."""
        return self.state.get(TRADING_STATE_KEY, txn=txn)

    def put_trading_state(self, record: TradingStateRecord, *, txn: lmdb.Transaction | None = None) -> None:
        self.state.put(TRADING_STATE_KEY, record, txn=txn)

    def put_order(self, record: OrderRecord, *, txn: lmdb.Transaction | None = None) -> None:
        """Store an order and keep the open-orders index in step (same transaction)."""

        def write(t: lmdb.Transaction) -> bool:
            new = bool(record.intent_id) and not self.orders.has(record.client_order_id, txn=t)
            self.orders.put(record.client_order_id, record, txn=t)
            if record.state not in TERMINAL_ORDER_STATES:  # open: may be working at the broker
                self.open_index.put(record.client_order_id, record, txn=t)
            else:
                self.open_index.delete(record.client_order_id, txn=t)
            self._bump_open_gen(t)
            return new

        if write(txn) if txn is not None else self.transact(write):
            self.orders_placed += 1

    def open_orders(self, *, txn: lmdb.Transaction | None = None) -> Iterator[OrderRecord]:
        """Orders that may be working at the broker (from the index: O(open), not O(all);
        decoded once per change of the index, see `_open_snapshot`)."""
        return iter(self.open_orders_snapshot(txn=txn))

    def open_orders_snapshot(self, *, txn: lmdb.Transaction | None = None) -> tuple[OrderRecord, ...]:
        """`open_orders` as a tuple: the same object while the index is unchanged, so a
        reader may keep what it derives from it until it gets a different one."""
        if txn is not None:
            return self._open_snapshot(txn)
        with self.read() as t:
            return self._open_snapshot(t)

    def _stored_gen(self) -> int:
        """The open index's generation as stored (0: none yet, or not a number)."""
        if self._open_gen_db is None:
            return 0
        with self.read() as txn:
            raw = txn.get(OPEN_GEN_KEY, db=self._open_gen_db)
        if raw is None:
            return 0
        gen = msgspec.msgpack.decode(raw)
        return gen if isinstance(gen, int) else 0

    def _bump_open_gen(self, txn: lmdb.Transaction) -> None:
        if self._open_gen_db is not None:
            gen = msgspec.msgpack.encode(next(self._gen_counter))  # msgpack, as every table
            txn.put(OPEN_GEN_KEY, gen, db=self._open_gen_db)

    def _open_snapshot(self, txn: lmdb.Transaction) -> tuple[OrderRecord, ...]:
        """The open index as of `txn`, from the cache when its generation is the snapshot's.

        Every write of the index writes a new generation in the same
        transaction, one never written before (see `_bump_open_gen`), so equal
        generations mean equal contents, even inside a backtest's batch, where
        every nested write shares its parent's transaction id. The cache is
        filled outside write transactions only.
        """
        gen = txn.get(OPEN_GEN_KEY, db=self._open_gen_db) if self._open_gen_db is not None else None
        cached = self._open_cache
        if gen is not None and cached is not None and cached[0] == gen:
            return cached[1]
        # A change of the index is mostly one order: the others are reused, not decoded again.
        records, self._open_memo = self.open_index.values_reusing(txn, self._open_memo)
        if gen is not None and not self.env.writing():
            self._open_cache = (bytes(gen), records)
        return records

    def fill_seqs(self, *, txn: lmdb.Transaction | None = None) -> dict[str, int]:
        """Each symbol's fill sequence (see `FillMark`); a symbol never filled is absent (0)."""
        return {symbol: mark.seq for symbol, mark in self.fill_marks.items(txn=txn)}

    def add_alert(self, record: AlertRecord, *, durable: bool = False) -> None:
        """Append an alert to the history and bump its counts, in one transaction."""

        def write(t: lmdb.Transaction) -> None:
            self.alerts.add(record, ts_ns=record.ts_ns, txn=t)
            for period in ("all", period_of(record.ts_ns)):
                self.alert_counts.put(period, bump(self.alert_counts.get(period, txn=t), period, record), txn=t)

        self.transact(write, durable=durable)

    def rebuild_open_index(self) -> int:
        """Rebuild the open-orders index from the orders table (at open: cheap insurance
        against any writer that bypassed `put_order`). Returns the open count."""

        def write(t: lmdb.Transaction) -> int:
            self.open_index.clear(txn=t)
            n = placed = 0
            for key, order in self.orders.items(txn=t):
                placed += bool(order.intent_id)
                if order.state not in TERMINAL_ORDER_STATES:
                    self.open_index.put(key, order, txn=t)
                    n += 1
            self._bump_open_gen(t)
            self.orders_placed = placed
            return n

        return self.transact(write)

    def apply_retention(self, policy: Retention | None = None, *, now_ns: int | None = None) -> dict[str, int]:
        """Trim alerts, decisions and equity snapshots per `policy`; returns deletions per table."""
        policy = policy or Retention()
        now_ns = time.time_ns() if now_ns is None else now_ns
        plan = (
            (self.alerts, policy.alerts_days, policy.alerts_max),
            (self.decisions, policy.decisions_days, policy.decisions_max),
            (self.voter_decisions, policy.decisions_days, policy.decisions_max),
            (self.equity, policy.equity_days, policy.equity_max),
            (self.audit, policy.audit_days, policy.audit_max),
            (self.model_events, policy.model_events_days, policy.model_events_max),
            (self.model_evaluations, policy.model_evaluations_days, policy.model_evaluations_max),
        )
        return {
            series.name: series.trim(older_than_ns=now_ns - int(days * DAY_NS), keep_last=keep)
            for series, days, keep in plan
        }

    # ---- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Close the environment and release the data dir. Idempotent."""
        self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
