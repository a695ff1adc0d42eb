"""OrderManager: the only actor that places orders.

Durability: only the intent is synced to disk before the broker sees it.
Acknowledgements, state changes and fills are committed without a sync: they
survive a process crash, and after a power loss they are re-derived from the
broker (pending intents are looked up by client_order_id at start, open
orders are re-synced, positions reconciled), so a sync per event would only
slow the order path.

Exactly-once, in the face of crashes and timeouts:
1. the intent is journaled durably (state "intent") BEFORE the broker sees it;
2. its `client_order_id` is derived from the intent id, so any resend is the
   same order to the broker (a duplicate id is refused, then looked up);
3. an ambiguous failure (timeout, 5xx, 429) is resolved by looking the order
   up by client_order_id before anything is resent;
4. on (re)start every unacknowledged intent is resolved against the broker:
   found -> adopted; not found -> abandoned, never resent (its prices are
   stale and the strategy will decide again).

Trade updates arrive from our own websocket client (`TradeUpdatesStream`),
whose thread posts them into this actor's mailbox; a periodic REST resync
covers anything the stream missed.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from stockade.actors.base import StockadeActor, handles
from stockade.actors.services import Services
from stockade.broker import orders as broker_orders
from stockade.broker.rest import redact
from stockade.broker.token_bucket import TokenBucket
from stockade.broker.trade_stream import TradeUpdatesStream
from stockade.codecs.messages import Alert, OrderIntent, OrderUpdate, Rejection, Tick
from stockade.codecs.records import (
    FillRecord,
    FillRecorded,
    IntentJournaled,
    OrderAcknowledged,
    OrderRecord,
    OrderStateChanged,
    OrderSubmitFailed,
    OrderSubmitted,
)
from stockade.storage.ledger import apply_fill, fill_increment
from stockade.storage.order_states import EVENTS, PENDING, InvalidTransition, next_state

log = logging.getLogger(__name__)

NAME = "order_manager"
MAX_RETRY_SLEEP_S = 1.0


class OrderManager(StockadeActor):
    """Journals, submits and follows orders; keeps the order and fill ledger."""

    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        s = self.svc.settings
        self.settings = s.orders
        self.store = self.svc.store
        self.client = self.svc.broker.trading_client()
        self.bucket = TokenBucket(s.orders.rate_limit_per_min, reserve=s.orders.emergency_reserve)
        self.resolve_pending()
        self.stream = TradeUpdatesStream(
            self.svc.broker.endpoints.trading_stream_url,
            self.svc.broker.key,
            self.svc.broker.secret,
            on_update=self._from_stream,
            on_reconnect=self._stream_reconnected,
        )
        self.stream.start()
        self.every(max(2.0, s.reconciler.interval_s / 3), "resync")

    def teardown(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.stop(timeout=5.0)

    # ---- stream thread -> mailbox ---------------------------------------------------

    def _from_stream(self, update: OrderUpdate) -> None:
        # Runs in the stream's thread: only post, never touch state here.
        self.router.tell(NAME, update, "trade_stream")

    def _stream_reconnected(self) -> None:
        self.router.tell(NAME, Tick("resync"), "trade_stream")

    # ---- intents ----------------------------------------------------------------

    @handles(OrderIntent)
    def on_intent(self, intent: OrderIntent) -> None:
        coid = broker_orders.client_order_id(intent.intent_id)
        if self.store.orders.get(coid) is not None:
            log.info("order %s already in the ledger; not sent again", coid)
            return
        state = self.svc.trading_state().state
        if state == "HALTED" or (state == "REDUCING" and not intent.reduce_only):
            self._refuse(intent, coid, f"trading state is {state}")
            return
        if not self.bucket.take(emergency=intent.reduce_only or intent.order_type == "stop"):
            self._refuse(intent, coid, "order rate limit reached (token bucket empty)")
            return
        now = time.time_ns()
        record = OrderRecord(
            client_order_id=coid,
            intent_id=intent.intent_id,
            symbol=intent.symbol,
            side=intent.side,
            qty=intent.qty,
            order_type=intent.order_type,
            limit_price=intent.limit_price,
            stop_price=intent.stop_price,
            take_profit=intent.take_profit,
            stop_loss=intent.stop_loss,
            order_class="bracket" if intent.take_profit and intent.stop_loss and not intent.reduce_only else "simple",
            time_in_force=self.settings.time_in_force,
            state="intent",
            created_ns=now,
            updated_ns=now,
            reason=intent.reason,
            proposal_id=intent.proposal_id,
            reduce_only=intent.reduce_only,
            quote_recv_ns=intent.quote_recv_ns,
        )

        def journal(txn: Any) -> None:
            self.store.journal.append(IntentJournaled(ts_ns=now, order=record), txn=txn)
            self.store.put_order(record, txn=txn)

        # Durable before the broker hears of it: after a crash we know to ask.
        self.store.transact(journal, durable=True)
        self._submit(record, intent)

    def _refuse(self, intent: OrderIntent, coid: str, reason: str) -> None:
        """A local refusal (trading state, rate limit): nothing reached the broker,
        so it is not an order failure for the circuit breaker; the voter frees the symbol."""
        log.warning("order for %s %d %s refused: %s", intent.side, intent.qty, intent.symbol, reason)
        if intent.proposal_id:
            self.tell("ensemble_voter", Rejection(intent.proposal_id, intent.symbol, "order_manager", reason))

    def _submit(self, record: OrderRecord, intent: OrderIntent) -> None:
        from alpaca.common.exceptions import APIError

        request = broker_orders.build_request(intent, record.client_order_id, record.time_in_force)
        attempts = self.settings.max_retries + 1
        record = _replace(record, sent_ns=time.time_ns())
        last_error = ""
        for attempt in range(1, attempts + 1):
            if not self.is_current():
                return  # replaced while we were blocked: the new instance resolves it
            record = _replace(record, attempts=attempt)
            self._journal_event(OrderSubmitted(ts_ns=time.time_ns(), client_order_id=record.client_order_id, attempt=attempt))
            try:
                order = self.client.submit_order(request)
            except APIError as exc:
                code, status = broker_orders.api_error_code(exc), broker_orders.api_status(exc)
                last_error = f"HTTP {status} code {code}: {redact(exc)}"
                duplicate = code == broker_orders.DUPLICATE_CLIENT_ORDER_ID
                if not duplicate and status is not None and status != 429 and status < 500:
                    self._rejected(record, last_error, attempt)
                    return
                # A duplicate id: an earlier attempt did reach the broker.
                # 429/5xx: maybe placed, maybe not. Either way, look before resending.
                if self._adopt(record, "" if duplicate else last_error):
                    return
            except Exception as exc:  # timeout / connection error: outcome unknown
                last_error = f"{type(exc).__name__}: {redact(exc)}"
                if self._adopt(record, last_error):
                    return
            else:
                self._acknowledged(record, order)
                return
            log.warning("submit %s attempt %d/%d failed: %s", record.client_order_id, attempt, attempts, last_error)
            self._journal_event(
                OrderSubmitFailed(
                    ts_ns=time.time_ns(), client_order_id=record.client_order_id, attempt=attempt,
                    error=last_error, definitive=False,
                )
            )
            if attempt < attempts:
                # Bounded well under the heartbeat timeout: a long sleep here
                # would look like a hang to the supervisor.
                time.sleep(min(self.settings.retry_backoff_s * (2 ** (attempt - 1)), MAX_RETRY_SLEEP_S))
        # Out of attempts with the outcome unknown: the resync resolves it.
        self._set_state(record, "unknown", "submit_unknown", last_error)
        self.tell("alerter", Alert("CRITICAL", f"order-unknown:{record.symbol}",
                                   f"order {record.client_order_id} ({record.side} {record.qty} {record.symbol}) "
                                   f"outcome unknown after {attempts} attempts: {last_error}",
                                   NAME, time.time_ns()))

    def _acknowledged(self, record: OrderRecord, order: Any) -> None:
        broker_id = str(order.id)
        legs = tuple(leg.client_order_id for leg in (order.legs or ()))
        now = time.time_ns()
        status = broker_orders.status_of(order)
        new = self._transition(record, "submit")
        updated = _replace(record, state=new, broker_order_id=broker_id, legs=legs, updated_ns=now)

        def write(txn: Any) -> None:
            self.store.journal.append(OrderAcknowledged(ts_ns=now, client_order_id=record.client_order_id,
                                                        broker_order_id=broker_id), txn=txn)
            self.store.put_order(updated, txn=txn)
            for leg in order.legs or ():
                if self.store.orders.get(leg.client_order_id, txn=txn) is None:
                    self.store.put_order(
                        broker_orders.record_from_order(leg, reason="bracket leg", parent_id=record.client_order_id),
                        txn=txn,
                    )

        self.store.transact(write, durable=False)
        log.info("order placed: %s %d %s (%s, %s) id %s", record.side, record.qty, record.symbol,
                 record.order_class, status, record.client_order_id)
        # The REST answer may already say filled (a fast market order).
        self._apply(broker_orders.update_from_order(order), source="rest")

    def _rejected(self, record: OrderRecord, error: str, attempt: int) -> None:
        now = time.time_ns()
        self._journal_event(OrderSubmitFailed(ts_ns=now, client_order_id=record.client_order_id, attempt=attempt,
                                              error=error, definitive=True))
        self._set_state(record, "rejected", "submit_rejected", error)
        log.warning("order rejected by the broker: %s %d %s: %s", record.side, record.qty, record.symbol, error)
        update = OrderUpdate(event="rejected", client_order_id=record.client_order_id, broker_order_id="",
                             symbol=record.symbol, side=record.side, status="rejected", qty=float(record.qty),
                             filled_qty=0.0, filled_avg_price=None, ts_ns=now, proposal_id=record.proposal_id)
        self.tell("risk_guard", update)
        self.tell("ensemble_voter", update)
        self.tell("alerter", Alert("WARNING", f"order-rejected:{record.symbol}",
                                   f"order {record.side} {record.qty} {record.symbol} rejected: {error}", NAME, now))

    def _adopt(self, record: OrderRecord, after: str = "") -> bool:
        """Look `record` up at the broker by client id; adopt it if the broker has it."""
        try:
            order = self.client.get_order_by_client_id(record.client_order_id)
        except Exception as exc:
            if not broker_orders.is_not_found(exc):
                log.warning("lookup of %s failed: %s", record.client_order_id, redact(exc))
            return False
        if after:
            log.warning("submit of %s: outcome unknown (%s); the broker has it: adopted, not resent",
                        record.client_order_id, after)
        self._acknowledged(record, order)
        return True

    # ---- restart: resolve what the dead instance left -------------------------------

    def resolve_pending(self) -> None:
        """Resolve every intent the broker may or may not have, by client_order_id."""
        pending = [o for o in self.store.open_orders() if o.state in PENDING]
        for record in pending:
            try:
                order = self.client.get_order_by_client_id(record.client_order_id)
            except Exception as exc:
                if broker_orders.is_not_found(exc):
                    event = "abandon" if record.state == "intent" else "not_found"
                    self._set_state(record, next_state(record.state, event), event,
                                    "not at the broker after restart: abandoned, not resent")
                    log.warning("intent %s never reached the broker; abandoned (not resent)", record.client_order_id)
                else:
                    log.warning("could not resolve %s now (%s); will retry", record.client_order_id, redact(exc))
                continue
            log.info("intent %s found at the broker after restart; adopted", record.client_order_id)
            self._acknowledged(record, order)

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what == "resync":
            self.resync()

    def resync(self) -> None:
        """Bring open ledger orders up to date from REST (covers missed stream events).

        One list call for all of them, not one call per order: the REST budget
        (200/min at Alpaca) is shared with the reconciler and the kill switch.
        """
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        self.resolve_pending()
        tracked = [o for o in self.store.open_orders() if o.state not in PENDING and o.broker_order_id]
        if not tracked:
            return
        since = datetime.fromtimestamp(min(o.created_ns for o in tracked) / 1e9 - 60, tz=timezone.utc)
        try:
            orders = self.client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, after=since, limit=500,
                                                             nested=False))
        except Exception as exc:
            log.warning("resync failed: %s", redact(exc))
            return
        by_id = {o.client_order_id: o for o in orders}
        for record in tracked:
            order = by_id.get(record.client_order_id)
            if order is not None:
                self._apply(broker_orders.update_from_order(order), source="resync")

    # ---- updates ----------------------------------------------------------------

    @handles(OrderUpdate)
    def on_update(self, update: OrderUpdate) -> None:
        self._apply(update, source="stream")

    def _apply(self, update: OrderUpdate, source: str) -> None:
        record = self.store.orders.get(update.client_order_id)
        now = time.time_ns()
        adopted = record is None
        if record is None:
            record = OrderRecord(
                client_order_id=update.client_order_id, intent_id="", symbol=update.symbol, side=update.side,
                qty=int(update.qty), order_type="market", state="accepted", broker_order_id=update.broker_order_id,
                created_ns=now, updated_ns=now, reason=f"adopted from {source}",
            )
            log.info("adopting broker order %s (%s %s)", update.client_order_id, update.side, update.symbol)
        event = _event_of(update)
        try:
            new_state = next_state(record.state, event)
        except InvalidTransition as exc:
            log.warning("ignoring %s for %s: %s", event, record.client_order_id, exc)
            return
        filled_qty = int(update.filled_qty)
        increment = fill_increment(record, filled_qty, update.filled_avg_price, update.price if source == "stream" else None)
        if new_state == record.state and increment is None and record.broker_order_id and not adopted:
            return  # nothing new (a replay or a resync that agrees)
        updated = _replace(
            record, state=new_state, broker_order_id=record.broker_order_id or update.broker_order_id or None,
            filled_qty=max(filled_qty, record.filled_qty),
            filled_avg_price=update.filled_avg_price if update.filled_avg_price else record.filled_avg_price,
            updated_ns=now,
        )
        fill = None
        if increment is not None:
            qty, price = increment
            fill = FillRecord(
                exec_id=f"{update.broker_order_id or record.broker_order_id}:{filled_qty}",
                client_order_id=record.client_order_id, broker_order_id=update.broker_order_id or record.broker_order_id,
                symbol=record.symbol, side=record.side, qty=qty, price=price, ts_ns=update.ts_ns, recv_ns=now,
                position_qty=int(update.position_qty) if update.position_qty is not None else None,
            )

        held = 0  # the position after this update, as written in the same transaction

        def write(txn: Any) -> None:
            nonlocal held
            if new_state != record.state:
                self.store.journal.append(OrderStateChanged(ts_ns=now, client_order_id=record.client_order_id,
                                                            old=record.state, new=new_state, event=event), txn=txn)
            self.store.put_order(updated, txn=txn)
            if fill is None:
                return
            position = self.store.positions.get(record.symbol, txn=txn)
            if self.store.fills.get(fill.exec_id, txn=txn) is None:
                self.store.fills.put(fill.exec_id, fill, txn=txn)
                self.store.journal.append(FillRecorded(ts_ns=now, fill=fill), txn=txn)
                position = apply_fill(position, record.symbol, record.side, fill.qty, fill.price, now)
                self.store.positions.put(record.symbol, position, txn=txn)
            held = position.qty if position else 0

        self.store.transact(write, durable=False)
        if fill is not None:
            verb = "bought" if record.side == "buy" else "sold"
            log.info("order filled: %s %d %s at %.2f (position now %d shares)", verb, fill.qty, record.symbol,
                     fill.price, held)
            self.tell("alerter", Alert("INFO", f"fill:{record.client_order_id}",
                                       f"{verb} {fill.qty} {record.symbol} at {fill.price:.2f} (position {held})",
                                       NAME, now))
        if new_state != record.state or fill is not None:
            out = OrderUpdate(event=event, client_order_id=record.client_order_id,
                              broker_order_id=updated.broker_order_id or "", symbol=record.symbol, side=record.side,
                              status=new_state, qty=float(record.qty), filled_qty=float(updated.filled_qty),
                              filled_avg_price=updated.filled_avg_price, ts_ns=now, order_class=record.order_class,
                              price=fill.price if fill else None, fill_qty=float(fill.qty) if fill else None,
                              proposal_id=record.proposal_id)
            self.tell("risk_guard", out)
            self.tell("ensemble_voter", out)

    # ---- helpers ----------------------------------------------------------------

    def _transition(self, record: OrderRecord, event: str) -> Any:
        try:
            return next_state(record.state, event)
        except InvalidTransition:
            return record.state

    def _set_state(self, record: OrderRecord, state: Any, event: str, reason: str) -> None:
        now = time.time_ns()
        updated = _replace(record, state=state, updated_ns=now, last_error=reason or record.last_error)

        def write(txn: Any) -> None:
            self.store.journal.append(OrderStateChanged(ts_ns=now, client_order_id=record.client_order_id,
                                                        old=record.state, new=state, event=event, reason=reason), txn=txn)
            self.store.put_order(updated, txn=txn)

        self.store.transact(write, durable=False)

    def _journal_event(self, event: Any) -> None:
        self.store.journal.append(event, durable=False)


def _event_of(update: OrderUpdate) -> str:
    """The state-machine event for a trade update or a REST status."""
    if update.event == "fill" or update.status == "filled":
        return "fill"
    if update.event == "partial_fill" or update.status == "partially_filled":
        return "partial_fill"
    for candidate in (update.event, update.status):
        if candidate in EVENTS:
            return candidate
    return "new"


def _replace(record: OrderRecord, **changes: Any) -> OrderRecord:
    import msgspec

    return msgspec.structs.replace(record, **changes)
