"""Exchange records rendered as the JSON bodies Alpaca's Trading API sends.

Alpaca sends money and quantities as JSON strings, ids as UUID strings and
times as RFC 3339 in UTC with nanoseconds; alpaca-py's pydantic models (and
other clients) parse exactly that, so every body is built here in one place.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, overload

import msgspec

from stockade.venue.exchange import AccountView, Exchange, Order, Position, TradeEvent, asset_id_for, qty_text

EXCHANGE_OF = {"SPY": "ARCA"}  # everything else is listed on NASDAQ in the simulator


@overload
def ts(ns: int) -> str: ...
@overload
def ts(ns: None) -> None: ...
def ts(ns: int | None) -> str | None:
    """RFC 3339 UTC with nanoseconds, as Alpaca writes it (…T15:28:33.474853941Z)."""
    if ns is None:
        return None
    secs, frac = divmod(ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(secs, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def num(x: float | int | None) -> str | None:
    """A number as Alpaca's decimal string: no exponent, no float noise."""
    if x is None:
        return None
    if isinstance(x, int):
        return str(x)
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def qty_str(x: float | int | None) -> str | None:
    """A quantity as Alpaca writes it: up to 9 decimals, no exponent ("1", "0.25")."""
    return None if x is None else qty_text(x)


# Rendered orders by their whole content (msgpack): a listing renders the
# same unchanged orders pass after pass (resting bracket legs for hours), and
# their nine timestamps' strftime cost more than the rest of the request. The
# key is every field, so a changed order is rendered again, never served stale.
_RENDERED: dict[bytes, dict[str, Any]] = {}
_RENDERED_MAX = 5_000  # order versions kept (~4 KB each with their text: ~20 MB at most); cleared whole when full
_encode = msgspec.msgpack.Encoder().encode
T = TypeVar("T")


def order_json(order: Order, ex: Exchange, *, nested: bool = True) -> dict[str, Any]:
    """An order object; bracket entries carry their legs when `nested` (as POST and nested GET do)."""
    flat = _memo(_RENDERED, _encode(order), lambda: _order_json(order))
    body = dict(flat)  # the caller's own: nothing it does reaches the cache
    if order.leg_ids and nested:
        body["legs"] = [order_json(leg, ex, nested=False) for leg in ex.legs_of(order)]
    return body


_TEXTS: dict[bytes, str] = {}  # the same, as JSON text (for listings)


def orders_text(orders: list[Order], ex: Exchange, *, nested: bool) -> str:
    """`json.dumps([order_json(o, ex, nested=nested) for o in orders])`, the same text, with each
    order's text reused while the order is unchanged (a listing is mostly resting orders)."""
    parts = []
    for order in orders:
        if order.leg_ids and nested:
            parts.append(json.dumps(order_json(order, ex, nested=True)))
            continue
        parts.append(_memo(_TEXTS, _encode(order), partial(_order_text, order, ex)))
    # json.dumps writes a list as its items' own texts joined by ", " (its default separators).
    return "[" + ", ".join(parts) + "]"


def _order_text(order: Order, ex: Exchange) -> str:
    return json.dumps(order_json(order, ex, nested=False))


def _memo(cache: dict[bytes, T], key: bytes, make: Callable[[], T]) -> T:
    """`cache[key]`, made by `make()` when missing; a full cache (`_RENDERED_MAX`) is cleared whole."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= _RENDERED_MAX:
            cache.clear()
        value = cache[key] = make()
    return value


def _order_json(order: Order) -> dict[str, Any]:
    """`order_json` without its legs (`legs` null)."""
    return {
        "id": order.id,
        "client_order_id": order.client_order_id,
        "created_at": ts(order.created_at_ns),
        "updated_at": ts(order.updated_at_ns),
        "submitted_at": ts(order.submitted_at_ns),
        "filled_at": ts(order.filled_at_ns),
        "expired_at": ts(order.expired_at_ns),
        "canceled_at": ts(order.canceled_at_ns),
        "failed_at": ts(order.failed_at_ns),
        "replaced_at": ts(order.replaced_at_ns),
        "replaced_by": order.replaced_by,
        "replaces": order.replaces,
        "asset_id": order.asset_id,
        "symbol": order.symbol,
        "asset_class": "us_equity",
        "notional": num(order.notional),
        # Alpaca: "notional: ... If entered, qty will be null", filled or not: the
        # shares a notional order bought are in filled_qty (the venue's own
        # `qty`, fixed at the fill, is its bookkeeping).
        "qty": None if order.notional is not None else qty_str(order.qty),
        "filled_qty": qty_str(order.filled_qty),
        "filled_avg_price": num(order.filled_avg_price),
        "order_class": order.order_class,
        "order_type": order.type,
        "type": order.type,
        "side": order.side,
        "position_intent": _intent(order),
        "time_in_force": order.time_in_force,
        "limit_price": num(order.limit_price),
        "stop_price": num(order.stop_price),
        "status": order.status,
        "extended_hours": order.extended_hours,
        "legs": None,
        "trail_percent": num(order.trail_percent),
        "trail_price": num(order.trail_price),
        "hwm": num(order.hwm),
        "expires_at": None,
    }


def _intent(order: Order) -> str:
    # Without shorting every buy opens and every sell closes a long.
    return "buy_to_open" if order.side == "buy" else "sell_to_close"


def position_json(pos: Position, ex: Exchange) -> dict[str, Any]:
    price = ex.mark_price(pos.symbol)
    current = price if price is not None else pos.avg_entry_price
    cost = pos.qty * pos.avg_entry_price
    value = ex.position_value(pos)
    pl = value - cost
    plpc = pl / cost if cost else 0.0
    # No prior-day close in the simulator: the intraday figures use the entry price as the base.
    return {
        "asset_id": pos.asset_id,
        "symbol": pos.symbol,
        "exchange": EXCHANGE_OF.get(pos.symbol, "NASDAQ"),
        "asset_class": "us_equity",
        "asset_marginable": True,
        "qty": qty_str(pos.qty),
        "qty_available": qty_str(max(0.0, pos.qty - ex.held_for_orders(pos.symbol))),
        "avg_entry_price": num(round(pos.avg_entry_price, 6)),
        "side": "long",
        "market_value": num(round(value, 4)),
        "cost_basis": num(round(cost, 4)),
        "unrealized_pl": num(round(pl, 4)),
        "unrealized_plpc": num(round(plpc, 10)),
        "unrealized_intraday_pl": num(round(pl, 4)),
        "unrealized_intraday_plpc": num(round(plpc, 10)),
        "current_price": num(round(current, 4)),
        "lastday_price": num(round(pos.avg_entry_price, 4)),
        "change_today": "0",
    }


def account_json(view: AccountView, ex: Exchange) -> dict[str, Any]:
    # As Alpaca's account is since 2026-07-06: no pattern_day_trader,
    # daytrade_count, daytrading_buying_power (nor bod_dtbp) any more.
    st = view.state

    def m(x: float) -> str | None:
        return num(round(x, 2))  # Alpaca reports account money in cents

    return {
        "id": st.id,
        "account_number": st.account_number,
        "status": "ACTIVE",
        "crypto_status": "INACTIVE",
        "currency": "USD",
        "buying_power": m(view.buying_power),
        "regt_buying_power": m(view.buying_power),
        "effective_buying_power": m(view.buying_power),
        "non_marginable_buying_power": m(view.buying_power),
        "options_buying_power": m(view.buying_power),
        "cash": m(st.cash),
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "portfolio_value": m(view.equity),
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "created_at": ts(st.created_at_ns),
        "trade_suspended_by_user": False,
        "multiplier": "1",
        "shorting_enabled": False,
        "equity": m(view.equity),
        "last_equity": m(st.last_equity),
        "long_market_value": m(view.long_market_value),
        "short_market_value": "0",
        "position_market_value": m(view.long_market_value),
        "initial_margin": m(view.long_market_value),
        "maintenance_margin": m(view.long_market_value * 0.3),
        "last_maintenance_margin": "0",
        "sma": "0",
        "balance_asof": ts(ex.clock.now_ns())[:10],
        "options_approved_level": 0,
        "options_trading_level": 0,
        "intraday_adjustments": "0",
        "pending_reg_taf_fees": "0",
    }


def asset_json(symbol: str, fractionable: bool = True) -> dict[str, Any]:
    return {
        "id": asset_id_for(symbol),
        "class": "us_equity",
        "exchange": EXCHANGE_OF.get(symbol, "NASDAQ"),
        "symbol": symbol,
        "name": f"{symbol} (simulated)",
        "status": "active",
        "tradable": True,
        "marginable": True,
        "maintenance_margin_requirement": 30,
        "margin_requirement_long": "30",
        "margin_requirement_short": "100",
        "shortable": False,
        "easy_to_borrow": False,
        "fractionable": fractionable,
        "attributes": [],
    }


def trade_update_json(ev: TradeEvent, ex: Exchange) -> dict[str, Any]:
    """The `data` of one trade_updates frame."""
    data: dict[str, Any] = {
        "event": ev.event,
        "timestamp": ts(ev.ts_ns),
        "order": order_json(ev.order, ex),
    }
    if ev.execution_id is not None:
        data["execution_id"] = ev.execution_id
        data["price"] = num(ev.price)
        data["qty"] = qty_str(ev.qty)
        data["position_qty"] = qty_str(ev.position_qty)
    return data
