"""Full liquidation against the broker: cancel every order, close every position,
verify flat, retry until flat or out of attempts.

Used by the EmergencyStop actor and, when the supervision tree itself is gone,
by the root's exhaustion hook in a fresh thread. It needs nothing but a broker
client, so it works with every actor dead. Its callers pass a client on the
shared REST budget as its emergency spender (`emergency_stop.liquidation_client`):
every call here is counted there and never held back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from stockade.broker import order_pages
from stockade.broker.orders import status_of
from stockade.broker.rest import redact

VERIFY_POLL_S = 0.5

# Order statuses that still rest at the broker and must be cancelled.
_OPEN_STATUSES = {
    "new",
    "accepted",
    "partially_filled",
    "pending_new",
    "accepted_for_bidding",
    "held",
    "pending_replace",
    "replaced",
    "calculated",
    "stopped",
    "suspended",
}


class LiquidationReport(msgspec.Struct, frozen=True):
    """What a liquidation did; `flat` is the verdict the operator needs."""

    flat: bool
    attempts: int
    positions_left: tuple[str, ...]
    orders_left: int
    errors: tuple[str, ...]
    elapsed_s: float


def open_orders(client: Any) -> list[Any]:
    """Every order still resting at the broker (including bracket legs)."""
    return [o for o in order_pages.open_orders(client) if status_of(o) in _OPEN_STATUSES]


def is_flat(client: Any) -> tuple[bool, list[str], int]:
    """(flat, symbols still held, open orders count) as the broker sees it."""
    positions = [p for p in client.get_all_positions() if float(p.qty) != 0.0]
    orders = open_orders(client)
    return (not positions and not orders, sorted(p.symbol for p in positions), len(orders))


def liquidate(
    client: Any,
    *,
    attempts: int = 10,
    retry_interval_s: float = 1.0,
    flat_timeout_s: float = 30.0,
    stop_event: threading.Event | None = None,
    on_attempt: Callable[[int, str], None] | None = None,
) -> LiquidationReport:
    """Cancel all orders and close all positions until the broker says flat.

    Each attempt: cancel all orders, close all positions (cancelling orders
    again in the same call, since a bracket leg may have appeared), then poll
    until flat or `retry_interval_s` passes. Stops after `attempts` or
    `flat_timeout_s`, whichever comes first, and says what was left.
    """
    started = time.monotonic()
    deadline = started + flat_timeout_s
    errors: list[str] = []
    held: list[str] = []
    orders_left = 0
    attempt = 0
    stop_event = stop_event or threading.Event()
    while attempt < attempts and time.monotonic() < deadline and not stop_event.is_set():
        attempt += 1
        try:
            client.cancel_orders()
        except Exception as exc:  # keep going: closing positions matters more
            errors.append(f"attempt {attempt}: cancel_orders: {redact(exc)}")
        try:
            client.close_all_positions(cancel_orders=True)
        except Exception as exc:
            errors.append(f"attempt {attempt}: close_all_positions: {redact(exc)}")
        poll_until = min(deadline, time.monotonic() + retry_interval_s)
        while True:
            try:
                flat, held, orders_left = is_flat(client)
            except Exception as exc:
                errors.append(f"attempt {attempt}: verify: {redact(exc)}")
                flat = False
            if flat:
                return LiquidationReport(True, attempt, (), 0, tuple(errors[-20:]), time.monotonic() - started)
            # Two REST calls per check: at 0.5 s that is 240/min at most, the
            # order of Alpaca's whole budget; never poll faster than this.
            if time.monotonic() >= poll_until or stop_event.wait(VERIFY_POLL_S):
                break
        if on_attempt:
            on_attempt(attempt, f"still holding {held or 'nothing'}, {orders_left} open order(s)")
    # The caller (emergency_liquidation) logs the outcome, with its context.
    return LiquidationReport(False, attempt, tuple(held), orders_left, tuple(errors[-20:]), time.monotonic() - started)
