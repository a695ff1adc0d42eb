"""Reconciler: keeps the ledger in agreement with the broker. The broker is the truth.

At start, every `interval_s`, when the order manager's trade stream comes
back (updates sent while it was down are lost), and on a backoff after a
failed pass: account, positions, open orders, recent
closed orders (their fills) and, when due, the clock from REST. Ledger
positions that disagree are overwritten by the broker's; broker orders the
ledger does not know (a person's orders from the broker's UI included), and
orders whose fills or end the ledger missed, go to the OrderManager as
updates (it alone writes orders and fills, so each fill is recorded once);
every difference is journaled and alerted. A snapshot never moves the
ledger back in time: the OrderManager keeps a per-symbol fill sequence
(`FillMark`), read before the broker is asked and again before anything is
adopted; a symbol with a fill recorded in between is left alone this pass
(no adoption, no protective stop from that snapshot). A long position the
snapshot shows without a stop gets a protective stop requested, re-requested
until one rests: the backstop for shares the order path never heard of (the
OrderManager protects what it hears of at once, and drops a request its
ledger shows covered). At the first pass after the open, each
held position's overnight gap is measured and classed (alerted from HIGH).
The account, positions and clock go to the risk guard; an equity snapshot and
the day's starting equity go to storage. The first successful pass releases
the daemon's READY=1.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import lmdb
import msgspec

from stockade.actors import names, ticks
from stockade.actors.services import Services
from stockade.broker import orders as broker_orders
from stockade.broker.backoff import Backoff
from stockade.broker.liquidation import open_orders
from stockade.broker.order_pages import list_all_orders
from stockade.broker.rest import data_feed, redact
from stockade.broker.token_bucket import limit_client
from stockade.codecs.messages import (
    AccountSnapshot,
    Alert,
    BrokerOrderSeen,
    ClockSnapshot,
    OrderIntent,
    Position,
    ReplaceStop,
    Tick,
)
from stockade.codecs.records import DayCounters, EquitySnapshot, PositionRecord, Reconciled
from stockade.supervisors.base import StockadeActor, handles
from stockade.trading.brackets import round_price
from stockade.trading.gap_risk import gap_class, gap_pct
from stockade.trading.ledger import disagreements_to_adopt, snapshot_stale, uncovered_qty
from stockade.trading.market_hours import exchange_date
from stockade.trading.order_states import PENDING, state_from_broker_status

log = logging.getLogger(__name__)

NAME = names.RECONCILER
RETENTION_EVERY_S = 3600.0
CLOCK_EVERY_S = 60.0  # the clock is re-read this often, and whenever it says open/close is due
BUDGET_WAIT_S = 0.1  # longest wait for a REST token, per call (see broker.token_bucket)
RETRY_BASE_S = 0.5  # first retry of a failed pass (doubling, full jitter, up to half the interval)


class Reconciler(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        self.cfg = self.svc.settings.reconciler
        self.client = limit_client(self.svc.broker.trading_client(), self.svc.rest_bucket(), BUDGET_WAIT_S)
        self.protect_requested: dict[str, float] = {}
        self.suspects: dict[str, tuple[int, int]] = {}  # symbol -> (ledger, broker) seen last pass
        self.order_suspects: set[tuple[str, int, str]] = set()  # (coid, broker filled, state) seen last pass
        self.passes = 0
        self.market_clock: Any = None  # the broker's market clock (self.clock is the runtime's)
        self.clock_read = 0.0
        self.was_open: bool | None = None
        self.highs: dict[str, float] = {}  # symbol -> highest price seen while held (trailing stop)
        # First pass from a tick, not here: a broker outage at start must not
        # fail setup (and crash-loop the tree); it is retried every interval.
        self.router.tell(self.name, Tick(ticks.RECONCILE), self.name)
        self.every(self.cfg.interval_s, ticks.RECONCILE)
        self.every(RETENTION_EVERY_S, ticks.RETENTION)
        # A failed pass (429s, 5xx, a timeout) is tried again on a backoff,
        # not a whole interval later: it is the backstop for shares the order
        # path never heard of, within `max_unprotected_s`.
        self.retry = Backoff(RETRY_BASE_S, max(RETRY_BASE_S, self.cfg.interval_s / 2))
        self.retry_at: float | None = None
        self.every(min(RETRY_BASE_S, self.cfg.interval_s), ticks.RETRY)

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        now = self.clock.monotonic()
        if tick.what == ticks.RECONCILE:
            self._pass()
        elif tick.what == ticks.RETRY:
            if self.retry_at is not None and now >= self.retry_at:
                self._pass()
        elif tick.what == ticks.RETENTION:
            # Alerts, decisions and equity snapshots are bounded (Retention's
            # defaults); the journal and the order ledger are never trimmed.
            trimmed = self.svc.store.apply_retention(now_ns=self.clock.now_ns())
            if any(trimmed.values()):
                log.info("retention: trimmed %s", trimmed)

    def _pass(self) -> None:
        if self.reconcile():
            self.retry.reset()
            self.retry_at = None
        else:
            self.retry_at = self.clock.monotonic() + self.retry.next_delay()

    def reconcile(self) -> bool:
        # The ledger's fill marks before the first request: a symbol whose
        # mark moves while we wait for the broker has a fill newer than the
        # snapshot may show, so the snapshot is not adopted for it.
        marks = self.svc.store.fill_seqs()
        try:
            # Orders before positions: a fill between the two reads makes the
            # positions smaller, never the stops fewer than the shares.
            orders = open_orders(self.client)
            positions = self.client.get_all_positions()
            account = self.client.get_account()
            recent = self._recent_closed()
            clock = self._clock()
        except Exception as exc:
            log.warning("reconcile: broker unreachable: %s", redact(exc))
            return False
        now = self.clock.now_ns()
        # Adopt at once only on the daemon's first pass, before any trading; a
        # restarted reconciler waits for a difference to show twice.
        first_pass = not self.svc.first_reconcile.is_set()
        position_mismatches, stale = self._positions(positions, now, marks, first_pass)
        mismatches = position_mismatches + self._orders(orders, recent, first_pass, stale)
        stale |= snapshot_stale(marks, self.svc.store.fill_seqs())  # fills recorded up to now
        if stale:
            log.info(
                "reconcile: fills of %s recorded while the broker answered; its snapshot of them is not used",
                ",".join(sorted(stale)),
            )
        fresh = [p for p in positions if p.symbol not in stale]
        self._protect(fresh, orders)
        self._trail(fresh, orders)
        if clock.is_open and not self.was_open:
            self._gaps(positions)
        self.was_open = bool(clock.is_open)
        held = tuple(
            Position(
                p.symbol,
                float(p.qty),
                float(p.avg_entry_price),
                float(p.market_value or 0),
                float(p.unrealized_pl or 0),
            )
            for p in positions
        )
        snapshot = msgspec.structs.replace(broker_orders.account_snapshot(account, self.clock.now_ns()), positions=held)
        self.tell(names.RISK_GUARD, snapshot)
        next_close = getattr(clock, "next_close", None)
        market = ClockSnapshot(bool(clock.is_open), now, int(next_close.timestamp() * 1e9) if next_close else 0)
        self.tell(names.RISK_GUARD, market)
        # A closed market is quiet: the streamer must not take that for a dead socket.
        self.tell(names.QUOTE_STREAMER, market)
        # For the dashboard: the broker's marks and the clock, as of this pass.
        self.svc.stats["broker_positions"] = {
            p.symbol: {"market_value": p.market_value, "unrealized_pl": p.unrealized_pl} for p in held
        }
        self.svc.stats["market_clock"] = {
            "is_open": bool(clock.is_open),
            "next_close_ns": market.next_close_ns,
            "next_open_ns": int(clock.next_open.timestamp() * 1e9) if getattr(clock, "next_open", None) else 0,
            "as_of_ns": now,
        }
        self._store_equity(snapshot, held, now)
        self.svc.store.journal.append(
            Reconciled(ts_ns=now, positions=len(positions), open_orders=len(orders), mismatches=tuple(mismatches)),
            durable=False,
        )
        if mismatches:
            log.warning("reconcile: %d mismatch(es), broker adopted: %s", len(mismatches), "; ".join(mismatches))
            self.tell(names.ALERTER, Alert("WARNING", "reconcile-mismatch", "; ".join(mismatches)[:2000], NAME, now))
        self.passes += 1
        if not self.svc.first_reconcile.is_set():
            log.info(
                "reconcile: first pass done: equity %.2f, %d position(s), %d open order(s)",
                snapshot.equity,
                len(positions),
                len(orders),
            )
            self.svc.first_reconcile.set()
        return True

    def _positions(
        self, positions: list[Any], now: int, marks: dict[str, int], first_pass: bool
    ) -> tuple[list[str], set[str]]:
        """Adopt the broker's positions where they persistently disagree; one line each.

        Returns the mismatch lines and the symbols whose snapshot is stale
        (a fill recorded since `marks` were read): those are left alone.
        """
        store = self.svc.store
        broker = {p.symbol: p for p in positions}
        theirs = {s: int(float(p.qty)) for s, p in broker.items()}
        with store.read() as txn:
            ledger = {p.symbol: p for p in store.positions.values(txn=txn)}
            stale = snapshot_stale(marks, store.fill_seqs(txn=txn))
        adopt, self.suspects = disagreements_to_adopt(
            {s: p.qty for s, p in ledger.items()}, theirs, self.suspects, first_pass=first_pass, stale=stale
        )
        writes: dict[str, PositionRecord | None] = {}  # None: delete
        for symbol in adopt:
            p, mine = broker.get(symbol), ledger.get(symbol)
            writes[symbol] = (
                None
                if p is None
                else PositionRecord(
                    symbol=symbol,
                    qty=theirs[symbol],
                    avg_entry_price=float(p.avg_entry_price),
                    updated_ns=now,
                    protective_stop_order_id=mine.protective_stop_order_id if mine else None,
                )
            )
        for symbol, mine in ledger.items():
            p = broker.get(symbol)
            if (
                p is not None
                and symbol not in stale
                and mine.qty == theirs[symbol]
                and abs(mine.avg_entry_price - float(p.avg_entry_price)) > 1e-6
            ):
                # Same quantity: the broker's average price is the truth.
                writes[symbol] = msgspec.structs.replace(mine, avg_entry_price=float(p.avg_entry_price), updated_ns=now)
        late: set[str] = set()
        if writes:  # most passes agree: no write transaction at all

            def write(txn: lmdb.Transaction) -> None:
                # A fill may have landed since the read above: never write over it.
                late.clear()
                late.update(snapshot_stale(marks, store.fill_seqs(txn=txn)) & set(writes))
                for symbol, record in writes.items():
                    if symbol in late:
                        continue
                    if record is None:
                        store.positions.delete(symbol, txn=txn)
                    else:
                        store.positions.put(symbol, record, txn=txn)

            store.transact(write, durable=True)
        mismatches = [
            f"{s}: ledger {ledger[s].qty if s in ledger else 0} vs broker {theirs.get(s, 0)}"
            for s in adopt
            if s not in late
        ]
        return mismatches, stale | late

    def _clock(self) -> Any:
        """The market clock, re-read every CLOCK_EVERY_S or when an open/close is due."""
        now = self.clock.monotonic()
        due = self.market_clock is None or now - self.clock_read >= CLOCK_EVERY_S
        if not due:
            edge = self.market_clock.next_close if self.market_clock.is_open else self.market_clock.next_open
            due = edge is not None and datetime.fromtimestamp(self.clock.now_ns() / 1e9, UTC) >= edge
        if due:
            self.market_clock, self.clock_read = self.client.get_clock(), now
        return self.market_clock

    def _recent_closed(self) -> list[Any]:
        """Orders closed within `fills_lookback_s`: their fills, against the ledger's."""
        since = datetime.fromtimestamp(self.clock.now_ns() / 1e9 - self.cfg.fills_lookback_s, tz=UTC)
        return list_all_orders(self.client, "closed", after=since)

    def _orders(self, orders: list[Any], recent: list[Any], first_pass: bool, stale_symbols: set[str]) -> list[str]:
        """Hand the OM every broker order the ledger lacks or is behind on; one line per difference.

        The OM is the only writer of orders and fills, so it records the fills
        once; an order placed by a person in the broker's UI is adopted there.
        A difference is reported when a second pass still sees it (a fill races
        the snapshot), but handed over at once: the OM ignores what it knows.
        """
        store = self.svc.store
        mismatches: list[str] = []
        seen: set[tuple[str, int, str]] = set()
        for order in [*orders, *recent]:
            mine = store.orders.get(order.client_order_id)
            filled = int(float(order.filled_qty or 0))
            theirs = state_from_broker_status(broker_orders.status_of(order))
            if mine is not None and mine.filled_qty == filled and (mine.state == theirs or theirs == "unknown"):
                continue
            if mine is not None and mine.state in PENDING:
                continue  # the OM is resolving it by client_order_id right now
            # On the first pass the broker's positions were just adopted whole:
            # they already hold these fills (unless that symbol's snapshot was stale).
            counted = first_pass and order.symbol not in stale_symbols
            self.tell(
                names.ORDER_MANAGER,
                BrokerOrderSeen(
                    broker_orders.update_from_order(order, now_ns=self.clock.now_ns()), counted_in_positions=counted
                ),
            )
            key = (order.client_order_id, filled, theirs)
            seen.add(key)
            if mine is None:
                # Ours: placed by a previous life; external: placed by a person (adopted, not fought).
                what = "order" if broker_orders.is_ours(order.client_order_id) else "external order"
                mismatches.append(f"{what} {order.client_order_id} ({order.symbol}) at broker, not in ledger: adopted")
            elif key in self.order_suspects:
                mismatches.append(
                    f"order {order.client_order_id} ({order.symbol}): ledger {mine.state} "
                    f"{mine.filled_qty} filled vs broker {theirs} {filled}: broker adopted"
                )
        self.order_suspects = seen
        known = {o.client_order_id for o in orders} | {o.client_order_id for o in recent}
        stale = [
            o
            for o in store.open_orders()
            if o.broker_order_id and o.client_order_id not in known and o.state not in PENDING
        ]
        if stale:
            self.tell(names.ORDER_MANAGER, Tick(ticks.RESYNC))
        return mismatches

    def _protect(self, positions: list[Any], orders: list[Any]) -> None:
        """Give each long position without a stop a protective stop, within `max_unprotected_s`."""
        pct = self.cfg.protective_stop_pct / 100.0
        now = self.clock.monotonic()
        in_flight = {
            o.symbol
            for o in self.svc.store.open_orders()
            if o.side == "sell" and o.order_type == "stop" and o.reduce_only
        }
        # The orders by symbol, in the snapshot's order: one walk of them, not
        # one per position (hundreds of resting legs, tens of positions).
        by_symbol: dict[str, list[Any]] = {}
        for o in orders:
            by_symbol.setdefault(o.symbol, []).append(o)
        for p in positions:
            qty = int(float(p.qty))
            if qty <= 0:
                continue  # shorts are not opened by stockade; nothing to protect against here
            bare = uncovered_qty(
                qty,
                [
                    (
                        broker_orders.enum_str(o.type or o.order_type),
                        int(float(o.qty or 0)) - int(float(o.filled_qty or 0)),
                    )
                    for o in by_symbol.get(p.symbol, ())
                    if broker_orders.enum_str(o.side) == "sell"
                ],
            )
            if bare <= 0:
                self.protect_requested.pop(p.symbol, None)
                continue
            covered = qty - bare
            if self.svc.trading_state().state == "HALTED":
                # HALTED places no orders at all. The OrderManager's watch tells
                # the operator once the bound is passed (resume, or kill to go
                # flat); not here at every pass: a kill halts, cancels the stops,
                # then sells, and a CRITICAL in that window is noise.
                continue
            last = self.protect_requested.get(p.symbol)
            # Asked already and that stop is still on its way (in the ledger, not
            # yet in this pass's broker snapshot): give it half the bound to show
            # up. Once it failed (rejected, abandoned), ask again at once.
            if last is not None and now - last < self.cfg.max_unprotected_s / 2 and p.symbol in in_flight:
                continue
            reference = float(p.current_price or p.avg_entry_price)
            stop = round_price(reference * (1.0 - pct), "down")
            self.protect_requested[p.symbol] = now
            log.warning(
                "reconcile: %s position of %d has no exit order; placing a protective stop at %.2f",
                p.symbol,
                qty - covered,
                stop,
            )
            self.tell(
                names.ALERTER,
                Alert(
                    "WARNING",
                    f"unprotected:{p.symbol}",
                    f"{p.symbol}: {qty - covered} shares unprotected; protective stop at {stop}",
                    NAME,
                    self.clock.now_ns(),
                ),
            )
            self.tell(
                names.ORDER_MANAGER,
                OrderIntent(
                    intent_id=f"protect-{self.clock.new_id()}",
                    symbol=p.symbol,
                    side="sell",
                    qty=qty - covered,
                    order_type="stop",
                    limit_price=None,
                    take_profit=None,
                    stop_loss=None,
                    reason="protective stop for an unprotected position",
                    proposal_id="",
                    quote_recv_ns=self.clock.now_ns(),
                    reduce_only=True,
                    stop_price=stop,
                ),
            )

    def _trail(self, positions: list[Any], orders: list[Any]) -> None:
        """The local trailing stop: move each live sell stop up to `trailing_stop_pct` below the high.

        The high is the highest price seen at a pass while the position is
        held (sampled every `interval_s`); stops only ever move up.
        """
        pct = self.svc.settings.orders.trailing_stop_pct / 100.0
        held = {p.symbol: p for p in positions if int(float(p.qty)) > 0}
        self.highs = {s: h for s, h in self.highs.items() if s in held}
        if pct <= 0:
            return
        for symbol, p in held.items():
            price = float(p.current_price or 0)
            if price <= 0:
                continue
            high = self.highs[symbol] = max(self.highs.get(symbol, 0.0), price)
            target = round_price(high * (1.0 - pct), "down")
            for o in orders:
                if (
                    o.symbol != symbol
                    or broker_orders.enum_str(o.side) != "sell"
                    or broker_orders.enum_str(o.type or o.order_type) != "stop"
                    or broker_orders.status_of(o) not in ("new", "accepted", "partially_filled")
                ):
                    continue
                current = float(o.stop_price or 0)
                if target > current + 0.005 and target < price:
                    self.tell(
                        names.ORDER_MANAGER,
                        ReplaceStop(o.client_order_id, target, f"trailing stop {pct * 100:g}% below {high:.2f}"),
                    )

    def _gaps(self, positions: list[Any]) -> None:
        """At the first pass after the open: each held position's overnight gap, classed and alerted above HIGH."""
        from alpaca.data.requests import StockSnapshotRequest

        held = sorted(p.symbol for p in positions if int(float(p.qty)) != 0)
        if not held:
            return
        try:
            snapshots = self.svc.broker.data_client().get_stock_snapshot(
                StockSnapshotRequest(symbol_or_symbols=held, feed=data_feed(self.svc.settings.alpaca.feed))
            )
        except Exception as exc:
            log.warning("gap risk: no snapshots (%s); not measured today", redact(exc))
            return
        cfg = self.cfg
        report: dict[str, Any] = {}
        for symbol in held:
            snap = snapshots.get(symbol) if isinstance(snapshots, dict) else None
            prev = getattr(getattr(snap, "previous_daily_bar", None), "close", None)
            today = getattr(snap, "daily_bar", None)
            first = getattr(today, "open", None) or getattr(getattr(snap, "latest_trade", None), "price", None)
            if not prev or not first:
                log.warning("gap risk: %s has no previous close or open price; not measured", symbol)
                continue
            pct = gap_pct(float(prev), float(first))
            kind = gap_class(pct, cfg.gap_moderate_pct, cfg.gap_high_pct, cfg.gap_extreme_pct)
            report[symbol] = {
                "gap_pct": round(pct, 3),
                "class": kind,
                "previous_close": float(prev),
                "open": float(first),
            }
            log.info("gap risk: %s opened %+.2f%% from the previous close (%s)", symbol, pct, kind)
            if kind in ("HIGH", "EXTREME"):
                self.tell(
                    names.ALERTER,
                    Alert(
                        "CRITICAL" if kind == "EXTREME" else "WARNING",
                        f"gap:{symbol}",
                        f"{symbol} gapped {pct:+.2f}% at the open ({kind}): previous close "
                        f"{float(prev):.2f}, open {float(first):.2f}",
                        NAME,
                        self.clock.now_ns(),
                    ),
                )
        self.svc.stats["gap_risk"] = report

    def _store_equity(self, account: AccountSnapshot, held: tuple[Position, ...], now: int) -> None:
        store = self.svc.store
        today = exchange_date(now)  # the trading day, not the UTC one

        def write(txn: lmdb.Transaction) -> None:
            store.equity.add(
                EquitySnapshot(
                    ts_ns=now,
                    equity=account.equity,
                    cash=account.cash,
                    buying_power=account.buying_power,
                    last_equity=account.last_equity,
                    positions_value=sum(p.market_value for p in held),
                ),
                ts_ns=now,
                txn=txn,
            )
            if not store.counters.has(today, txn=txn):
                # Alpaca's last_equity is the previous close: the day's start.
                store.counters.put(
                    today,
                    DayCounters(date=today, start_equity=account.last_equity or account.equity, updated_ns=now),
                    txn=txn,
                )

        store.transact(write, durable=False)
