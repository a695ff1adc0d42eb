"""The OrderManager's protection: no long shares without a stop.

A fill (or a sell order that ended) that leaves shares of a long position
without a stop gets a protective stop at once, from the ledger's view
(`trading.protection.coverage`; stops on their way count, so none is asked
twice); refused requests are asked again on a backoff
(`trading.protection.ProtectionWatch`, driven by the order manager's short
PROTECT tick that also catches anything else), and shares bare past
`reconciler.max_unprotected_s` raise a CRITICAL `unprotected:SYMBOL`. The
reconciler's protective requests from its broker snapshot pass the same
ledger check (`screen`), and the same broker-position check (its snapshot may
predate a sale).

Not an actor: it runs on the order manager's thread, in its handlers, and
places its stops through the order manager's own intent path.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Protocol

import msgspec

from stockade.actors import names
from stockade.actors.services import Services
from stockade.broker import orders as broker_orders
from stockade.broker.rest import redact
from stockade.codecs.messages import Alert, OrderIntent
from stockade.codecs.records import OrderRecord
from stockade.supervisors.clock import Clock
from stockade.trading.protection import (
    Coverage,
    ProtectionWatch,
    broker_bounded,
    coverage,
    protective_stop_price,
)

# The order manager's logger: these lines are its actor's, as they were before
# the code moved here (operators' log filters, and the tests, name it).
log = logging.getLogger("stockade.actors.order_manager")


class OrderPlacer(Protocol):
    """What protection needs of the order manager."""

    svc: Services
    clock: Clock
    protect_client: Any

    def tell(self, name: str, msg: Any) -> Any: ...
    def on_intent(self, intent: OrderIntent) -> None: ...
    def resolve(self, record: OrderRecord) -> None: ...


class OrderProtection:
    """Protective stops for the order manager `om`; not thread-safe (its thread only)."""

    def __init__(self, om: OrderPlacer, rng: random.Random) -> None:
        self.om = om
        s = om.svc.settings
        rc = s.reconciler
        base = max(0.2, s.orders.retry_backoff_s)
        self.watch = ProtectionWatch(rc.max_unprotected_s, base, max(base, rc.max_unprotected_s / 4), rng=rng)
        self.last_price: dict[str, float] = {}  # symbol -> newest fill price (the protective stop's reference)
        self.covering = False  # a stop of ours is on its way through on_intent
        # The open orders by symbol, grouped again only when the store hands
        # back a different snapshot (a protection pass asks once per symbol).
        self._open_seen: tuple[OrderRecord, ...] | None = None
        self._open_by_symbol: dict[str, list[OrderRecord]] = {}

    def check_all(self) -> None:
        """Check every long ledger position (and every symbol still bare) for shares without a stop."""
        clock = self.om.clock
        held, open_orders = self._ledger()
        symbols = {s for s, qty in held.items() if qty > 0} | set(self.watch.symbols())
        for symbol in sorted(symbols):
            # A covered symbol (most, most of the time) is judged from one
            # snapshot for the whole pass, not a read per symbol: what `cover`
            # does first, with the same answer.
            if (
                not self.covering
                and self.om.svc.first_reconcile.is_set()
                and coverage(held.get(symbol, 0), self._open_orders_of(symbol, open_orders)).exposed <= 0
            ):
                self.watch.covered(symbol)
                continue
            self.cover(symbol)
            held, open_orders = self._ledger()  # it may have placed a stop: the next symbols see it
        now = clock.monotonic()
        for symbol in self.watch.overdue(now):
            bare = self.coverage(symbol).exposed
            log.error(
                "%s: %d shares without a protective stop for %.1fs (bound %gs)",
                symbol,
                bare,
                self.watch.bare_for(symbol, now),
                self.watch.bound_s,
            )
            halted = self.om.svc.trading_state().state == "HALTED"
            then = (
                "HALTED: resume to let stockade place a protective stop, or kill to go flat"
                if halted
                else "still trying"
            )
            self.om.tell(
                names.ALERTER,
                Alert(
                    "CRITICAL",
                    f"unprotected:{symbol}",
                    f"{symbol}: {bare} shares without a protective stop for "
                    f"{self.watch.bare_for(symbol, now):.0f}s, beyond "
                    f"reconciler.max_unprotected_s ({self.watch.bound_s:g}s); {then}",
                    names.ORDER_MANAGER,
                    clock.now_ns(),
                ),
            )

    def _ledger(self) -> tuple[dict[str, int], tuple[OrderRecord, ...]]:
        """Every position's qty and the open orders, from one read snapshot."""
        store = self.om.svc.store
        with store.read() as txn:
            return {p.symbol: p.qty for p in store.positions.values(txn=txn)}, store.open_orders_snapshot(txn=txn)

    def coverage(self, symbol: str) -> Coverage:
        """How the ledger's long position in `symbol` stands against its stops (one snapshot)."""
        store = self.om.svc.store
        with store.read() as txn:
            position = store.positions.get(symbol, txn=txn)
            orders = self._open_orders_of(symbol, store.open_orders_snapshot(txn=txn))
        return coverage(position.qty if position else 0, orders)

    def _open_orders_of(self, symbol: str, open_orders: tuple[OrderRecord, ...]) -> list[OrderRecord]:
        if open_orders is not self._open_seen:
            by_symbol: dict[str, list[OrderRecord]] = {}
            for o in open_orders:
                by_symbol.setdefault(o.symbol, []).append(o)
            self._open_seen, self._open_by_symbol = open_orders, by_symbol
        return list(self._open_by_symbol.get(symbol, ()))

    def screen(self, intent: OrderIntent) -> OrderIntent | None:
        """A protective intent as it may go out (its qty bounded), or None: nothing to protect.

        Asked from a broker snapshot (the reconciler) or a fill: whatever the
        ledger's stops already cover, or a stop on its way, is not asked twice."""
        bare = self.coverage(intent.symbol).bare
        if bare <= 0:
            log.info("protective stop for %s not sent: the ledger's stops cover the position", intent.symbol)
            return None
        if not self.covering:
            # From a broker snapshot (the reconciler's), which may predate a
            # sale the ledger has not heard of either: as `cover` does, the
            # broker's position now bounds it, so no stop opens a short.
            bare = self.broker_bare(intent.symbol, bare)
            if bare <= 0:
                log.info(
                    "protective stop for %s not sent: the broker does not hold the shares (or could not "
                    "say); the position's own watch asks again",
                    intent.symbol,
                )
                return None
        return msgspec.structs.replace(intent, qty=bare) if bare < intent.qty else intent

    def cover(self, symbol: str, price: float | None = None, told: tuple[int, int] | None = None) -> None:
        """Request a protective stop for `symbol`'s bare shares now, or when its backoff says.

        `told`: (ledger qty, the broker's position) from the fill that calls
        this; otherwise the broker is asked before a stop is placed."""
        svc, clock = self.om.svc, self.om.clock
        if price:
            self.last_price[symbol] = price
        if self.covering or not svc.first_reconcile.is_set():
            return  # the ledger is trusted once reconciled; one request at a time
        seen = self.coverage(symbol)
        bare = seen.bare
        now = clock.monotonic()
        if seen.exposed <= 0:
            self.watch.covered(symbol)
            return
        # Bare, or covered only by stops whose outcome this instance does not
        # know (left by a replaced instance, or in doubt): either way exposed.
        if not self.watch.due(symbol, now):
            return
        self.watch.requested(symbol, now)
        if bare <= 0:
            for record in seen.pending:  # look them up (paced by the watch): adopted, or abandoned
                self.om.resolve(record)
            bare = self.coverage(symbol).bare
            if bare <= 0:
                return
        if svc.trading_state().state == "HALTED":
            # HALTED places no orders: the operator chooses (resume, or kill to
            # go flat). Said once the bound is passed (`check_all`), not at
            # once: a kill cancels the stops moments before it sells the shares.
            return
        position = svc.store.positions.get(symbol)
        bare = self.broker_bare(symbol, bare, told)
        if bare <= 0:
            return  # none bare at the broker, or it could not say: the watch asks again on its backoff
        reference = self.last_price.get(symbol) or (position.avg_entry_price if position else 0.0)
        if reference <= 0:
            return
        stop = protective_stop_price(reference, svc.settings.reconciler.protective_stop_pct)
        log.warning("%s: %d shares without a stop; placing a protective stop at %.2f", symbol, bare, stop)
        self.om.tell(
            names.ALERTER,
            Alert(
                "WARNING",
                f"unprotected:{symbol}",
                f"{symbol}: {bare} shares unprotected; protective stop at {stop}",
                names.ORDER_MANAGER,
                clock.now_ns(),
            ),
        )
        self.covering = True
        try:
            self.om.on_intent(
                OrderIntent(
                    intent_id=f"protect-{clock.new_id()}",
                    symbol=symbol,
                    side="sell",
                    qty=bare,
                    order_type="stop",
                    limit_price=None,
                    take_profit=None,
                    stop_loss=None,
                    reason="protective stop for bare shares",
                    proposal_id="",
                    quote_recv_ns=clock.now_ns(),
                    reduce_only=True,
                    stop_price=stop,
                )
            )
        finally:
            self.covering = False

    def broker_bare(self, symbol: str, bare: int, told: tuple[int, int] | None = None) -> int:
        """`bare` bounded by the broker's position (`trading.protection.broker_bounded`);
        0 when the broker could not be asked.

        `told`: (ledger qty, the broker's position) from a fill event; else the broker is asked."""
        position = self.om.svc.store.positions.get(symbol)
        held = position.qty if position else 0
        broker = told[1] if told is not None and told[0] == held else self.broker_qty(symbol)
        if broker is None:
            return 0
        return broker_bounded(bare, held, broker)

    def broker_qty(self, symbol: str) -> int | None:
        """The broker's position in `symbol`, asked by REST (None: could not)."""
        try:
            return int(float(self.om.protect_client.get_open_position(symbol).qty))
        except Exception as exc:
            if broker_orders.is_not_found(exc):
                return 0
            log.warning("position of %s not read (%s); protective stop deferred", symbol, redact(exc))
            return None
