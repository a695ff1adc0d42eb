"""RiskGuard: every proposal passes every risk rule or becomes a Rejection.

The rules themselves are pure functions in `stockade.trading.risk_rules`; this
actor only gathers the world they judge (trading state from storage, the
account, positions and clock from the reconciler, the broker's calendar,
the ledger's open orders, its own order-rate window, failure breaker,
in-flight entries and day-trade count) and records every decision with its
reason.

It also watches the day's loss on every account snapshot: alerts as a loss
limit comes near and when it is hit, and at `loss_breaker_pct` it asks
EmergencyStop to liquidate everything (which leaves trading HALTED). With
`flatten_before_close_min` it asks EmergencyStop to flatten, without
halting, that many minutes before the broker's next close.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import date, timedelta
from typing import Any

import lmdb
import msgspec
from opentelemetry import trace

from stockade.actors import names, ticks
from stockade.actors.services import Services
from stockade.broker.orders import account_snapshot, client_order_id
from stockade.broker.rest import redact
from stockade.broker.sessions import broker_calendar
from stockade.codecs.messages import (
    AccountSnapshot,
    Alert,
    AlertLevel,
    ClockSnapshot,
    Flatten,
    Kill,
    OrderIntent,
    OrderUpdate,
    Position,
    Proposal,
    Rejection,
    Tick,
)
from stockade.codecs.records import DayCounters, DecisionRecord, OrderRecord, PositionRecord
from stockade.supervisors import hooks
from stockade.supervisors.base import StockadeActor, handles
from stockade.trading.market_hours import Calendar, exchange_date, exchange_day
from stockade.trading.order_states import TERMINAL
from stockade.trading.pdt import DayTradeCounter
from stockade.trading.risk_rules import (
    CircuitBreaker,
    OrderRateWindow,
    RiskContext,
    RiskRequest,
    day_loss_pct,
    evaluate,
    pending_entry_risk,
)

log = logging.getLogger(__name__)

NAME = names.RISK_GUARD
# At most one early reconcile request per this interval (each costs ~5 REST calls).
RECONCILE_ASK_INTERVAL_NS = 5_000_000_000
ENTRY_TYPES = ("market", "limit")


class RiskGuard(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        risk = self.svc.settings.risk
        self.limits = risk.to_params()
        self.loss_alert_ratio = risk.loss_alert_ratio
        self.in_flight_timeout_ns = int(risk.in_flight_timeout_s * 1e9)
        self.brackets = risk.bracket_params()
        self.breaker = CircuitBreaker.from_limits(self.limits, clock=self.clock.now_ns)
        self.rate = OrderRateWindow(60.0, clock=self.clock.now_ns)
        self.account: AccountSnapshot | None = None
        self.market_open = not risk.respect_market_hours  # until the reconciler says
        self.next_close_ns = 0
        self.calendar = Calendar(())
        self.calendar_day: date | None = None
        self.in_flight: dict[str, int] = {}  # symbol -> when its entry was allowed (ns)
        self.day_trades = DayTradeCounter(self._stored_day_trades())
        self.fired: dict[str, str] = {}  # alert/action key -> exchange date it last fired
        # Held symbols' newest prices seen in proposals since the last account
        # snapshot: the day's loss is judged on them between reconciles.
        self.marks: dict[str, float] = {}
        self.reconcile_asked_ns = 0
        # What `_context` derives from the store's open orders, kept while the
        # store hands back the same snapshot (it does until the index changes).
        self._open_seen: tuple[OrderRecord, ...] | None = None
        self._open_view: _OpenView | None = None
        # The ledger's positions as the rules see them, built again only when a
        # stored record changed (the table's records are reused by their bytes).
        self._positions_memo: dict[bytes, tuple[bytes, PositionRecord]] = {}
        self._positions_seen: tuple[PositionRecord, ...] = ()
        self._positions: tuple[Position, ...] = ()
        self._initial_snapshot()

    def _initial_snapshot(self) -> None:
        """Clock and account straight from the broker, so the first proposal is
        judged on facts rather than on "unknown" (the reconciler keeps them fresh)."""
        try:
            client = self.svc.broker.trading_client()
            clock = client.get_clock()
            a = client.get_account()
        except Exception as exc:
            log.warning("risk: no initial account/clock from the broker (%s); waiting for the reconciler", redact(exc))
            return
        self.market_open = bool(clock.is_open)
        self.next_close_ns = _ns(getattr(clock, "next_close", None))
        self.account = account_snapshot(a, self.clock.now_ns())
        self._refresh_calendar(client)

    def _refresh_calendar(self, client: Any = None) -> None:
        """The broker's sessions for the day-trade window (holidays skipped), once per exchange day.

        With a client (setup) it fetches at once; from a handler it fetches on a
        thread of its own, so a slow broker cannot make this actor look hung.
        """
        today = exchange_day(self.clock.now_ns())
        if self.calendar_day == today:
            return
        self.calendar_day = today  # one try a day: a failure falls back to weekdays
        self.day_trades.prune(self._day_trade_window(today))

        def fetch(client: Any) -> None:
            try:
                client = client or self.svc.broker.trading_client()
                start = today - timedelta(days=2 * self.limits.day_trade_window_days + 5)
                # one reference swap: the actor thread sees the old calendar or the new, never half
                self.calendar = broker_calendar(client, min(start, today - timedelta(days=14)), today)
            except Exception as exc:
                log.warning("risk: no broker calendar (%s); the day-trade window counts weekdays", redact(exc))

        if client is not None:
            fetch(client)
        else:
            self.clock.background(lambda: fetch(None), "risk-calendar")

    def _day_trade_window(self, day: date) -> tuple[date, ...]:
        return self.calendar.recent_sessions(day, self.limits.day_trade_window_days)

    def _stored_day_trades(self) -> dict[date, int]:
        today = exchange_day(self.clock.now_ns())
        out: dict[date, int] = {}
        with self.svc.store.read() as txn:
            # n sessions span fewer than 2n + 5 calendar days (weekends, holidays)
            for back in range(2 * self.limits.day_trade_window_days + 5):
                day = today - timedelta(days=back)
                counters = self.svc.store.counters.get(day.isoformat(), txn=txn)
                if counters is not None and counters.day_trades:
                    out[day] = counters.day_trades
        return out

    # ---- the world ------------------------------------------------------------------

    @handles(AccountSnapshot)
    def on_account(self, account: AccountSnapshot) -> None:
        self.account = account
        self.marks.clear()  # the snapshot's own prices are newer
        self._refresh_calendar()
        self._watch_loss(account)
        self._maybe_flatten()

    @handles(ClockSnapshot)
    def on_clock(self, clock: ClockSnapshot) -> None:
        self.market_open = clock.is_open
        self.next_close_ns = clock.next_close_ns
        self._maybe_flatten()

    @handles(OrderUpdate)
    def on_order_update(self, update: OrderUpdate) -> None:
        if update.status == "rejected":
            if self.breaker.record_order_failure(f"order rejected: {update.symbol}"):
                self._failure_breaker_alert()
        elif update.status in ("accepted", "new", "filled", "partially_filled"):
            self.breaker.record_order_ok()
        if update.status in TERMINAL or update.fill_qty:
            self.in_flight.pop(update.symbol, None)  # the ledger now shows what happened
        if update.fill_qty:
            self._count_fill(update)

    def _count_fill(self, update: OrderUpdate) -> None:
        now = self.clock.now_ns()
        day = exchange_day(now)
        held = self.svc.store.positions.get(update.symbol)
        after = float(held.qty) if held else 0.0
        fill = float(update.fill_qty or 0.0)
        before = after - fill if update.side == "buy" else after + fill
        opening = (update.side == "buy" and before >= 0) or (update.side == "sell" and before <= 0)
        if opening:
            self.day_trades.opening_fill(update.symbol, fill, day)
        elif self.day_trades.closing_fill(update.symbol, fill, day, update.client_order_id):
            self._store_day_trades(day)
            window = self.limits.day_trade_window_days
            count = self.day_trades.count(self._day_trade_window(day))
            log.info("risk: day trade in %s (%d in the last %d sessions)", update.symbol, count, window)
            budget = self.limits.day_trade_budget
            if 0 < budget <= count and self._day_trade_budget_applies():
                self._alert_once(
                    "day-trade-budget",
                    "WARNING",
                    f"{count} day trades in the last {window} sessions: the day-trade budget "
                    f"({budget}) is used up; no new entries until one leaves the window",
                )

    def _store_day_trades(self, day: date) -> None:
        store, key, n = self.svc.store, day.isoformat(), self.day_trades.day_trades.get(day, 0)
        account = self.account

        def write(txn: lmdb.Transaction) -> None:
            current = store.counters.get(key, txn=txn)
            if current is None:
                # Create it as the reconciler would, so the day keeps its start equity.
                start = (account.last_equity or account.equity) if account else None
                current = DayCounters(date=key, start_equity=start)
            store.counters.put(
                key, msgspec.structs.replace(current, day_trades=n, updated_ns=self.clock.now_ns()), txn=txn
            )

        store.transact(write, durable=False)

    def _day_trade_budget_applies(self) -> bool:
        a, below = self.account, self.limits.day_trade_budget_below_equity
        if below <= 0:
            return True
        return bool(a and min(a.equity, a.last_equity or a.equity) < below)

    def _failure_breaker_alert(self) -> None:
        status = self.breaker.status()
        log.error("failure breaker tripped: %s", status.reason)
        self.tell(
            names.ALERTER,
            Alert(
                "CRITICAL", "failure-breaker", f"failure breaker tripped: {status.reason}", NAME, self.clock.now_ns()
            ),
        )

    # ---- the day's loss --------------------------------------------------------------

    def _start_equity(self, txn: lmdb.Transaction | None = None) -> float | None:
        counters = self.svc.store.counters.get(exchange_date(self.clock.now_ns()), txn=txn)
        if counters is not None and counters.start_equity:
            return counters.start_equity
        return self.account.last_equity if self.account and self.account.last_equity > 0 else None

    def _watch_loss(self, account: AccountSnapshot) -> None:
        """Alerts near and at the loss limits; the loss breaker liquidates."""
        start = self._start_equity()
        loss = day_loss_pct(account.equity, start)
        if loss is None or loss <= 0:
            return
        lim = self.limits
        where = f"day loss {loss:.2f}% (equity {account.equity:,.2f} vs start {start:,.2f})"
        if loss >= lim.loss_breaker_pct:
            self._trip_loss_breaker(f"{where} >= loss breaker {lim.loss_breaker_pct:g}%")
            return
        if loss >= lim.daily_loss_limit_pct:
            self._alert_once(
                "daily-loss-limit",
                "CRITICAL",
                f"{where} >= daily loss limit {lim.daily_loss_limit_pct:g}%: no new entries",
            )
        elif loss >= self.loss_alert_ratio * lim.daily_loss_limit_pct:
            self._alert_once(
                "daily-loss-near", "WARNING", f"{where} is near the daily loss limit {lim.daily_loss_limit_pct:g}%"
            )
        if loss >= self.loss_alert_ratio * lim.loss_breaker_pct:
            self._alert_once(
                "loss-breaker-near",
                "WARNING",
                f"{where} is near the loss breaker {lim.loss_breaker_pct:g}% (full liquidation)",
            )

    def _trip_loss_breaker(self, why: str) -> None:
        if self.svc.trading_state().state == "HALTED" and self.fired.get("loss-breaker"):
            return  # already liquidated (or being) and halted
        self.fired["loss-breaker"] = exchange_date(self.clock.now_ns())
        log.critical("LOSS BREAKER: %s; liquidating through the kill switch", why)
        self.tell(
            names.ALERTER,
            Alert(
                "CRITICAL",
                "loss-breaker",
                f"loss breaker tripped: {why}; liquidating, trading HALTED",
                NAME,
                self.clock.now_ns(),
            ),
        )
        self.tell(names.EMERGENCY_STOP, Kill(f"loss breaker: {why}", f"{NAME}:loss_breaker"))

    def _maybe_flatten(self) -> None:
        """Ask for a flatten once a day when the close is within flatten_before_close_min."""
        window = self.limits.flatten_before_close_min
        minutes = self._minutes_to_close()
        if window <= 0 or minutes is None or minutes > window:
            return
        if not any(p.qty for p in self.svc.store.positions.values()):
            return
        today = exchange_date(self.clock.now_ns())
        if self.fired.get("flatten") == today:
            return
        self.fired["flatten"] = today
        why = f"{minutes:.1f} min to the close <= flatten_before_close_min {window:g}"
        log.warning("risk: flattening before the close: %s", why)
        self.tell(
            names.ALERTER, Alert("WARNING", "flatten", f"flattening every position: {why}", NAME, self.clock.now_ns())
        )
        self.tell(names.EMERGENCY_STOP, Flatten(why, f"{NAME}:flatten"))

    def _minutes_to_close(self) -> float | None:
        if not self.market_open or self.next_close_ns <= 0:
            return None
        return max(0.0, (self.next_close_ns - self.clock.now_ns()) / 60e9)

    def _alert_once(self, key: str, level: AlertLevel, text: str) -> None:
        """One alert per key per exchange day (the alerter de-duplicates too, per window)."""
        today = exchange_date(self.clock.now_ns())
        if self.fired.get(key) == today:
            return
        self.fired[key] = today
        log.warning("risk: %s", text)
        self.tell(names.ALERTER, Alert(level, f"risk-{key}", text, NAME, self.clock.now_ns()))

    # ---- decisions ------------------------------------------------------------------

    def _context(self) -> RiskContext:
        store = self.svc.store
        now = self.clock.now_ns()
        day = exchange_day(now)
        with store.read() as txn:  # one consistent snapshot, one transaction
            positions = self._held(txn)
            view = self._open_orders_view(store.open_orders_snapshot(txn=txn))
            start_equity = self._start_equity(txn)
            state = self.svc.trading_state(txn)
        for symbol, since in list(self.in_flight.items()):
            if now - since > self.in_flight_timeout_ns:
                del self.in_flight[symbol]
        in_flight = view.entry_symbols | set(self.in_flight)
        held = {p.symbol for p in positions}
        for symbol in self.day_trades.opened_today(day) - held:
            self.day_trades.position_gone(symbol)  # closed outside our orders (e.g. liquidated)
        return RiskContext(
            now_ns=now,
            trading_state=state.state,
            market_open=self.market_open,
            account=self._marked_account(),
            positions=positions,
            open_order_symbols=view.open_order_symbols,
            start_of_day_equity=start_equity,
            orders_last_minute=self.rate.count(),
            breaker=self.breaker.status(),
            day_trades=self.day_trades.status(day, self._day_trade_window(day)),
            in_flight=tuple(sorted(in_flight)),
            stops=dict(view.stops),
            minutes_to_close=self._minutes_to_close(),
            pending_risk=view.pending_risk,
        )

    def _held(self, txn: lmdb.Transaction) -> tuple[Position, ...]:
        """The ledger's non-zero positions in `txn`'s snapshot, the same tuple while no record changed."""
        records, self._positions_memo = self.svc.store.positions.values_reusing(txn, self._positions_memo)
        if records != self._positions_seen:  # element by element: identity first, then value
            self._positions_seen = records
            self._positions = tuple(
                Position(p.symbol, float(p.qty), p.avg_entry_price, market_value=p.qty * p.avg_entry_price)
                for p in records
                if p.qty != 0
            )
        return self._positions

    def _open_orders_view(self, open_orders: tuple[OrderRecord, ...]) -> _OpenView:
        """What the rules need from the open orders, derived again only when they changed."""
        if open_orders is self._open_seen and self._open_view is not None:
            return self._open_view
        entries = tuple(o for o in open_orders if o.parent_id is None and o.order_type in ENTRY_TYPES)
        stops: dict[str, float] = {}
        exits: set[str] = set()
        for o in open_orders:
            stop = o.stop_price if o.stop_price else (o.stop_loss if o.parent_id is None else None)
            if stop and (o.order_type == "stop" or o.parent_id is not None):
                stops[o.symbol] = min(stops.get(o.symbol, stop), stop)
            if o.parent_id is not None or o.order_type == "stop":
                exits.add(o.symbol)
        view = _OpenView(
            entries=entries,
            entry_symbols=frozenset(o.symbol for o in entries if not o.reduce_only),
            open_order_symbols=tuple(sorted({o.symbol for o in entries})),
            stops=stops,
            exit_symbols=frozenset(exits),
            pending_risk=sum(
                pending_entry_risk(o.side, o.remaining_qty, o.limit_price, o.stop_loss, self.limits.stop_loss_pct)
                for o in entries
                if not o.reduce_only
            ),
        )
        self._open_seen, self._open_view = open_orders, view
        return view

    def _mark(self, proposal: Proposal) -> None:
        if (
            proposal.price > 0
            and self.account is not None
            and any(p.symbol == proposal.symbol and p.qty for p in self.account.positions)
        ):
            self.marks[proposal.symbol] = proposal.price

    def _marked_account(self) -> AccountSnapshot | None:
        """The last account snapshot with held positions marked to the newest proposal prices.

        The broker's equity arrives once per reconcile pass; a crash in a held
        symbol shows first as proposals at the crashed price. Marking to them
        blocks new entries at once. It never liquidates on its own: one bad
        quote must not flatten the book, so it asks the reconciler for a
        fresh snapshot instead, and the loss breaker fires on the broker's
        figure.
        """
        a = self.account
        if a is None or not self.marks:
            return a
        moved = sum(
            p.qty * self.marks[p.symbol] - p.market_value
            for p in a.positions
            if p.qty and p.market_value and p.symbol in self.marks
        )
        return msgspec.structs.replace(a, equity=a.equity + moved) if moved else a

    def _ask_reconcile(self, now_ns: int) -> None:
        if now_ns - self.reconcile_asked_ns >= RECONCILE_ASK_INTERVAL_NS:
            self.reconcile_asked_ns = now_ns
            log.warning(
                "risk: marked-to-market loss crosses a limit; asking the reconciler for the broker's figure now"
            )
            self.tell(names.RECONCILER, Tick(ticks.RECONCILE))

    @handles(Proposal)
    def on_proposal(self, proposal: Proposal) -> None:
        self._mark(proposal)
        context = self._context()
        if self.limits.extended_hours:  # the calendar's pre/post sessions matter only then
            context = msgspec.structs.replace(context, session_phase=self.calendar.session_phase(context.now_ns))
        verdict = evaluate(RiskRequest.from_proposal(proposal), context, self.limits, self.brackets)
        if verdict.allowed and verdict.reduce_only and self._has_exit_orders(proposal.symbol):
            # The broker holds the shares for the bracket's exit legs; a second
            # exit would be refused (insufficient qty) and trip the breaker.
            self._reject(proposal, "bracket", "position already exits through its bracket legs")
            return
        if not verdict.allowed:
            failure = verdict.first_failure
            rule, reason = (failure.rule, failure.reason) if failure else ("sizing", "no quantity")
            self._reject(proposal, rule, reason)
            if context.account is not self.account and any(
                r.rule in ("loss_breaker", "daily_loss") for r in verdict.failures
            ):
                self._ask_reconcile(context.now_ns)
            elif rule == "loss_breaker" and self.account is not None:
                self._watch_loss(self.account)
            return
        self.rate.record()
        if not verdict.reduce_only:
            self.in_flight[proposal.symbol] = context.now_ns
        intent = OrderIntent(
            intent_id=self.clock.new_id(),
            symbol=proposal.symbol,
            side=proposal.side,
            qty=verdict.qty,
            order_type="limit" if verdict.extended_hours else "market",
            limit_price=verdict.limit_price if verdict.extended_hours else None,
            take_profit=verdict.take_profit,
            stop_loss=verdict.stop_loss,
            reason=f"{'reduce' if verdict.reduce_only else 'open'}: ensemble score {proposal.score:.2f}",
            proposal_id=proposal.proposal_id,
            quote_recv_ns=proposal.quote_recv_ns,
            reduce_only=verdict.reduce_only,
            extended_hours=verdict.extended_hours,
        )
        # The order first, the audit record after: the record's commit is not
        # on the quote-to-order path.
        self.tell(names.ORDER_MANAGER, intent)
        _trace_decision(True, "all", verdict.qty, client_order_id(intent.intent_id))
        sizing = next((r.reason for r in verdict.results if r.rule == "sizing"), "")
        log.info(
            "risk: %s %d %s allowed (stop %s, target %s; %s)",
            intent.side,
            intent.qty,
            intent.symbol,
            intent.stop_loss,
            intent.take_profit,
            sizing,
        )
        self._record(proposal, True, "all", f"every rule passed; {sizing}", verdict.qty)

    def _reject(self, proposal: Proposal, rule: str, reason: str) -> None:
        # Every decision is in storage; the log would drown in repeats.
        log.debug("risk: %s %s rejected by %s: %s", proposal.side, proposal.symbol, rule, reason)
        self.tell(names.ENSEMBLE_VOTER, Rejection(proposal.proposal_id, proposal.symbol, rule, reason))
        _trace_decision(False, rule, 0)
        self._record(proposal, False, rule, reason, 0)

    def _record(self, proposal: Proposal, allowed: bool, rule: str, reason: str, qty: int) -> None:
        now = self.clock.now_ns()
        self.svc.store.decisions.add_later(
            DecisionRecord(
                ts_ns=now,
                proposal_id=proposal.proposal_id,
                symbol=proposal.symbol,
                allowed=allowed,
                rule=rule,
                reason=reason,
                side=proposal.side,
                qty=qty,
            ),
            # An audit trail, not an order: committed with the next group
            # (storage/audit_buffer.py; the intent's commit if it led to one), not a flush of its own.
            ts_ns=now,
        )

    def _has_exit_orders(self, symbol: str) -> bool:
        return symbol in self._open_orders_view(self.svc.store.open_orders_snapshot()).exit_symbols


@dataclasses.dataclass(frozen=True)
class _OpenView:
    """The open orders as the risk rules see them (one snapshot's worth)."""

    entries: tuple[OrderRecord, ...]
    entry_symbols: frozenset[str]  # symbols with an entry on its way (not reduce-only)
    open_order_symbols: tuple[str, ...]
    stops: dict[str, float]  # symbol -> lowest resting stop
    exit_symbols: frozenset[str]  # symbols with a resting stop or bracket leg
    pending_risk: float


def _trace_decision(allowed: bool, rule: str, qty: int, coid: str = "") -> None:
    """The decision on the proposal's message span; one `is None` check with tracing off."""
    if hooks.tracing.ACTIVE is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({"stockade.risk.allowed": allowed, "stockade.risk.rule": rule, "stockade.risk.qty": qty})
        if coid:
            span.set_attribute("stockade.client_order_id", coid)


def _ns(moment: Any) -> int:
    """Epoch ns of an aware datetime (0 when missing)."""
    try:
        return int(moment.timestamp() * 1e9) if moment is not None else 0
    except (AttributeError, OverflowError, ValueError):
        return 0
