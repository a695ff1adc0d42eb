"""OrderManager: the only actor that places orders.

Durability: only the intent is synced to disk before the broker sees it.
Acknowledgements, state changes and fills are committed without a sync: they
survive a process crash, and after a power loss they are re-derived from the
broker (pending intents are looked up by client_order_id at start, open
orders are re-synced, positions reconciled), so a sync per event would only
slow the order path. The first attempt's `OrderSubmitted` is written in the
intent's own transaction: in the "safe" sync mode every commit flushes, and a
commit of its own would cost one more flush between the intent and the POST.

Exactly-once, in the face of crashes and timeouts:
1. the intent is journaled durably (state "intent") BEFORE the broker sees it;
2. its `client_order_id` is derived from the intent id, so any resend is the
   same order to the broker (a duplicate id is refused, then looked up);
3. an ambiguous failure (timeout, 5xx, a lost response) is resolved by
   looking the order up by client_order_id before anything is resent; a 429
   is not ambiguous: the broker refused before doing anything, so it is
   resent as it is, and after `max_retries` the intent is abandoned as "not
   sent" (WARNING `order-not-sent`), never reported as an unknown outcome;
4. on (re)start every unacknowledged intent is resolved against the broker:
   found -> adopted; not found -> abandoned, never resent (its prices are
   stale and the strategy will decide again).

Trade updates arrive from our own websocket client (`TradeUpdatesStream`),
whose thread posts them into this actor's mailbox; a periodic REST resync
covers anything the stream missed, and while the stream is down open orders
are polled every `orders.poll_interval_s` instead. Fills are recorded once:
each is keyed by (broker order id, cumulative filled qty), so the stream, a
resync and a replay of either all name the same execution.

Protection (actors/order_protection.py, its pure part trading/protection.py):
a fill or a sell order that ended leaves no long shares without a stop; a
protective stop goes out through this actor's own intent path.

Every REST call takes a token from the API key's shared budget
(`broker.token_bucket`); ordinary orders never spend the emergency reserve,
and only protective stops spend the protection reserve above it.
Retries (5xx, 429, timeouts, a spent local budget) wait an exponentially
growing, fully jittered delay; any other 4xx is a definitive rejection,
mapped to a reason (wash_trade, buying_power, insufficient_qty) and
alerted.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from typing import Any, cast

import lmdb
import msgspec

from stockade.actors import names, ticks
from stockade.actors.order_protection import OrderProtection
from stockade.actors.services import Services
from stockade.broker import orders as broker_orders
from stockade.broker.backoff import Backoff
from stockade.broker.order_pages import list_all_orders
from stockade.broker.rest import redact
from stockade.broker.token_bucket import BudgetSpent, limit_client
from stockade.codecs.messages import (
    Alert,
    BrokerOrderSeen,
    OrderIntent,
    OrderUpdate,
    Rejection,
    ReplaceStop,
    Tick,
)
from stockade.codecs.records import (
    FillMark,
    FillRecord,
    FillRecorded,
    IntentJournaled,
    JournalEvent,
    OrderAcknowledged,
    OrderRecord,
    OrderState,
    OrderStateChanged,
    OrderSubmitFailed,
    OrderSubmitted,
    OrderType,
)
from stockade.supervisors.base import StockadeActor, handles
from stockade.trading.ledger import apply_fill, fill_increment
from stockade.trading.order_states import EVENTS, PENDING, TERMINAL, InvalidTransition, next_state
from stockade.trading.protection import is_protective

log = logging.getLogger(__name__)

NAME = names.ORDER_MANAGER
MAX_RETRY_SLEEP_S = 1.0
# Longest a REST call waits for a token of the shared budget: a handler must
# stay well under the heartbeat timeout.
BUDGET_WAIT_S = 0.1
# How often the ledger's long positions are checked for shares without a stop
# (a fill checks its own symbol at once; this catches everything else and
# drives the retries of a stop the broker refused).
PROTECT_CHECK_S = 0.5


class OrderManager(StockadeActor):
    """Journals, submits and follows orders; keeps the order and fill ledger."""

    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        s = self.svc.settings
        self.settings = s.orders
        self.store = self.svc.store
        self.bucket = self.svc.rest_bucket()
        self.client = limit_client(self.svc.broker.trading_client(), self.bucket, BUDGET_WAIT_S)
        # Protective stops (and their look-ups) may spend the protection reserve: new entries wait, they do not.
        self.protect_client = limit_client(self.svc.broker.trading_client(), self.bucket, BUDGET_WAIT_S, protect=True)
        self.rng = random.Random(self.clock.new_id())  # seeded by the clock: a backtest is repeatable
        self.protection = OrderProtection(self, self.rng)
        self.resolve_pending()
        self.stream = self.svc.broker.trade_updates(on_update=self._from_stream, on_reconnect=self._stream_reconnected)
        self.stream.start()
        # A safety net only: the reconciler compares recent orders every pass
        # and the poll covers a down stream.
        self.every(max(5.0, s.reconciler.interval_s), ticks.RESYNC)
        self.every(s.orders.poll_interval_s, ticks.POLL)
        self.every(PROTECT_CHECK_S, ticks.PROTECT)

    def teardown(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.stop(timeout=5.0)

    # ---- stream thread -> mailbox ---------------------------------------------------

    def _from_stream(self, update: OrderUpdate) -> None:
        # Runs in the stream's thread: only post, never touch state here.
        self.router.tell(NAME, update, "trade_stream")

    def _stream_reconnected(self) -> None:
        self.router.tell(NAME, Tick(ticks.RESYNC), "trade_stream")
        # Our orders are re-synced by REST; orders placed by hand while the
        # stream was down (and their fills) only a reconcile pass finds.
        self.router.tell(names.RECONCILER, Tick(ticks.RECONCILE), "trade_stream")

    # ---- intents ----------------------------------------------------------------

    @handles(OrderIntent)
    def on_intent(self, intent: OrderIntent) -> None:
        coid = broker_orders.client_order_id(intent.intent_id)
        if self.store.orders.has(coid):
            log.info("order %s already in the ledger; not sent again", coid)
            return
        state = self.svc.trading_state().state
        if state == "HALTED" or (state == "REDUCING" and not intent.reduce_only):
            self._refuse(intent, coid, f"trading state is {state}")
            return
        protective = is_protective(intent)
        if protective:
            screened = self.protection.screen(intent)
            if screened is None:
                return
            intent = screened
        if not self.bucket.available(1, protect=protective):
            self._refuse(intent, coid, "REST budget spent (token bucket at its reserve)")
            return
        now = self.clock.now_ns()
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
            # Extended-hours orders go out as DAY whatever the setting (build_request).
            time_in_force="day" if intent.extended_hours else self.settings.time_in_force,
            state="intent",
            created_ns=now,
            updated_ns=now,
            reason=intent.reason,
            proposal_id=intent.proposal_id,
            reduce_only=intent.reduce_only,
            quote_recv_ns=intent.quote_recv_ns,
        )

        def journal(txn: lmdb.Transaction) -> None:
            self.store.journal.append(IntentJournaled(ts_ns=now, order=record), txn=txn)
            # Attempt 1 goes out right after this commit. Journaled here, it
            # costs no flush of its own (see the module docstring); if the
            # process dies before the POST, the restart resolves the intent by
            # looking it up, as it would after any attempt.
            self.store.journal.append(
                OrderSubmitted(ts_ns=now, client_order_id=record.client_order_id, attempt=1), txn=txn
            )
            self.store.put_order(record, txn=txn)

        # Durable before the broker hears of it: after a crash we know to ask.
        self.store.transact(journal, durable=True)
        self._submit(record, intent)

    def _refuse(self, intent: OrderIntent, coid: str, reason: str) -> None:
        """A local refusal (trading state, rate limit): nothing reached the broker,
        so it is not an order failure for the circuit breaker; the voter frees the symbol."""
        log.warning("order for %s %d %s refused: %s", intent.side, intent.qty, intent.symbol, reason)
        if intent.proposal_id:
            self.tell(names.ENSEMBLE_VOTER, Rejection(intent.proposal_id, intent.symbol, "order_manager", reason))

    def _submit(self, record: OrderRecord, intent: OrderIntent) -> None:
        request = broker_orders.build_request(intent, record.client_order_id, record.time_in_force)
        attempts = self.settings.max_retries + 1
        record = _replace(record, sent_ns=self.clock.now_ns())
        last_error = ""
        base = self.settings.retry_backoff_s
        backoff = Backoff(base, max(base, MAX_RETRY_SLEEP_S), rng=self.rng) if base > 0 else None
        in_doubt = False  # an earlier attempt may have placed it: look before sending again
        maybe_sent = False  # some attempt's body may have been processed (timeout, 5xx, lost response)
        for attempt in range(1, attempts + 1):
            if not self.is_current():
                return  # replaced while we were blocked: the new instance resolves it
            record = _replace(record, attempts=attempt)
            if in_doubt:
                found = self._find(record, last_error)
                if found == "found":
                    return
                in_doubt = found == "unknown"
            if in_doubt:
                # The look-up itself failed: never resend blindly; look again next attempt.
                outcome = "in_doubt"
            else:
                outcome, last_error = self._send(record, request, attempt)
            if outcome == "done":
                return
            in_doubt = outcome == "in_doubt"
            maybe_sent = maybe_sent or outcome != "not_sent"
            log.warning("submit %s attempt %d/%d failed: %s", record.client_order_id, attempt, attempts, last_error)
            self._journal_event(
                OrderSubmitFailed(
                    ts_ns=self.clock.now_ns(),
                    client_order_id=record.client_order_id,
                    attempt=attempt,
                    error=last_error,
                    definitive=False,
                )
            )
            if attempt < attempts and backoff is not None:
                # Full jitter, capped well under the heartbeat timeout: a long
                # sleep here would look like a hang to the supervisor.
                self.clock.sleep(backoff.next_delay())
        if not maybe_sent:
            # Every attempt was refused before the broker did anything (429, or
            # the local budget): the outcome is known, nothing was placed.
            self._not_sent(record, intent, attempts, last_error)
            return
        # Out of attempts with the outcome unknown: the resync resolves it.
        self._set_state(record, "unknown", "submit_unknown", last_error)
        self.tell(
            names.ALERTER,
            Alert(
                "CRITICAL",
                f"order-unknown:{record.symbol}",
                f"order {record.client_order_id} ({record.side} {record.qty} {record.symbol}) "
                f"outcome unknown after {attempts} attempts: {last_error}",
                NAME,
                self.clock.now_ns(),
            ),
        )

    def _not_sent(self, record: OrderRecord, intent: OrderIntent, attempts: int, error: str) -> None:
        """The rule for an order the broker never took: abandoned after its
        retries, never resent later (its prices are stale; the strategy, or the
        protection of the position, decides again)."""
        reason = f"not sent: refused before placing on all {attempts} attempts ({error})"
        self._set_state(record, "canceled", "abandon", reason)
        self.tell(
            names.ALERTER,
            Alert(
                "WARNING",
                f"order-not-sent:{record.symbol}",
                f"order {record.client_order_id} ({record.side} {record.qty} {record.symbol}) {reason}; abandoned",
                NAME,
                self.clock.now_ns(),
            ),
        )
        self._refuse(intent, record.client_order_id, reason)

    def _send(self, record: OrderRecord, request: Any, attempt: int) -> tuple[str, str]:
        """One submit: ("done", "") when the broker has it or refused it for
        good, ("not_sent", error) when it was refused before anything happened
        (429, the local budget), ("retry", error) when an ambiguous attempt was
        looked up and is not at the broker, ("in_doubt", error) when it may
        have it and the look-up could not tell."""
        from alpaca.common.exceptions import APIError

        if attempt > 1:  # the first is journaled with the intent (on_intent)
            self._journal_event(
                OrderSubmitted(ts_ns=self.clock.now_ns(), client_order_id=record.client_order_id, attempt=attempt)
            )
        try:
            order = self._client_for(record).submit_order(request)
        except BudgetSpent as exc:
            return "not_sent", str(exc)  # not sent: nothing to look up
        except APIError as exc:
            code, status = broker_orders.api_error_code(exc), broker_orders.api_status(exc)
            error = f"HTTP {status} code {code}: {redact(exc)}"
            duplicate = code == broker_orders.DUPLICATE_CLIENT_ORDER_ID
            if broker_orders.is_not_taken(status) and not duplicate:
                return "not_sent", error  # refused before anything happened
            if not duplicate and not broker_orders.is_retryable(status):
                reason = broker_orders.rejection_reason(code, broker_orders.api_message(exc))
                self._rejected(record, error, attempt, reason)
                return "done", ""
            # A duplicate id: an earlier attempt did reach the broker. 5xx:
            # maybe placed, maybe not. Either way, look before resending.
            found = self._find(record, "" if duplicate else error)
        except Exception as exc:  # timeout / connection error: outcome unknown
            error = f"{type(exc).__name__}: {redact(exc)}"
            found = self._find(record, error)
        else:
            self._acknowledged(record, order)
            return "done", ""
        if found == "found":
            return "done", ""
        return ("in_doubt" if found == "unknown" else "retry"), error

    def _acknowledged(self, record: OrderRecord, order: Any) -> None:
        stored = self.store.orders.get(record.client_order_id)
        if stored is not None:
            # The ledger's progress may be newer than the caller's copy (never
            # step a fill back); the caller's send bookkeeping is newer than its.
            record = _replace(
                record,
                state=stored.state,
                filled_qty=stored.filled_qty,
                filled_avg_price=stored.filled_avg_price,
                broker_order_id=stored.broker_order_id or record.broker_order_id,
            )
        broker_id = str(order.id)
        legs = tuple(leg.client_order_id for leg in (order.legs or ()))
        now = self.clock.now_ns()
        status = broker_orders.status_of(order)
        new = self._transition(record, "submit")
        updated = _replace(record, state=new, broker_order_id=broker_id, legs=legs, updated_ns=now)

        def write(txn: lmdb.Transaction) -> None:
            self.store.journal.append(
                OrderAcknowledged(ts_ns=now, client_order_id=record.client_order_id, broker_order_id=broker_id), txn=txn
            )
            self.store.put_order(updated, txn=txn)
            for leg in order.legs or ():
                if not self.store.orders.has(leg.client_order_id, txn=txn):
                    # Unfilled here: its fills, if any, are recorded by _apply.
                    self.store.put_order(
                        broker_orders.record_from_order(
                            leg,
                            reason="bracket leg",
                            parent_id=record.client_order_id,
                            now_ns=self.clock.now_ns(),
                            unfilled=True,
                        ),
                        txn=txn,
                    )

        self.store.transact(write, durable=False)
        log.info(
            "order placed: %s %d %s (%s, %s) id %s",
            record.side,
            record.qty,
            record.symbol,
            record.order_class,
            status,
            record.client_order_id,
        )
        # The REST answer may already say filled (a fast market order), and
        # an order found by a look-up may have legs that traded meanwhile.
        self._apply(broker_orders.update_from_order(order, now_ns=self.clock.now_ns()), source="rest")
        for leg in order.legs or ():
            self._apply(broker_orders.update_from_order(leg, now_ns=self.clock.now_ns()), source="rest")

    def _rejected(self, record: OrderRecord, error: str, attempt: int, reason: str) -> None:
        now = self.clock.now_ns()
        self._journal_event(
            OrderSubmitFailed(
                ts_ns=now, client_order_id=record.client_order_id, attempt=attempt, error=error, definitive=True
            )
        )
        self._set_state(record, "rejected", "submit_rejected", f"{reason}: {error}")
        log.warning(
            "order rejected by the broker (%s): %s %d %s: %s", reason, record.side, record.qty, record.symbol, error
        )
        update = OrderUpdate(
            event="rejected",
            client_order_id=record.client_order_id,
            broker_order_id="",
            symbol=record.symbol,
            side=record.side,
            status="rejected",
            qty=float(record.qty),
            filled_qty=0.0,
            filled_avg_price=None,
            ts_ns=now,
            proposal_id=record.proposal_id,
            reason=reason,
        )
        self.tell(names.RISK_GUARD, update)
        self.tell(names.ENSEMBLE_VOTER, update)
        self.tell(
            names.ALERTER,
            Alert(
                "WARNING",
                f"order-rejected:{reason}:{record.symbol}",
                f"order {record.side} {record.qty} {record.symbol} rejected ({reason}): {error}",
                NAME,
                now,
            ),
        )

    def _adopt(self, record: OrderRecord, after: str = "") -> bool:
        """Look `record` up at the broker by client id; adopt it if the broker has it."""
        return self._find(record, after) == "found"

    def _find(self, record: OrderRecord, after: str = "") -> str:
        """Look `record` up by client id: "found" (and adopted), "absent" (the
        broker says so), or "unknown" (the look-up failed)."""
        try:
            order = self._client_for(record).get_order_by_client_id(record.client_order_id)
        except Exception as exc:
            if broker_orders.is_not_found(exc):
                return "absent"
            log.warning("lookup of %s failed: %s", record.client_order_id, redact(exc))
            return "unknown"
        if after:
            log.warning(
                "submit of %s: outcome unknown (%s); the broker has it: adopted, not resent",
                record.client_order_id,
                after,
            )
        self._acknowledged(record, order)
        return "found"

    # ---- the local trailing stop ------------------------------------------------------

    @handles(ReplaceStop)
    def on_replace_stop(self, msg: ReplaceStop) -> None:
        """Move a resting stop up (PATCH /v2/orders/{id}); exactly once, like a submit.

        The replacement is a new order at the broker with a client_order_id
        derived from the old one and the new price, journaled durably first:
        an ambiguous outcome is resolved by looking that id up, never by resending.
        """
        from alpaca.common.exceptions import APIError
        from alpaca.trading.requests import ReplaceOrderRequest

        old = self.store.orders.get(msg.client_order_id)
        if old is None or old.state not in ("accepted", "partially_filled") or not old.broker_order_id:
            return  # gone, done or not yet acknowledged: the next pass decides again
        if old.order_type != "stop" or old.side != "sell" or (old.stop_price or 0) >= msg.stop_price:
            return  # a trailing stop only ever moves a sell stop up
        if self.svc.trading_state().state == "HALTED" or not self.bucket.available(1):
            return
        coid = broker_orders.replacement_id(old.client_order_id, msg.stop_price)
        if self.store.orders.has(coid):
            return
        now = self.clock.now_ns()
        record = _replace(
            old,
            client_order_id=coid,
            intent_id="",
            state="intent",
            qty=old.qty - old.filled_qty,
            stop_price=msg.stop_price,
            broker_order_id=None,
            filled_qty=0,
            filled_avg_price=None,
            created_ns=now,
            updated_ns=now,
            sent_ns=now,
            attempts=1,
            legs=(),
            last_error="",
            reason=f"{msg.reason} (replaces {old.client_order_id})",
        )

        def journal(txn: lmdb.Transaction) -> None:
            self.store.journal.append(IntentJournaled(ts_ns=now, order=record), txn=txn)
            self.store.put_order(record, txn=txn)

        self.store.transact(journal, durable=True)
        try:
            order = self.client.replace_order_by_id(
                old.broker_order_id, ReplaceOrderRequest(stop_price=msg.stop_price, client_order_id=coid)
            )
        except BudgetSpent as exc:
            self._set_state(record, "canceled", "abandon", str(exc))
            return
        except APIError as exc:
            status = broker_orders.api_status(exc)
            if broker_orders.is_not_taken(status):
                # Refused before anything happened: the old stop stands; the next pass asks again.
                self._set_state(record, "canceled", "abandon", f"not sent: {redact(exc)}")
                return
            if not broker_orders.is_retryable(status):
                # Typically the stop filled or was cancelled meanwhile: the old one stands.
                self._set_state(record, "rejected", "submit_rejected", f"replace refused: {redact(exc)}")
                log.info("trailing stop for %s not moved: %s", old.symbol, redact(exc))
                return
            if not self._adopt(record, f"HTTP {status}"):
                self._set_state(record, "unknown", "submit_unknown", redact(exc))
            return
        except Exception as exc:  # timeout / connection: the lookup decides
            if not self._adopt(record, f"{type(exc).__name__}: {redact(exc)}"):
                self._set_state(record, "unknown", "submit_unknown", redact(exc))
            return
        log.info(
            "trailing stop: %s %d moved from %.2f to %.2f",
            old.symbol,
            record.qty,
            old.stop_price or 0.0,
            msg.stop_price,
        )
        self._acknowledged(record, order)

    # ---- restart: resolve what the dead instance left -------------------------------

    def resolve_pending(self) -> None:
        """Resolve every intent the broker may or may not have, by client_order_id."""
        for record in [o for o in self.store.open_orders() if o.state in PENDING]:
            self.resolve(record)

    def resolve(self, record: OrderRecord) -> None:
        """Look one pending record up: adopted if the broker has it, abandoned (never resent) if not."""
        try:
            order = self._client_for(record).get_order_by_client_id(record.client_order_id)
        except Exception as exc:
            if broker_orders.is_not_found(exc):
                event = "abandon" if record.state == "intent" else "not_found"
                self._set_state(
                    record,
                    next_state(record.state, event),
                    event,
                    "not at the broker after restart: abandoned, not resent",
                )
                log.warning("intent %s never reached the broker; abandoned (not resent)", record.client_order_id)
            else:
                log.warning("could not resolve %s now (%s); will retry", record.client_order_id, redact(exc))
            return
        log.info("intent %s found at the broker after restart; adopted", record.client_order_id)
        self._acknowledged(record, order)

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what == ticks.RESYNC:
            self.resync()
        elif tick.what == ticks.PROTECT:
            self.protection.check_all()
        elif tick.what == ticks.POLL and not self.stream_up():
            # The polling fallback: the stream is down, so fills would only be
            # seen at the next resync. Each poll is one list call (budgeted).
            self.resync()

    def stream_up(self) -> bool:
        return self.stream.state == "listening"

    def resync(self) -> None:
        """Bring open ledger orders up to date from REST (covers missed stream events).

        Paged list calls (500 orders a page) for all of them, not one per order:
        the REST budget (200/min at Alpaca) is shared with the reconciler and
        the kill switch. The broker's open orders first: most tracked orders
        still rest there (a bracket's legs for hours). All orders (closed
        ones too, each a JSON object and a pydantic model) are asked for only
        when a tracked order is not among them (closed since, unheard of):
        they were the most of a backtest's order path. Both lists cover the
        same window, so every tracked order is looked up in what the single
        list of all orders held; a pass with no news makes one call.
        """
        self.resolve_pending()
        tracked = [o for o in self.store.open_orders() if o.state not in PENDING and o.broker_order_id]
        if not tracked:
            return
        since = datetime.fromtimestamp(min(o.created_ns for o in tracked) / 1e9 - 60, tz=UTC)
        try:
            by_id = {o.client_order_id: o for o in list_all_orders(self.client, "open", after=since)}
            if any(o.client_order_id not in by_id for o in tracked):
                # Read after the open list: where both hold an order, this is the newer report.
                by_id.update({o.client_order_id: o for o in list_all_orders(self.client, "all", after=since)})
        except Exception as exc:
            log.warning("resync failed: %s", redact(exc))
            return
        for record in tracked:
            order = by_id.get(record.client_order_id)
            if order is not None:
                self._apply(broker_orders.update_from_order(order, now_ns=self.clock.now_ns()), source="resync")

    # ---- updates ----------------------------------------------------------------

    @handles(OrderUpdate)
    def on_update(self, update: OrderUpdate) -> None:
        self._apply(update, source="stream")

    @handles(BrokerOrderSeen)
    def on_seen(self, seen: BrokerOrderSeen) -> None:
        self._apply(seen.update, source="reconcile", to_position=not seen.counted_in_positions)

    def _apply(self, update: OrderUpdate, source: str, to_position: bool = True) -> None:
        record = self.store.orders.get(update.client_order_id)
        now = self.clock.now_ns()
        adopted = record is None
        if record is None:
            # The broker's type matters: a stop placed by hand protects its shares.
            kind = cast(OrderType, update.order_type if update.order_type in _ORDER_TYPES else "market")
            record = OrderRecord(
                client_order_id=update.client_order_id,
                intent_id="",
                symbol=update.symbol,
                side=update.side,
                qty=int(update.qty),
                order_type=kind,
                stop_price=update.stop_price,
                state="accepted",
                broker_order_id=update.broker_order_id,
                created_ns=now,
                updated_ns=now,
                reason=f"adopted from {source}",
                order_class=_order_class(update.order_class),
            )
            log.info("adopting broker order %s (%s %s)", update.client_order_id, update.side, update.symbol)
        event = _event_of(update)
        try:
            new_state = next_state(record.state, event)
        except InvalidTransition as exc:
            log.warning("ignoring %s for %s: %s", event, record.client_order_id, exc)
            return
        filled_qty = int(update.filled_qty)
        # The event's own price is this fill's price only when the event is
        # the whole increment (not when earlier fills were missed).
        own = update.price if source == "stream" and update.fill_qty == filled_qty - record.filled_qty else None
        increment = fill_increment(record, filled_qty, update.filled_avg_price, own)
        if new_state == record.state and increment is None and record.broker_order_id and not adopted:
            return  # nothing new (a replay or a resync that agrees)
        updated = _replace(
            record,
            state=new_state,
            broker_order_id=record.broker_order_id or update.broker_order_id or None,
            filled_qty=max(filled_qty, record.filled_qty),
            # An older report (lower cumulative qty) does not roll the average back.
            filled_avg_price=(
                update.filled_avg_price
                if update.filled_avg_price and filled_qty >= record.filled_qty
                else record.filled_avg_price
            ),
            updated_ns=now,
        )
        fill = None
        if increment is not None:
            qty, price = increment
            fill = FillRecord(
                exec_id=f"{update.broker_order_id or record.broker_order_id}:{filled_qty}",
                client_order_id=record.client_order_id,
                broker_order_id=update.broker_order_id or record.broker_order_id,
                symbol=record.symbol,
                side=record.side,
                qty=qty,
                price=price,
                ts_ns=update.ts_ns,
                recv_ns=now,
                position_qty=int(update.position_qty) if update.position_qty is not None else None,
            )

        held = 0  # the position after this update, as written in the same transaction

        def write(txn: lmdb.Transaction) -> None:
            nonlocal held
            if new_state != record.state:
                self.store.journal.append(
                    OrderStateChanged(
                        ts_ns=now, client_order_id=record.client_order_id, old=record.state, new=new_state, event=event
                    ),
                    txn=txn,
                )
            self.store.put_order(updated, txn=txn)
            if fill is None:
                return
            position = self.store.positions.get(record.symbol, txn=txn)
            if not self.store.fills.has(fill.exec_id, txn=txn):
                self.store.fills.put(fill.exec_id, fill, txn=txn)
                self.store.journal.append(FillRecorded(ts_ns=now, fill=fill), txn=txn)
                # The watermark the reconciler checks its broker snapshots against.
                mark = self.store.fill_marks.get(record.symbol, txn=txn)
                self.store.fill_marks.put(
                    record.symbol, FillMark(symbol=record.symbol, seq=(mark.seq if mark else 0) + 1, ts_ns=now), txn=txn
                )
                if to_position:
                    position = apply_fill(position, record.symbol, record.side, fill.qty, fill.price, now)
                    self.store.positions.put(record.symbol, position, txn=txn)
            held = position.qty if position else 0

        self.store.transact(write, durable=False)
        if fill is not None:
            verb = "bought" if record.side == "buy" else "sold"
            log.info(
                "order filled: %s %d %s at %.2f (position now %d shares)",
                verb,
                fill.qty,
                record.symbol,
                fill.price,
                held,
            )
            self.tell(
                names.ALERTER,
                Alert(
                    "INFO",
                    f"fill:{record.client_order_id}",
                    f"{verb} {fill.qty} {record.symbol} at {fill.price:.2f} (position {held})",
                    NAME,
                    now,
                ),
            )
        if new_state != record.state or fill is not None:
            out = OrderUpdate(
                event=event,
                client_order_id=record.client_order_id,
                broker_order_id=updated.broker_order_id or "",
                symbol=record.symbol,
                side=record.side,
                status=new_state,
                qty=float(record.qty),
                filled_qty=float(updated.filled_qty),
                filled_avg_price=updated.filled_avg_price,
                ts_ns=now,
                order_class=record.order_class,
                price=fill.price if fill else None,
                fill_qty=float(fill.qty) if fill else None,
                proposal_id=record.proposal_id,
            )
            self.tell(names.RISK_GUARD, out)
            self.tell(names.ENSEMBLE_VOTER, out)
        if fill is not None or (new_state != record.state and new_state in TERMINAL and record.side == "sell"):
            # A fill, or a sell order that ended (a stop cancelled, say): the
            # symbol's shares may be bare now. Protected at once, not at the next pass.
            # A stream fill says the broker's position after it: no need to ask.
            told = (
                (held, fill.position_qty)
                if (fill is not None and fill.position_qty is not None and source == "stream" and to_position)
                else None
            )
            self.protection.cover(record.symbol, fill.price if fill is not None else None, told)

    def _client_for(self, record: OrderRecord) -> Any:
        return self.protect_client if is_protective(record) else self.client

    # ---- helpers ----------------------------------------------------------------

    def _transition(self, record: OrderRecord, event: str) -> Any:
        try:
            return next_state(record.state, event)
        except InvalidTransition:
            return record.state

    def _set_state(self, record: OrderRecord, state: OrderState, event: str, reason: str) -> None:
        now = self.clock.now_ns()
        updated = _replace(record, state=state, updated_ns=now, last_error=reason or record.last_error)

        def write(txn: lmdb.Transaction) -> None:
            self.store.journal.append(
                OrderStateChanged(
                    ts_ns=now,
                    client_order_id=record.client_order_id,
                    old=record.state,
                    new=state,
                    event=event,
                    reason=reason,
                ),
                txn=txn,
            )
            self.store.put_order(updated, txn=txn)

        self.store.transact(write, durable=False)

    def _journal_event(self, event: JournalEvent) -> None:
        self.store.journal.append(event, durable=False)


_ORDER_TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")


def _order_class(value: str) -> Any:
    return value if value in ("simple", "bracket", "oco", "oto") else "simple"


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
    return msgspec.structs.replace(record, **changes)
