"""Translation between stockade's types and alpaca-py's: order requests out,
orders and accounts in.

No I/O here: the OrderManager and the Reconciler call the broker and use
these to build requests and read the answers.
"""

from __future__ import annotations

import time
from typing import Any

from stockade.codecs.messages import AccountSnapshot, OrderIntent, OrderUpdate
from stockade.codecs.records import OrderRecord
from stockade.quant.brackets import round_price
from stockade.storage.order_states import state_from_broker_status

CLIENT_ID_PREFIX = "stk-"
# Alpaca's error codes the order path acts on.
DUPLICATE_CLIENT_ORDER_ID = 40010001
ORDER_NOT_FOUND = 40410000


def client_order_id(intent_id: str) -> str:
    """Deterministic: the same intent always has the same id, so a resend after
    a crash or a timeout can never become a second order (the broker refuses a
    duplicate client_order_id)."""
    return f"{CLIENT_ID_PREFIX}{intent_id}"


def is_ours(client_id: str | None) -> bool:
    return bool(client_id) and client_id.startswith(CLIENT_ID_PREFIX)


def build_request(intent: OrderIntent, coid: str, time_in_force: str = "day") -> Any:
    """The alpaca-py request for an intent: a bracket when it has both exits."""
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
    if intent.take_profit is not None and intent.stop_loss is not None and not intent.reduce_only:
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


def _f(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def status_of(order: Any) -> str:
    return enum_str(order.status)


def record_from_order(order: Any, *, intent_id: str = "", reason: str = "", parent_id: str | None = None) -> OrderRecord:
    """A ledger record for a broker order we did not place ourselves (adoption)."""
    now = time.time_ns()
    order_type = enum_str(order.type or order.order_type) or "market"
    legs = tuple(leg.client_order_id for leg in (order.legs or ()))
    return OrderRecord(
        client_order_id=order.client_order_id,
        intent_id=intent_id,
        symbol=order.symbol or "",
        side="buy" if enum_str(order.side) == "buy" else "sell",
        qty=int(float(order.qty or 0)),
        order_type=order_type if order_type in ("market", "limit", "stop", "stop_limit", "trailing_stop") else "market",
        limit_price=_f(order.limit_price),
        stop_price=_f(order.stop_price),
        order_class=enum_str(order.order_class) or "simple",  # type: ignore[arg-type]
        time_in_force=enum_str(order.time_in_force) or "day",
        state=state_from_broker_status(status_of(order)),
        broker_order_id=str(order.id),
        filled_qty=int(float(order.filled_qty or 0)),
        filled_avg_price=_f(order.filled_avg_price),
        created_ns=now,
        updated_ns=now,
        reason=reason,
        legs=legs,
        parent_id=parent_id,
    )


def update_from_order(order: Any, event: str | None = None) -> OrderUpdate:
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
        ts_ns=time.time_ns(),
        order_class=enum_str(order.order_class),
    )


def api_error_code(exc: BaseException) -> int | None:
    """Alpaca's numeric error code of an APIError, when its body has one."""
    try:
        return int(exc.code)  # type: ignore[attr-defined]
    except Exception:
        return None


def is_not_found(exc: BaseException) -> bool:
    """The broker says it has no such order (as opposed to: the lookup failed)."""
    return api_error_code(exc) == ORDER_NOT_FOUND or api_status(exc) == 404


def api_status(exc: BaseException) -> int | None:
    try:
        return exc.status_code  # type: ignore[attr-defined]
    except Exception:
        return None


def account_snapshot(account: Any) -> AccountSnapshot:
    """The risk guard's view of an alpaca-py `TradeAccount`."""
    return AccountSnapshot(
        equity=float(account.equity or 0), last_equity=float(account.last_equity or 0), cash=float(account.cash or 0),
        buying_power=float(account.buying_power or 0), daytrade_count=int(account.daytrade_count or 0),
        pattern_day_trader=bool(account.pattern_day_trader),
        trading_blocked=bool(account.trading_blocked or account.account_blocked), ts_ns=time.time_ns(),
    )
