"""Alpaca's Trading REST API under /v2: account, positions, orders, assets.

Handlers only parse Alpaca's request shapes into Exchange calls and render the
results with `alpaca_json`; every rule lives in the Exchange. Auth, rate
limits, faults and persistence are the server's middlewares.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from typing import Any

from aiohttp import web

from stockade.venue.alpaca_json import account_json, asset_json, order_json, orders_text, position_json
from stockade.venue.context import VenueContext
from stockade.venue.exchange import QTY_DECIMALS, Exchange, OrderRequest, VenueError, asset_id_for

_TIME_IN_FORCE = ("day", "gtc")
_UNSUPPORTED_TIF = ("opg", "cls", "ioc", "fok")
_ORDER_TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
_ORDER_CLASSES = ("simple", "bracket", "oto", "oco")
MAX_CLIENT_ORDER_ID = 128


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; malformed -> Alpaca's 400 40010000."""
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise VenueError(400, 40010000, "request body format is invalid") from None


def parse_qty(value: Any, field: str = "qty") -> float:
    """Shares (or dollars) from Alpaca's string-or-number field, up to 9 decimals; 422 for anything else."""
    if isinstance(value, bool) or value is None:
        raise VenueError(422, 40010001, f"{field} is required")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise VenueError(422, 40010001, f"invalid {field}") from None
    if not math.isfinite(x):
        raise VenueError(422, 40010001, f"invalid {field}")
    if x <= 0:
        raise VenueError(422, 40010001, f"{field} must be > 0")
    if abs(round(x, QTY_DECIMALS) - x) > 1e-12 * max(1.0, x):
        raise VenueError(422, 40010001, f"{field} can take up to {QTY_DECIMALS} decimal places")
    return round(x, QTY_DECIMALS)


def parse_positive(value: Any, field: str) -> float | None:
    """A positive finite number from a string-or-number field (trail_price, trail_percent, PATCH trail); None if absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise VenueError(422, 40010001, f"invalid {field}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise VenueError(422, 40010001, f"invalid {field}") from None
    if not math.isfinite(x) or x <= 0:
        raise VenueError(422, 40010001, f"{field} must be > 0")
    return x


def parse_price(value: Any, field: str) -> float | None:
    """A limit/stop price; Alpaca refuses sub-penny increments at $1 and above."""
    x = parse_positive(value, field)
    if x is None:
        return None
    decimals = 2 if x >= 1.0 else 4
    if abs(round(x, decimals) - x) > 1e-9:
        raise VenueError(
            422,
            42210000,
            f"invalid {field} {value}. sub-penny increment does not fulfill minimum pricing criteria",
        )
    return x


def parse_order_request(body: Any) -> OrderRequest:
    """Alpaca's POST /v2/orders JSON -> OrderRequest (422 with Alpaca's wording when invalid)."""
    if not isinstance(body, dict):
        raise VenueError(400, 40010000, "request body format is invalid")
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise VenueError(422, 40010001, "symbol is required")
    notional = None
    if body.get("notional") is not None:
        if body.get("qty") is not None:
            # Alpaca's fractional docs: both given is refused with status 400.
            raise VenueError(400, 40010000, "qty and notional are mutually exclusive")
        notional = parse_qty(body["notional"], "notional")
        qty = 0.0
    else:
        qty = parse_qty(body.get("qty"))
    side = body.get("side")
    if side not in ("buy", "sell"):
        raise VenueError(422, 40010001, f"invalid side {side!r}" if side else "side is required")
    otype = body.get("type", body.get("order_type"))
    if otype not in _ORDER_TYPES:
        raise VenueError(422, 40010001, f"invalid order type {otype!r}" if otype else "type is required")
    tif = body.get("time_in_force")
    if tif in _UNSUPPORTED_TIF:
        raise VenueError(422, 40010001, f"time_in_force {tif} is not supported by this venue")
    if tif not in _TIME_IN_FORCE:
        raise VenueError(422, 40010001, f"invalid time_in_force {tif!r}" if tif else "time_in_force is required")
    cid = body.get("client_order_id")
    if cid is not None and (not isinstance(cid, str) or len(cid) > MAX_CLIENT_ORDER_ID):
        raise VenueError(422, 40010001, "client_order_id must be no more than 128 characters")
    order_class = body.get("order_class") or "simple"
    if order_class not in _ORDER_CLASSES:
        raise VenueError(422, 40010001, f"invalid order_class {order_class!r}")
    take_profit = body.get("take_profit") or {}
    stop_loss = body.get("stop_loss") or {}
    if not isinstance(take_profit, dict) or not isinstance(stop_loss, dict):
        raise VenueError(422, 40010001, "take_profit and stop_loss must be objects")
    extended = body.get("extended_hours", False)
    if not isinstance(extended, bool):
        raise VenueError(422, 40010001, "invalid extended_hours")
    return OrderRequest(
        symbol=symbol.upper(),
        qty=qty,
        side=side,
        type=otype,
        time_in_force=tif,
        limit_price=parse_price(body.get("limit_price"), "limit_price"),
        stop_price=parse_price(body.get("stop_price"), "stop_price"),
        client_order_id=cid or None,
        extended_hours=extended,
        order_class=order_class,
        take_profit_limit=parse_price(take_profit.get("limit_price"), "take_profit.limit_price"),
        stop_loss_stop=parse_price(stop_loss.get("stop_price"), "stop_loss.stop_price"),
        stop_loss_limit=parse_price(stop_loss.get("limit_price"), "stop_loss.limit_price"),
        notional=notional,
        trail_price=parse_positive(body.get("trail_price"), "trail_price"),
        trail_percent=parse_positive(body.get("trail_percent"), "trail_percent"),
    )


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SUBMICRO = re.compile(r"T[0-9:]+\.[0-9]{6}([0-9]{1,3})")


def _parse_time(value: str | None, field: str) -> int | None:
    """An RFC 3339 time (or a date) in ns since the epoch, exact: a page boundary
    taken from an order's `submitted_at` must compare equal to it, not float-close."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
        except ValueError:
            raise VenueError(422, 40010001, f"invalid {field}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    ns = (moment - _EPOCH) // dt.timedelta(microseconds=1) * 1000
    # datetime keeps microseconds; Alpaca's own times carry nanoseconds.
    extra = _SUBMICRO.search(value)
    return ns + (int(extra.group(1).ljust(3, "0")) if extra else 0)


def _truthy(value: str | None) -> bool:
    # requests writes Python's True as "True"
    return (value or "").lower() in ("true", "1", "yes")


class TradingApi:
    """The handlers; one instance per venue, bound to its context."""

    def __init__(self, ctx: VenueContext) -> None:
        self.ctx = ctx

    @property
    def ex(self) -> Exchange:
        assert self.ctx.exchange is not None
        return self.ctx.exchange

    def _symbol(self, symbol_or_id: str) -> str:
        for sym in self.ex.symbols:
            if symbol_or_id.upper() == sym or symbol_or_id == asset_id_for(sym):
                return sym
        return symbol_or_id.upper()

    # ---- account -----------------------------------------------------------------

    async def get_account(self, request: web.Request) -> web.Response:
        return web.json_response(account_json(self.ex.account_view(), self.ex))

    async def get_account_configurations(self, request: web.Request) -> web.Response:
        return web.json_response(
            {  # dtbp_check and pdt_check were removed on 2026-07-06 with the PDT rule
                "trade_confirm_email": "none",
                "suspend_trade": False,
                "no_shorting": True,
                "fractional_trading": True,
                "max_margin_multiplier": "1",
                "ptp_no_exception_entry": False,
                "max_options_trading_level": 0,
            }
        )

    # ---- assets --------------------------------------------------------------------

    async def list_assets(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("status") not in (None, "", "active"):
            return web.json_response([])
        if q.get("asset_class") not in (None, "", "us_equity"):
            return web.json_response([])
        assets = [asset_json(s, s not in self.ex.non_fractionable) for s in self.ex.symbols]
        if q.get("exchange"):
            assets = [a for a in assets if a["exchange"] == q["exchange"]]
        return web.json_response(assets)

    async def get_asset(self, request: web.Request) -> web.Response:
        key = request.match_info["symbol"]
        symbol = self._symbol(key)
        if symbol not in self.ex.symbols:
            raise VenueError(404, 40410000, f"asset not found for {key}")
        return web.json_response(asset_json(symbol, symbol not in self.ex.non_fractionable))

    # ---- positions -------------------------------------------------------------------

    async def list_positions(self, request: web.Request) -> web.Response:
        positions = sorted(self.ex.positions.values(), key=lambda p: p.symbol)
        return web.json_response([position_json(p, self.ex) for p in positions])

    async def get_position(self, request: web.Request) -> web.Response:
        symbol = self._symbol(request.match_info["symbol"])
        pos = self.ex.positions.get(symbol)
        if pos is None:
            raise VenueError(404, 40410000, "position does not exist")
        return web.json_response(position_json(pos, self.ex))

    async def close_position(self, request: web.Request) -> web.Response:
        symbol = self._symbol(request.match_info["symbol"])
        q = request.query
        qty = percentage = None
        if q.get("qty") and q.get("percentage"):
            raise VenueError(422, 40010001, "only one of qty or percentage may be given")
        if q.get("qty"):
            qty = parse_qty(q["qty"])
        if q.get("percentage"):
            try:
                percentage = float(q["percentage"])
            except ValueError:
                raise VenueError(422, 40010001, "invalid percentage") from None
            if not 0 < percentage <= 100:
                raise VenueError(422, 40010001, "percentage must be > 0 and <= 100")
        order = self.ex.close_position(symbol, qty=qty, percentage=percentage, route=False)
        body = order_json(order, self.ex)
        self.ex.route_pending()
        return web.json_response(body)

    async def close_all_positions(self, request: web.Request) -> web.Response:
        results = self.ex.close_all(_truthy(request.query.get("cancel_orders")), route=False)
        out = []
        for symbol, status, item in results:
            if isinstance(item, VenueError):
                out.append({"symbol": symbol, "status": status, "body": item.body()})
            else:
                out.append({"symbol": symbol, "status": status, "order_id": item.id, "body": order_json(item, self.ex)})
        self.ex.route_pending()
        return web.json_response(out, status=207)

    # ---- orders ------------------------------------------------------------------------

    async def submit_order(self, request: web.Request) -> web.Response:
        req = parse_order_request(await read_json(request))
        order = self.ex.submit(req, route=False)
        # Rendered as accepted: Alpaca answers before the order reaches the market;
        # the fill follows on the trade-updates stream.
        body = order_json(order, self.ex)
        self.ex.route_pending()
        return web.json_response(body)

    async def list_orders(self, request: web.Request) -> web.Response:
        q = request.query
        status = q.get("status") or "open"
        if status not in ("open", "closed", "all"):
            raise VenueError(422, 40010001, f"invalid status {status!r}")
        try:
            limit = int(q.get("limit") or 50)
        except ValueError:
            raise VenueError(422, 40010001, "invalid limit") from None
        limit = max(1, min(limit, 500))
        direction = (q.get("direction") or "desc").lower()
        if direction not in ("asc", "desc"):
            raise VenueError(422, 40010001, f"invalid direction {direction!r}")
        side = q.get("side") or None
        if side not in (None, "buy", "sell"):
            raise VenueError(422, 40010001, f"invalid side {side!r}")
        symbols = {s.strip().upper() for s in (q.get("symbols") or "").split(",") if s.strip()}
        nested = _truthy(q.get("nested"))
        orders = self.ex.list_orders(
            status=status,
            limit=limit,
            after_ns=_parse_time(q.get("after"), "after"),
            until_ns=_parse_time(q.get("until"), "until"),
            direction=direction,
            nested=nested,
            symbols=symbols or None,
            side=side,
        )
        return web.Response(text=orders_text(orders, self.ex, nested=nested), content_type="application/json")

    def _order_by_path(self, request: web.Request):
        oid = request.match_info["order_id"]
        try:
            uuid.UUID(oid)
        except ValueError:
            raise VenueError(404, 40410000, f"order not found for {oid}") from None
        return self.ex.get_order(oid)

    async def get_order(self, request: web.Request) -> web.Response:
        order = self._order_by_path(request)
        return web.json_response(order_json(order, self.ex, nested=_truthy(request.query.get("nested", "true"))))

    async def get_order_by_client_id(self, request: web.Request) -> web.Response:
        cid = request.query.get("client_order_id")
        if not cid:
            raise VenueError(422, 40010001, "client_order_id is required")
        return web.json_response(order_json(self.ex.get_order_by_client_id(cid), self.ex))

    async def replace_order(self, request: web.Request) -> web.Response:
        order = self._order_by_path(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise VenueError(400, 40010000, "request body format is invalid")
        tif = body.get("time_in_force")
        if tif is not None and tif not in _TIME_IN_FORCE:
            raise VenueError(422, 40010001, f"invalid time_in_force {tif!r}")
        new = self.ex.replace(
            order.id,
            qty=parse_qty(body["qty"]) if body.get("qty") is not None else None,
            limit_price=parse_price(body.get("limit_price"), "limit_price"),
            stop_price=parse_price(body.get("stop_price"), "stop_price"),
            time_in_force=tif,
            client_order_id=body.get("client_order_id"),
            trail=parse_positive(body.get("trail"), "trail"),
        )
        out = order_json(new, self.ex)
        self.ex.route_pending()
        return web.json_response(out)

    async def cancel_order(self, request: web.Request) -> web.Response:
        order = self._order_by_path(request)
        self.ex.cancel(order.id)
        return web.Response(status=204)

    async def cancel_all_orders(self, request: web.Request) -> web.Response:
        results = self.ex.cancel_all()
        return web.json_response(
            [{"id": oid, "status": status, "body": order_json(o, self.ex)} for oid, status, o in results],
            status=207,
        )


def add_routes(app: web.Application, ctx: VenueContext) -> None:
    """Register the Trading REST routes on `app`."""
    api = TradingApi(ctx)
    app.router.add_get("/v2/account", api.get_account)
    app.router.add_get("/v2/account/configurations", api.get_account_configurations)
    app.router.add_get("/v2/assets", api.list_assets)
    app.router.add_get("/v2/assets/{symbol}", api.get_asset)
    app.router.add_get("/v2/positions", api.list_positions)
    app.router.add_delete("/v2/positions", api.close_all_positions)
    app.router.add_get("/v2/positions/{symbol}", api.get_position)
    app.router.add_delete("/v2/positions/{symbol}", api.close_position)
    app.router.add_post("/v2/orders", api.submit_order)
    app.router.add_get("/v2/orders", api.list_orders)
    app.router.add_delete("/v2/orders", api.cancel_all_orders)
    app.router.add_get("/v2/orders:by_client_order_id", api.get_order_by_client_id)
    app.router.add_get("/v2/orders/{order_id}", api.get_order)
    app.router.add_patch("/v2/orders/{order_id}", api.replace_order)
    app.router.add_delete("/v2/orders/{order_id}", api.cancel_order)
