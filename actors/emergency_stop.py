"""EmergencyStop: the kill switch.

On `Kill`: persist HALTED first (so a crash mid-way still comes back halted),
then cancel every order and close every position with its OWN broker client,
verify flat, retry until flat or out of attempts, and alert EMERGENCY.
Kills come from the operator (`ctl kill`), supervision giving up, and the
RiskGuard's loss breaker.

On `Flatten` (the RiskGuard's pre-close flatten): the same liquidation
without HALTED, so trading resumes with the next session.

The liquidation runs on a thread of its own so this actor keeps answering
heartbeats during a long liquidation; a second `Kill` while one runs joins
it. `emergency_liquidation` is also what the root supervisor's exhaustion
hook calls when the tree itself is gone: it needs no actor alive.

Every liquidation client draws from the key's shared REST budget
(`broker.token_bucket`) as an emergency client: counted, so the order
manager and the reconciler see what a liquidation spent, and never held
back or refused, the reserve included.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading

from stockade.actors import names
from stockade.actors.services import Services
from stockade.broker.liquidation import LiquidationReport, liquidate
from stockade.broker.rest import redact
from stockade.broker.token_bucket import limit_client
from stockade.codecs.messages import Alert, AlertLevel, Flatten, Kill
from stockade.codecs.records import KillRequested
from stockade.supervisors.base import StockadeActor, handles

log = logging.getLogger(__name__)

NAME = names.EMERGENCY_STOP


def halt_for_kill(svc: Services, reason: str, requested_by: str) -> None:
    """Persist HALTED and journal the kill: the first thing any kill does."""
    svc.set_trading_state("HALTED", f"kill: {reason}", requested_by)
    svc.store.journal.append(KillRequested(ts_ns=svc.clock.now_ns(), reason=reason, requested_by=requested_by))


def liquidation_client(svc: Services) -> object:
    """A fresh trading client on the key's shared REST budget, as its emergency spender."""
    return limit_client(svc.broker.trading_client(), svc.rest_bucket(), max_wait_s=0.0, emergency=True)


def emergency_liquidation(
    svc: Services, reason: str, requested_by: str, client: object | None = None, halted: bool = False
) -> LiquidationReport:
    """HALTED (unless the caller already did it), then flat. Safe to call from any
    thread; builds its own (budget-counted) client if none given."""
    if not halted:
        halt_for_kill(svc, reason, requested_by)
    log.critical("KILL requested by %s: %s. Trading HALTED; liquidating.", requested_by, reason)
    cfg = svc.settings.emergency
    try:
        client = client or liquidation_client(svc)
        report = liquidate(
            client, attempts=cfg.attempts, retry_interval_s=cfg.retry_interval_s, flat_timeout_s=cfg.flat_timeout_s
        )
    except Exception as exc:  # even building the client failed
        report = LiquidationReport(False, 0, (), 0, (redact(exc),), 0.0)
    if report.flat:
        log.critical("liquidation complete: flat after %d attempt(s), %.2fs", report.attempts, report.elapsed_s)
    else:
        log.critical(
            "LIQUIDATION INCOMPLETE: still holding %s, %d open order(s); errors: %s",
            list(report.positions_left),
            report.orders_left,
            list(report.errors),
        )
    return report


class EmergencyStop(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        self.client = liquidation_client(self.svc)
        self._lock = threading.Lock()
        self._running: concurrent.futures.Future | None = None

    @handles(Kill)
    def on_kill(self, kill: Kill) -> concurrent.futures.Future:
        """Start (or join) a liquidation; the returned future resolves to its report."""
        return self._liquidate(kill, halt=True)

    @handles(Flatten)
    def on_flatten(self, flatten: Flatten) -> concurrent.futures.Future:
        """Close everything but stay in the current trading state (joins a running liquidation)."""
        return self._liquidate(flatten, halt=False)

    def _liquidate(self, why: Kill | Flatten, halt: bool) -> concurrent.futures.Future:
        with self._lock:
            if self._running is not None and not self._running.done():
                if halt:  # a kill during a flatten still halts
                    halt_for_kill(self.svc, why.reason, why.requested_by)
                return self._running
            future: concurrent.futures.Future = concurrent.futures.Future()
            self._running = future
        if halt:
            # Persist HALTED here, before returning, so the caller knows no new
            # order can pass once `ctl kill` has been accepted.
            halt_for_kill(self.svc, why.reason, why.requested_by)
        what = "kill" if halt else "flatten"

        def run() -> None:
            try:
                if halt:
                    report = emergency_liquidation(self.svc, why.reason, why.requested_by, self.client, halted=True)
                else:
                    log.warning("flatten requested by %s: %s", why.requested_by, why.reason)
                    cfg = self.svc.settings.emergency
                    report = liquidate(
                        self.client,
                        attempts=cfg.attempts,
                        retry_interval_s=cfg.retry_interval_s,
                        flat_timeout_s=cfg.flat_timeout_s,
                    )
                future.set_result(report)
                level: AlertLevel = "EMERGENCY" if halt or not report.flat else "INFO"
                text = f"{what} by {why.requested_by} ({why.reason}): " + (
                    "flat"
                    if report.flat
                    else f"NOT flat: {list(report.positions_left)}, {report.orders_left} open orders"
                )
                self.router.tell(names.ALERTER, Alert(level, what, text, NAME, self.clock.now_ns()), NAME)
            except BaseException as exc:  # the caller must get an answer
                future.set_exception(exc)

        self.clock.background(run, "liquidator")
        return future
