"""Reconciler: keeps the ledger in agreement with the broker. The broker is the truth.

At start and every `interval_s`: account, positions, open orders and the
clock from REST. Ledger positions that disagree are overwritten by the
broker's and alerted; broker orders the ledger does not know are adopted; a
long position with no resting exit order gets a protective stop. The
account, positions and clock go to the risk guard; an equity snapshot and the
day's starting equity go to storage. The first successful pass releases the
daemon's READY=1.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import msgspec

from stockade.actors.base import StockadeActor, handles
from stockade.actors.services import Services
from stockade.broker import orders as broker_orders
from stockade.broker.liquidation import open_orders
from stockade.broker.rest import redact
from stockade.codecs.messages import (
    AccountSnapshot,
    Alert,
    ClockSnapshot,
    OrderIntent,
    Position,
    Tick,
)
from stockade.codecs.records import DayCounters, EquitySnapshot, PositionRecord, Reconciled
from stockade.quant.brackets import round_price
from stockade.storage.ledger import disagreements_to_adopt
from stockade.storage.order_states import PENDING

log = logging.getLogger(__name__)

NAME = "reconciler"
RETENTION_EVERY_S = 3600.0


class Reconciler(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        self.cfg = self.svc.settings.reconciler
        self.client = self.svc.broker.trading_client()
        self.protect_requested: dict[str, float] = {}
        self.suspects: dict[str, tuple[int, int]] = {}  # symbol -> (ledger, broker) seen last pass
        self.passes = 0
        # First pass from a tick, not here: a broker outage at start must not
        # fail setup (and crash-loop the tree); it is retried every interval.
        self.router.tell(self.name, Tick("reconcile"), self.name)
        self.every(self.cfg.interval_s, "reconcile")
        self.every(RETENTION_EVERY_S, "retention")

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what == "reconcile":
            self.reconcile()
        elif tick.what == "retention":
            # Alerts, decisions and equity snapshots are bounded (Retention's
            # defaults); the journal and the order ledger are never trimmed.
            trimmed = self.svc.store.apply_retention()
            if any(trimmed.values()):
                log.info("retention: trimmed %s", trimmed)

    def reconcile(self) -> bool:
        try:
            account = self.client.get_account()
            positions = self.client.get_all_positions()
            orders = open_orders(self.client)
            clock = self.client.get_clock()
        except Exception as exc:
            log.warning("reconcile: broker unreachable: %s", redact(exc))
            return False
        now = time.time_ns()
        mismatches = self._positions(positions, now) + self._orders(orders)
        self._protect(positions, orders)
        snapshot = broker_orders.account_snapshot(account)
        held = tuple(Position(p.symbol, float(p.qty), float(p.avg_entry_price), float(p.market_value or 0),
                              float(p.unrealized_pl or 0)) for p in positions)
        self.tell("risk_guard", snapshot)
        market = ClockSnapshot(bool(clock.is_open), now)
        self.tell("risk_guard", market)
        # A closed market is quiet: the streamer must not take that for a dead socket.
        self.tell("quote_streamer", market)
        self._store_equity(snapshot, held, now)
        self.svc.store.journal.append(Reconciled(ts_ns=now, positions=len(positions), open_orders=len(orders),
                                                 mismatches=tuple(mismatches)), durable=False)
        if mismatches:
            log.warning("reconcile: %d mismatch(es), broker adopted: %s", len(mismatches), "; ".join(mismatches))
            self.tell("alerter", Alert("WARNING", "reconcile-mismatch", "; ".join(mismatches)[:2000], NAME, now))
        self.passes += 1
        if not self.svc.first_reconcile.is_set():
            log.info("reconcile: first pass done: equity %.2f, %d position(s), %d open order(s)",
                     snapshot.equity, len(positions), len(orders))
            self.svc.first_reconcile.set()
        return True

    def _positions(self, positions: list[Any], now: int) -> list[str]:
        """Adopt the broker's positions where they persistently disagree; one line each."""
        store = self.svc.store
        broker = {p.symbol: p for p in positions}
        theirs = {s: int(float(p.qty)) for s, p in broker.items()}
        ledger = {p.symbol: p for p in store.positions.values()}
        adopt, self.suspects = disagreements_to_adopt(
            {s: p.qty for s, p in ledger.items()}, theirs, self.suspects, first_pass=self.passes == 0)
        mismatches = [f"{s}: ledger {ledger[s].qty if s in ledger else 0} vs broker {theirs.get(s, 0)}"
                      for s in adopt]
        writes: dict[str, PositionRecord | None] = {}  # None: delete
        for symbol in adopt:
            p, mine = broker.get(symbol), ledger.get(symbol)
            writes[symbol] = None if p is None else PositionRecord(
                symbol=symbol, qty=theirs[symbol], avg_entry_price=float(p.avg_entry_price), updated_ns=now,
                protective_stop_order_id=mine.protective_stop_order_id if mine else None)
        for symbol, mine in ledger.items():
            p = broker.get(symbol)
            if p is not None and mine.qty == theirs[symbol] and abs(mine.avg_entry_price - float(p.avg_entry_price)) > 1e-6:
                # Same quantity: the broker's average price is the truth.
                writes[symbol] = msgspec.structs.replace(mine, avg_entry_price=float(p.avg_entry_price), updated_ns=now)
        if writes:  # most passes agree: no write transaction at all

            def write(txn: Any) -> None:
                for symbol, record in writes.items():
                    if record is None:
                        store.positions.delete(symbol, txn=txn)
                    else:
                        store.positions.put(symbol, record, txn=txn)

            store.transact(write, durable=True)
        return mismatches

    def _orders(self, orders: list[Any]) -> list[str]:
        """Adopt broker orders the ledger lacks; ask the OM to resync ledger orders the broker lacks."""
        store = self.svc.store
        mismatches: list[str] = []
        known = {o.client_order_id for o in orders}
        for order in orders:
            if store.orders.get(order.client_order_id) is None:
                ours = broker_orders.is_ours(order.client_order_id)
                store.put_order(broker_orders.record_from_order(order, reason="adopted by reconciler"))
                what = "order" if ours else "foreign order"
                mismatches.append(f"{what} {order.client_order_id} ({order.symbol}) at broker, not in ledger: adopted")
        stale = [o for o in store.open_orders() if o.broker_order_id and o.client_order_id not in known
                 and o.state not in PENDING]
        if stale:
            self.tell("order_manager", Tick("resync"))
        return mismatches

    def _protect(self, positions: list[Any], orders: list[Any]) -> None:
        """Give each long position without a resting sell order a protective stop."""
        pct = self.cfg.protective_stop_pct / 100.0
        now = time.monotonic()
        for p in positions:
            qty = int(float(p.qty))
            if qty <= 0:
                continue  # shorts are not opened by stockade; nothing to protect against here
            covered = sum(int(float(o.qty or 0)) - int(float(o.filled_qty or 0)) for o in orders
                          if o.symbol == p.symbol and broker_orders.enum_str(o.side) == "sell")
            if covered >= qty:
                continue
            last = self.protect_requested.get(p.symbol, 0.0)
            if now - last < 3 * self.cfg.interval_s:
                continue  # one request in flight, or alerted recently
            if self.svc.trading_state().state == "HALTED":
                # HALTED places no orders at all: say so loudly, leave the choice
                # (resume, or kill to go flat) to the operator.
                self.protect_requested[p.symbol] = now
                self.tell("alerter", Alert("CRITICAL", f"unprotected:{p.symbol}",
                                           f"{p.symbol}: {qty - covered} shares unprotected while HALTED; "
                                           "resume to let stockade place a protective stop, or kill to go flat",
                                           NAME, time.time_ns()))
                continue
            reference = float(p.current_price or p.avg_entry_price)
            stop = round_price(reference * (1.0 - pct), "down")
            self.protect_requested[p.symbol] = now
            log.warning("reconcile: %s position of %d has no exit order; placing a protective stop at %.2f",
                        p.symbol, qty - covered, stop)
            self.tell("alerter", Alert("WARNING", f"unprotected:{p.symbol}",
                                       f"{p.symbol}: {qty - covered} shares unprotected; protective stop at {stop}",
                                       NAME, time.time_ns()))
            self.tell("order_manager", OrderIntent(
                intent_id=f"protect-{uuid.uuid4().hex}", symbol=p.symbol, side="sell", qty=qty - covered,
                order_type="stop", limit_price=None, take_profit=None, stop_loss=None,
                reason="protective stop for an unprotected position", proposal_id="", quote_recv_ns=time.time_ns(),
                reduce_only=True, stop_price=stop))

    def _store_equity(self, account: AccountSnapshot, held: tuple[Position, ...], now: int) -> None:
        store = self.svc.store
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")

        def write(txn: Any) -> None:
            store.equity.add(EquitySnapshot(ts_ns=now, equity=account.equity, cash=account.cash,
                                            buying_power=account.buying_power, last_equity=account.last_equity,
                                            positions_value=sum(p.market_value for p in held)), ts_ns=now, txn=txn)
            if store.counters.get(today, txn=txn) is None:
                # Alpaca's last_equity is the previous close: the day's start.
                store.counters.put(today, DayCounters(date=today, start_equity=account.last_equity or account.equity,
                                                      updated_ns=now), txn=txn)

        store.transact(write, durable=False)
