"""RiskGuard: every proposal passes every risk rule or becomes a Rejection.

The rules themselves are pure functions in `stockade.quant.risk_rules`; this
actor only gathers the world they judge (trading state from storage, the
account, positions and clock from the reconciler, the ledger's open orders,
its own order-rate window and circuit breaker) and records every decision
with its reason.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone

from stockade.actors.base import StockadeActor, handles
from stockade.actors.services import Services
from stockade.broker.orders import account_snapshot
from stockade.broker.rest import redact
from stockade.codecs.messages import (
    AccountSnapshot,
    Alert,
    ClockSnapshot,
    OrderIntent,
    OrderUpdate,
    Position,
    Proposal,
    Rejection,
)
from stockade.codecs.records import DecisionRecord
from stockade.quant.brackets import BracketParams
from stockade.quant.risk_rules import (
    CircuitBreaker,
    OrderRateWindow,
    RiskContext,
    RiskLimits,
    RiskRequest,
    evaluate,
)

log = logging.getLogger(__name__)

NAME = "risk_guard"


def limits_from_settings(risk) -> RiskLimits:
    """The pure rules' parameters from the `[risk]` settings section."""
    return RiskLimits(
        require_market_open=risk.respect_market_hours,
        max_quote_age_s=risk.max_quote_age_s,
        max_spread_bps=risk.max_spread_bps,
        min_price=risk.min_price,
        max_price=risk.max_price,
        risk_per_trade_pct=risk.risk_per_trade_pct,
        max_position_pct=risk.max_position_pct,
        max_open_positions=risk.max_positions,
        daily_loss_limit_pct=risk.daily_loss_limit_pct,
        allow_short=risk.allow_short,
        cb_max_consecutive_failures=risk.circuit_breaker_failures,
        cb_cooloff_s=risk.circuit_breaker_cooloff_s,
        pdt_equity_threshold=risk.pdt_min_equity,
        # pdt_protection off: the broker's own PDT check is the only one left.
        pdt_max_daytrades=3 if risk.pdt_protection else 1_000_000,
        max_orders_per_minute=risk.max_orders_per_min,
    )


class RiskGuard(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        risk = self.svc.settings.risk
        self.limits = limits_from_settings(risk)
        self.brackets = BracketParams(method="percent", stop_pct=risk.stop_loss_pct,
                                      take_profit_pct=risk.take_profit_pct)
        self.breaker = CircuitBreaker.from_limits(self.limits)
        self.rate = OrderRateWindow(60.0)
        self.account: AccountSnapshot | None = None
        self.market_open = not risk.respect_market_hours  # until the reconciler says
        self.opened_today: dict[str, str] = {}  # symbol -> date opened
        self._initial_snapshot()

    def _initial_snapshot(self) -> None:
        """Clock and account straight from the broker, so the first proposal is
        judged on facts rather than on "unknown" (the reconciler keeps them fresh)."""
        try:
            client = self.svc.broker.trading_client()
            self.market_open = bool(client.get_clock().is_open)
            a = client.get_account()
        except Exception as exc:
            log.warning("risk: no initial account/clock from the broker (%s); waiting for the reconciler", redact(exc))
            return
        self.account = account_snapshot(a)

    # ---- the world ------------------------------------------------------------------

    @handles(AccountSnapshot)
    def on_account(self, account: AccountSnapshot) -> None:
        self.account = account

    @handles(ClockSnapshot)
    def on_clock(self, clock: ClockSnapshot) -> None:
        self.market_open = clock.is_open

    @handles(OrderUpdate)
    def on_order_update(self, update: OrderUpdate) -> None:
        if update.status == "rejected":
            if self.breaker.record_order_failure(f"order rejected: {update.symbol}"):
                self._breaker_alert()
        elif update.status in ("accepted", "filled", "partially_filled"):
            self.breaker.record_order_ok()
        if update.fill_qty and update.side == "buy":
            self.opened_today[update.symbol] = _today()

    def _breaker_alert(self) -> None:
        status = self.breaker.status()
        log.error("circuit breaker tripped: %s", status.reason)
        self.tell("alerter", Alert("CRITICAL", "circuit-breaker", f"circuit breaker tripped: {status.reason}",
                                   NAME, time.time_ns()))

    # ---- decisions ------------------------------------------------------------------

    def _context(self) -> RiskContext:
        store = self.svc.store
        today = _today()
        with store.read() as txn:  # one consistent snapshot, one transaction
            positions = tuple(
                Position(p.symbol, float(p.qty), p.avg_entry_price, market_value=p.qty * p.avg_entry_price)
                for p in store.positions.values(txn=txn) if p.qty != 0
            )
            open_symbols = tuple(sorted({o.symbol for o in store.open_orders(txn=txn) if o.parent_id is None
                                         and o.order_type in ("market", "limit")}))
            counters = store.counters.get(today, txn=txn)
            state = self.svc.trading_state(txn)
        return RiskContext(
            now_ns=time.time_ns(),
            trading_state=state.state,
            market_open=self.market_open,
            account=self.account,
            positions=positions,
            open_order_symbols=open_symbols,
            start_of_day_equity=counters.start_equity if counters else None,
            orders_last_minute=self.rate.count(),
            breaker=self.breaker.status(),
            opened_today=frozenset(s for s, d in self.opened_today.items() if d == today),
        )

    @handles(Proposal)
    def on_proposal(self, proposal: Proposal) -> None:
        context = self._context()
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
            return
        self.rate.record()
        intent = OrderIntent(
            intent_id=uuid.uuid4().hex,
            symbol=proposal.symbol,
            side=proposal.side,
            qty=verdict.qty,
            order_type="market",
            limit_price=None,
            take_profit=verdict.take_profit,
            stop_loss=verdict.stop_loss,
            reason=f"{'reduce' if verdict.reduce_only else 'open'}: ensemble score {proposal.score:.2f}",
            proposal_id=proposal.proposal_id,
            quote_recv_ns=proposal.quote_recv_ns,
            reduce_only=verdict.reduce_only,
        )
        # The order first, the audit record after: the record's commit is not
        # on the quote-to-order path.
        self.tell("order_manager", intent)
        log.info("risk: %s %d %s allowed (stop %s, target %s)", intent.side, intent.qty, intent.symbol,
                 intent.stop_loss, intent.take_profit)
        self._record(proposal, True, "all", "every rule passed", verdict.qty)

    def _reject(self, proposal: Proposal, rule: str, reason: str) -> None:
        # Every decision is in storage; the log would drown in repeats.
        log.debug("risk: %s %s rejected by %s: %s", proposal.side, proposal.symbol, rule, reason)
        self.tell("ensemble_voter", Rejection(proposal.proposal_id, proposal.symbol, rule, reason))
        self._record(proposal, False, rule, reason, 0)

    def _record(self, proposal: Proposal, allowed: bool, rule: str, reason: str, qty: int) -> None:
        now = time.time_ns()
        self.svc.store.decisions.add(
            DecisionRecord(ts_ns=now, proposal_id=proposal.proposal_id, symbol=proposal.symbol, allowed=allowed,
                           rule=rule, reason=reason, side=proposal.side, qty=qty),
            ts_ns=now, durable=False,  # an audit trail, not an order: no sync per decision
        )

    def _has_exit_orders(self, symbol: str) -> bool:
        return any(o.symbol == symbol and (o.parent_id is not None or o.order_type == "stop")
                   for o in self.svc.store.open_orders())


def _today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")
