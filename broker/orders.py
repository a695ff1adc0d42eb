"""Translation between stockade's types and alpaca-py's: order requests out,
orders and accounts in.

No I/O here: the OrderManager and the Reconciler call the broker and use
these to build requests and read the answers.
"""

from __future__ import annotations

import time
from typing import Any, get_args

from stockade.codecs.messages import AccountSnapshot, OrderIntent, OrderUpdate
from stockade.codecs.records import OrderClass, OrderRecord, OrderType
from stockade.trading.brackets import round_price
from stockade.trading.order_states import state_from_broker_status

CLIENT_ID_PREFIX = "stk-"
# Alpaca's error codes the order path acts on.
DUPLICATE_CLIENT_ORDER_ID = 40010001
ORDER_NOT_FOUND = 40410000

# Why the broker refused an order, from its code and message. The
# risk guard and the operator act on these (see `rejection_reason`). No "pdt":
# Alpaca stopped refusing orders as pattern day trades (40310100) when FINRA
# retired the rule in 2026; under intraday margin a refusal is buying power.
REJECTION_REASONS = ("wash_trade", "buying_power", "insufficient_qty", "other")


def client_order_id(intent_id: str) -> str:
    """Deterministic: the same intent always has the same id, so a resend after
    a crash or a timeout can never become a second order (the broker refuses a
    duplicate client_order_id)."""
    return f"{CLIENT_ID_PREFIX}{intent_id}"


def replacement_id(old_client_order_id: str, stop_price: float) -> str:
    """The client_order_id of the order replacing `old` at `stop_price`: the same
    move always has the same id, so an ambiguous replace is looked up, not repeated."""
    import hashlib

    digest = hashlib.sha256(f"{old_client_order_id}@{stop_price:.4f}".encode()).hexdigest()[:20]
    return client_order_id(f"mv-{digest}")


def is_ours(client_id: str | None) -> bool:
    return client_id is not None and client_id.startswith(CLIENT_ID_PREFIX)


def build_request(intent: OrderIntent, coid: str, time_in_force: str = "day") -> Any:
    """The alpaca-py request for an intent: a bracket when it has both exits.

    An extended-hours intent becomes a simple DAY limit with
    `extended_hours=true`, whatever `time_in_force` says: Alpaca takes only
    limit orders in the extended sessions (a market order is refused with 422
    "extended hours order must be DAY or GTC limit orders") and no bracket/OCO
    classes. DAY, so an unfilled order ends with the day's extended session
    (20:00 New York) instead of resting for days.
    """
    from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
    from alpaca.trading.requests import (
        LimitOrderRequest,
        MarketOrderRequest,
        StopLossRequest,
        StopOrderRequest,
        TakeProfitRequest,
    )

    common: dict[str, Any] = dict(
        symbol=intent.symbol,
        qty=intent.qty,
        side=OrderSide.BUY if intent.side == "buy" else OrderSide.SELL,
        time_in_force=TimeInForce.GTC if time_in_force == "gtc" else TimeInForce.DAY,
        client_order_id=coid,
    )
    if intent.extended_hours:
        # No legs. A non-limit intent is sent as it is: the broker's refusal is
        # an ordinary rejection, where an exception here would crash the sender.
        common.update(time_in_force=TimeInForce.DAY, extended_hours=True)
    elif intent.take_profit is not None and intent.stop_loss is not None and not intent.reduce_only:
        common.update(
            order_class=OrderClass.BRACKET,
            take_profit=TakeProfitRequest(limit_price=round_price(intent.take_profit)),
            stop_loss=StopLossRequest(stop_price=round_price(intent.stop_loss)),
        )
    if intent.order_type == "limit" and intent.limit_price is not None:
        return LimitOrderRequest(limit_price=round_price(intent.limit_price), **common)
    if intent.order_type == "stop" and intent.stop_price is not None:
        return StopOrderRequest(stop_price=round_price(intent.stop_price), **common)
    return MarketOrderRequest(**common)


def enum_str(value: Any) -> str:
    """An alpaca-py enum (or plain string) as its lower-case value."""
    return str(getattr(value, "value", value) or "").lower()


# The values a record may hold (msgspec checks them when it is read back).
_ORDER_TYPES: dict[str, OrderType] = {t: t for t in get_args(OrderType)}
_ORDER_CLASSES: dict[str, OrderClass] = {c: c for c in get_args(OrderClass)}


def _f(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def status_of(order: Any) -> str:
    return enum_str(order.status)


def record_from_order(
    order: Any,
    *,
    intent_id: str = "",
    reason: str = "",
    parent_id: str | None = None,
    unfilled: bool = False,
    now_ns: int | None = None,
) -> OrderRecord:
    """A ledger record for a broker order we did not place ourselves (adoption).

    `unfilled`: record it as working with nothing filled yet, so that the
    caller's next step (`OrderManager._apply` of the same order) records its
    fills; otherwise they would be in the record but never in the fill ledger.
    """
    now = time.time_ns() if now_ns is None else now_ns
    order_type = enum_str(order.type or order.order_type) or "market"
    legs = tuple(leg.client_order_id for leg in (order.legs or ()))
    return OrderRecord(
        client_order_id=order.client_order_id,
        intent_id=intent_id,
        symbol=order.symbol or "",
        side="buy" if enum_str(order.side) == "buy" else "sell",
        qty=int(float(order.qty or 0)),
        order_type=_ORDER_TYPES.get(order_type, "market"),
        limit_price=_f(order.limit_price),
        stop_price=_f(order.stop_price),
        order_class=_ORDER_CLASSES.get(enum_str(order.order_class), "simple"),  # "mleg" (options) is not ours
        time_in_force=enum_str(order.time_in_force) or "day",
        state="accepted" if unfilled else state_from_broker_status(status_of(order)),
        broker_order_id=str(order.id),
        filled_qty=0 if unfilled else int(float(order.filled_qty or 0)),
        filled_avg_price=None if unfilled else _f(order.filled_avg_price),
        created_ns=now,
        updated_ns=now,
        reason=reason,
        legs=legs,
        parent_id=parent_id,
    )


def update_from_order(order: Any, event: str | None = None, now_ns: int | None = None) -> OrderUpdate:
    """An OrderUpdate as if the trade stream had said what REST now says."""
    status = status_of(order)
    return OrderUpdate(
        event=event or status,
        client_order_id=order.client_order_id,
        broker_order_id=str(order.id),
        symbol=order.symbol or "",
        side="buy" if enum_str(order.side) == "buy" else "sell",
        status=status,
        qty=float(order.qty or 0),
        filled_qty=float(order.filled_qty or 0),
        filled_avg_price=_f(order.filled_avg_price),
        ts_ns=time.time_ns() if now_ns is None else now_ns,
        order_class=enum_str(order.order_class),
        order_type=enum_str(order.type or order.order_type),
        stop_price=_f(order.stop_price),
    )


def api_error_code(exc: BaseException) -> int | None:
    """Alpaca's numeric error code of an APIError, when its body has one."""
    from alpaca.common.exceptions import APIError

    if not isinstance(exc, APIError):
        return None
    try:
        return int(exc.code)  # the body is JSON with a "code", or not
    except Exception:
        return None


def rejection_reason(code: int | None, message: str) -> str:
    """One of `REJECTION_REASONS` for a 4xx refusal (Alpaca shares 40310000
    between several causes, so the message decides those)."""
    text = message.lower()
    if "wash trade" in text:
        return "wash_trade"
    if "buying power" in text:
        return "buying_power"
    if "insufficient qty" in text or "qty available" in text or "insufficient quantity" in text:
        return "insufficient_qty"
    return "other"


def api_message(exc: BaseException) -> str:
    """The broker's error message of an APIError (its body's `message`), else the text."""
    from alpaca.common.exceptions import APIError

    if not isinstance(exc, APIError):
        return str(exc)
    try:
        return str(exc.message)  # the body is JSON with a "message", or not
    except Exception:
        return str(exc)


def is_retryable(status: int | None) -> bool:
    """A failure worth retrying: refused before doing anything (429) or the
    server's fault (5xx). Any other 4xx is a definitive no."""
    return status is None or status == 429 or status >= 500


def is_not_taken(status: int | None) -> bool:
    """The broker refused the request before acting on it: a 429 (rate limit)
    means the order was not placed, so the outcome is known, not in doubt."""
    return status == 429


def is_not_found(exc: BaseException) -> bool:
    """The broker says it has no such order (as opposed to: the lookup failed)."""
    return api_error_code(exc) == ORDER_NOT_FOUND or api_status(exc) == 404


def api_status(exc: BaseException) -> int | None:
    """The HTTP status of an APIError (None when it has no response)."""
    from alpaca.common.exceptions import APIError

    if not isinstance(exc, APIError):
        return None
    status: int | None = exc.status_code  # alpaca-py leaves this property unannotated
    return status


def account_snapshot(account: Any, now_ns: int | None = None) -> AccountSnapshot:
    """The risk guard's view of an alpaca-py `TradeAccount`."""
    return AccountSnapshot(
        equity=float(account.equity or 0),
        last_equity=float(account.last_equity or 0),
        cash=float(account.cash or 0),
        buying_power=float(account.buying_power or 0),
        trading_blocked=bool(account.trading_blocked or account.account_blocked),
        ts_ns=time.time_ns() if now_ns is None else now_ns,
    )
