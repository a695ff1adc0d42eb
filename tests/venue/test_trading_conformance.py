"""The venue through the real alpaca-py TradingClient and TradingStream: every call parses."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import websockets
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import ClosePositionResponse, Order, Position, TradeAccount, TradeUpdate
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetOrderByIdRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
)
from alpaca.trading.stream import TradingStream
from venue_helpers import current_quote, http, inject_quote, sdk_client
from waiting import wait_for

from stockade.venue.config import VenueConfig
from stockade.venue.server import start_venue

WS_TIMEOUT_S = 10.0


def market(symbol="AAPL", qty=1, side=OrderSide.BUY, **kw) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY, **kw)


def far_limit(symbol="AAPL", qty=1, **kw) -> LimitOrderRequest:
    """A buy limit far under the market: rests until cancelled."""
    return LimitOrderRequest(
        symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1.00, **kw
    )


def filled(client, order_id) -> Order:
    return wait_for(
        lambda: (o := client.get_order_by_id(order_id)).status == OrderStatus.FILLED and o,
        timeout=10,
        what="order filled",
    )


# ---- account, assets -----------------------------------------------------------------------


# Removed from Alpaca's account on 2026-07-06 (changelog: "Pattern day trading fields and
# configurations removed"), and from its account configurations.
PDT_ACCOUNT_FIELDS = {
    "pattern_day_trader",
    "daytrade_count",
    "daytrading_buying_power",
    "bod_dtbp",
    "last_daytrade_count",
    "last_daytrading_buying_power",
}
PDT_CONFIG_FIELDS = {"pdt_check", "dtbp_check"}


def test_account_parses(venue):
    acct = sdk_client(venue).get_account()
    assert isinstance(acct, TradeAccount)
    assert acct.cash == "100000" and acct.equity == "100000" and acct.last_equity == "100000"
    assert acct.status == "ACTIVE" and acct.daytrade_count is None and acct.pattern_day_trader is None
    assert float(acct.buying_power) == 100_000


def test_account_has_no_pattern_day_trader_fields_and_stockade_reads_it(venue):
    """The account as Alpaca sends it since 2026-07-06, through alpaca-py and stockade's own
    client and snapshot, into a risk decision."""
    from stockade.broker.orders import account_snapshot
    from stockade.broker.rest import make_trading_client
    from stockade.trading.risk_rules import RiskContext, RiskRequest, evaluate

    raw = http(venue, "GET", "/v2/account").json()
    assert not PDT_ACCOUNT_FIELDS & set(raw), sorted(PDT_ACCOUNT_FIELDS & set(raw))
    config = http(venue, "GET", "/v2/account/configurations").json()
    assert not PDT_CONFIG_FIELDS & set(config)
    key, secret = venue.ctx.config.api_key, venue.ctx.config.api_secret
    client = make_trading_client(key, secret, venue.base_url, timeout_s=5)
    assert client.get_account_configurations().pdt_check is None
    snap = account_snapshot(client.get_account())
    assert (snap.equity, snap.last_equity, snap.cash, snap.buying_power, snap.trading_blocked) == (
        100_000.0,
        100_000.0,
        100_000.0,
        100_000.0,
        False,
    )
    now = snap.ts_ns
    verdict = evaluate(
        RiskRequest(symbol="AAPL", side="buy", price=100.0, bid=99.99, ask=100.01, quote_recv_ns=now),
        RiskContext(now_ns=now, trading_state="ACTIVE", market_open=True, account=snap),
    )
    assert verdict.allowed, verdict.failures


def test_assets(venue):
    client = sdk_client(venue)
    assets = client.get_all_assets()
    assert sorted(a.symbol for a in assets) == ["AAPL", "MSFT", "SPY"]
    aapl = client.get_asset("AAPL")
    assert aapl.tradable and aapl.asset_class == "us_equity"
    assert client.get_asset(aapl.id).symbol == "AAPL"
    with pytest.raises(APIError) as err:
        client.get_asset("ZZZZ")
    assert err.value.status_code == 404 and err.value.code == 40410000


# ---- orders -------------------------------------------------------------------------------------


def test_market_order_lifecycle(venue):
    client = sdk_client(venue)
    submitted = client.submit_order(market(qty=3, client_order_id="mkt-1"))
    assert isinstance(submitted, Order)
    assert submitted.status in (OrderStatus.PENDING_NEW, OrderStatus.NEW, OrderStatus.ACCEPTED)
    assert submitted.qty == "3" and submitted.client_order_id == "mkt-1"
    assert submitted.order_class == OrderClass.SIMPLE
    order = filled(client, submitted.id)
    assert order.filled_qty == "3" and float(order.filled_avg_price) > 0 and order.filled_at is not None
    assert client.get_order_by_client_id("mkt-1").id == submitted.id

    pos = client.get_open_position("AAPL")
    assert isinstance(pos, Position)
    assert pos.qty == "3" and pos.side == "long" and float(pos.avg_entry_price) == float(order.filled_avg_price)
    acct = client.get_account()
    assert float(acct.cash) == pytest.approx(100_000 - 3 * float(order.filled_avg_price), abs=0.01)


def test_get_orders_filters(venue):
    client = sdk_client(venue)
    start = datetime.now(UTC) - timedelta(seconds=5)
    a = client.submit_order(market(symbol="AAPL"))
    b = client.submit_order(far_limit(symbol="MSFT"))
    filled(client, a.id)
    open_orders = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
    assert [o.id for o in open_orders] == [b.id]
    every = client.get_orders(
        GetOrdersRequest(
            status=QueryOrderStatus.ALL, direction=Sort.ASC, after=start, until=datetime.now(UTC) + timedelta(1)
        )
    )
    assert [o.id for o in every] == [a.id, b.id]
    only_msft = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, symbols=["MSFT"], side=OrderSide.BUY))
    assert [o.id for o in only_msft] == [b.id]
    closed = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED, limit=1))
    assert [o.id for o in closed] == [a.id]


def test_get_orders_after_and_until_are_exclusive(venue):
    """Alpaca: `after` and `until` both exclude an order submitted at that very time (paging relies on it)."""
    client = sdk_client(venue)
    ids = [str(client.submit_order(far_limit()).id) for _ in range(3)]
    listed = http(venue, "GET", "/v2/orders", params={"status": "all", "direction": "asc"}).json()
    assert [o["id"] for o in listed] == ids
    first, middle, last = (o["submitted_at"] for o in listed)  # exact, nanoseconds

    def between(**params) -> list[str]:
        got = http(venue, "GET", "/v2/orders", params={"status": "all", "direction": "asc", **params})
        assert got.status_code == 200, got.text
        return [o["id"] for o in got.json()]

    assert between(after=first, until=last) == [ids[1]]
    assert between(until=middle) == [ids[0]]
    assert between(after=middle) == [ids[2]]


def test_cancel_order_and_cancel_filled(venue):
    client = sdk_client(venue)
    resting = client.submit_order(far_limit())
    assert client.cancel_order_by_id(resting.id) is None
    assert client.get_order_by_id(resting.id).status == OrderStatus.CANCELED
    with pytest.raises(APIError) as err:
        client.cancel_order_by_id(resting.id)
    assert err.value.status_code == 422 and err.value.code == 42210000
    done = client.submit_order(market())
    filled(client, done.id)
    with pytest.raises(APIError) as err:
        client.cancel_order_by_id(done.id)
    assert err.value.code == 42210000


def test_cancel_all_orders(venue):
    client = sdk_client(venue)
    ids = {client.submit_order(far_limit()).id for _ in range(3)}
    results = client.cancel_orders()
    assert {r.id for r in results} == ids and all(r.status == 200 for r in results)
    assert client.get_orders() == []


def test_order_not_found(venue):
    client = sdk_client(venue)
    with pytest.raises(APIError) as err:
        client.get_order_by_id(uuid.uuid4())
    assert err.value.status_code == 404 and err.value.code == 40410000
    with pytest.raises(APIError) as err:
        client.get_order_by_client_id("nope")
    assert err.value.status_code == 404


def test_replace_order(venue):
    client = sdk_client(venue)
    old = client.submit_order(far_limit(qty=2))
    new = client.replace_order_by_id(old.id, ReplaceOrderRequest(qty=3, limit_price=2.0))
    assert isinstance(new, Order) and new.replaces == old.id and new.qty == "3" and new.limit_price == "2"
    assert client.get_order_by_id(old.id).status == OrderStatus.REPLACED


def test_stop_order_parses(venue):
    client = sdk_client(venue)
    client.submit_order(market(qty=2))
    stop = client.submit_order(
        StopOrderRequest(symbol="AAPL", qty=2, side=OrderSide.SELL, time_in_force=TimeInForce.GTC, stop_price=1.00)
    )
    assert stop.type == "stop" and stop.stop_price == "1"
    assert client.get_open_position("AAPL").qty_available == "0"


# ---- brackets -----------------------------------------------------------------------------------


def test_bracket_take_profit_fill_cancels_stop_loss(venue):
    client = sdk_client(venue)
    ask = current_quote(venue, "AAPL").ask
    tp_price, sl_price = round(ask * 1.5, 2), round(ask * 0.5, 2)
    entry = client.submit_order(
        market(
            qty=5,
            order_class=OrderClass.BRACKET,
            take_profit=TakeProfitRequest(limit_price=tp_price),
            stop_loss=StopLossRequest(stop_price=sl_price),
        )
    )
    assert entry.order_class == OrderClass.BRACKET and len(entry.legs) == 2
    filled(client, entry.id)
    nested = client.get_order_by_id(entry.id, GetOrderByIdRequest(nested=True))
    tp, sl = nested.legs
    assert (tp.type, tp.limit_price, sl.type, sl.stop_price) == ("limit", str(tp_price), "stop", str(sl_price))
    assert tp.status == OrderStatus.NEW and sl.status == OrderStatus.NEW
    assert client.get_open_position("AAPL").qty_available == "0"  # both exits hold the same 5 shares

    inject_quote(venue, "AAPL", bid=tp_price + 1, ask=tp_price + 1.05)
    legs = client.get_order_by_id(entry.id).legs
    assert legs[0].status == OrderStatus.FILLED and float(legs[0].filled_avg_price) == pytest.approx(tp_price + 1)
    assert legs[1].status == OrderStatus.CANCELED
    with pytest.raises(APIError) as err:
        client.get_open_position("AAPL")
    assert err.value.status_code == 404


def test_nested_listing_rolls_legs_into_parent(venue):
    client = sdk_client(venue)
    ask = current_quote(venue, "MSFT").ask
    entry = client.submit_order(
        LimitOrderRequest(
            symbol="MSFT",
            qty=1,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.GTC,
            limit_price=round(ask / 2, 2),
            order_class=OrderClass.BRACKET,
            take_profit=TakeProfitRequest(limit_price=round(ask, 2)),
            stop_loss=StopLossRequest(stop_price=round(ask / 4, 2), limit_price=round(ask / 4 - 0.5, 2)),
        )
    )
    flat = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
    assert len(flat) == 3 and all(o.legs is None for o in flat)
    nested = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True))
    assert [o.id for o in nested] == [entry.id]
    assert [leg.status for leg in nested[0].legs] == [OrderStatus.HELD, OrderStatus.HELD]
    assert nested[0].legs[1].type == "stop_limit"


# ---- positions ----------------------------------------------------------------------------------


def test_close_position_by_qty_and_percentage(venue):
    client = sdk_client(venue)
    filled(client, client.submit_order(market(qty=10)).id)
    part = client.close_position("AAPL", ClosePositionRequest(qty="4"))
    assert isinstance(part, Order) and part.side == OrderSide.SELL and part.qty == "4"
    filled(client, part.id)
    assert client.get_open_position("AAPL").qty == "6"
    half = client.close_position("AAPL", ClosePositionRequest(percentage="50"))
    assert half.qty == "3"
    filled(client, half.id)
    rest = client.close_position("AAPL")
    filled(client, rest.id)
    assert client.get_all_positions() == []


def test_close_all_positions_cancels_orders_first(venue):
    client = sdk_client(venue)
    for sym in ("AAPL", "MSFT"):
        filled(client, client.submit_order(market(symbol=sym, qty=2)).id)
    client.submit_order(
        LimitOrderRequest(symbol="AAPL", qty=2, side=OrderSide.SELL, time_in_force=TimeInForce.GTC, limit_price=9999.0)
    )
    results = client.close_all_positions(cancel_orders=True)
    assert all(isinstance(r, ClosePositionResponse) for r in results)
    assert sorted((r.symbol, r.status) for r in results) == [("AAPL", 200), ("MSFT", 200)]
    assert all(isinstance(r.body, Order) for r in results)
    wait_for(lambda: client.get_all_positions() == [], timeout=10, what="flat")


def test_close_missing_position_is_404(venue):
    with pytest.raises(APIError) as err:
        sdk_client(venue).close_position("AAPL")
    assert err.value.status_code == 404 and err.value.code == 40410000


# ---- errors -----------------------------------------------------------------------------------------


def test_error_codes(venue):
    client = sdk_client(venue)
    client.submit_order(far_limit(client_order_id="dup"))
    with pytest.raises(APIError) as err:
        client.submit_order(far_limit(client_order_id="dup"))
    assert (err.value.status_code, err.value.code) == (422, 40010001)
    with pytest.raises(APIError) as err:
        client.submit_order(market(side=OrderSide.SELL))
    assert (err.value.status_code, err.value.code) == (403, 40310000)
    assert err.value.message == "insufficient qty available for order"
    with pytest.raises(APIError) as err:
        client.submit_order(market(qty=1_000_000))
    assert (err.value.status_code, err.value.code, err.value.message) == (403, 40310000, "insufficient buying power")
    with pytest.raises(APIError) as err:
        client.submit_order(market(symbol="ZZZZ"))
    assert (err.value.status_code, err.value.code, err.value.message) == (422, 40010001, "asset not found")
    with pytest.raises(APIError) as err:
        client.submit_order(market(qty=-5))
    assert err.value.status_code == 422


def test_bad_keys_are_401(venue):
    client = sdk_client(venue, key="PKWRONG", secret="wrong")
    with pytest.raises(APIError) as err:
        client.get_account()
    assert (err.value.status_code, err.value.code) == (401, 40110000)


def test_a_fourth_day_trade_under_25k_is_not_refused(tmp_path, venue_keys):
    """No pattern-day-trader rule: the old 40310100 refusal of the 4th is gone."""
    key, secret = venue_keys
    cfg = VenueConfig(
        api_key=key,
        api_secret=secret,
        data_dir=str(tmp_path / "v"),
        symbols=("AAPL",),
        initial_cash=10_000.0,
        rate_limit_per_min=100_000,
    )
    handle = start_venue(cfg)
    try:
        client = sdk_client(handle)
        for _ in range(4):
            filled(client, client.submit_order(market()).id)
            filled(client, client.submit_order(market(side=OrderSide.SELL)).id)
        acct = client.get_account()
        assert acct.daytrade_count is None and acct.pattern_day_trader is None
        assert client.get_all_positions() == []
    finally:
        handle.stop()


# ---- faults -------------------------------------------------------------------------------------------


def test_admin_faults_burst_429_and_reject_next(venue):
    client = sdk_client(venue)
    r = http(
        venue,
        "POST",
        "/admin/faults",
        json={"burst_429": 1, "reject_next": {"status": 403, "code": 40310000, "message": "insufficient buying power"}},
    )
    assert r.status_code == 200 and r.json()["burst_429"] == 1
    with pytest.raises(APIError) as err:
        client.get_account()
    assert err.value.status_code == 429
    with pytest.raises(APIError) as err:
        client.submit_order(market())
    assert (err.value.status_code, err.value.code) == (403, 40310000)
    client.submit_order(market())  # the rejection was for the next order only
    assert http(venue, "GET", "/admin/faults").json()["reject_next"] is None
    assert http(venue, "GET", "/admin/faults", headers={"APCA-API-KEY-ID": "x"}).status_code == 401


def test_rate_limit_headers_and_429(tmp_path, venue_keys):
    key, secret = venue_keys
    handle = start_venue(VenueConfig(api_key=key, api_secret=secret, symbols=("AAPL",), rate_limit_per_min=3))
    try:
        codes = [http(handle, "GET", "/v2/account") for _ in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        assert codes[0].headers["X-RateLimit-Limit"] == "3"
        assert [r.headers["X-RateLimit-Remaining"] for r in codes] == ["2", "1", "0", "0"]
        assert int(codes[3].headers["X-RateLimit-Reset"]) > 0
        assert codes[3].json()["code"] == 42910000
    finally:
        handle.stop()


# ---- trade updates stream ------------------------------------------------------------------------------


async def _stream_session(venue, submit) -> list[dict]:
    async with websockets.connect(venue.trading_stream_url, open_timeout=WS_TIMEOUT_S) as ws:
        await ws.send(
            json.dumps(
                {
                    "action": "authenticate",
                    "data": {"key_id": venue.ctx.config.api_key, "secret_key": venue.ctx.config.api_secret},
                }
            )
        )
        auth = await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)
        assert isinstance(auth, bytes)  # binary frames, as Alpaca's paper stream
        assert json.loads(auth) == {
            "stream": "authorization",
            "data": {"action": "authenticate", "status": "authorized"},
        }
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)) == {
            "stream": "listening",
            "data": {"streams": ["trade_updates"]},
        }
        await asyncio.get_running_loop().run_in_executor(None, submit)
        updates = []
        while not updates or updates[-1]["data"]["event"] != "fill":
            updates.append(json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)))
        return updates


def test_trade_stream_sends_new_then_fill(venue):
    client = sdk_client(venue)
    updates = asyncio.run(_stream_session(venue, lambda: client.submit_order(market(qty=2))))
    assert [u["stream"] for u in updates] == ["trade_updates", "trade_updates"]
    parsed = [TradeUpdate(**u["data"]) for u in updates]
    assert [p.event for p in parsed] == ["new", "fill"]
    fill = parsed[1]
    assert fill.order.status == OrderStatus.FILLED and fill.qty == 2 and fill.position_qty == 2 and fill.price > 0
    assert fill.execution_id is not None


async def _auth_reply(url: str, key: str, secret: str) -> tuple[dict, bool]:
    async with websockets.connect(url, open_timeout=WS_TIMEOUT_S) as ws:
        await ws.send(json.dumps({"action": "authenticate", "data": {"key_id": key, "secret_key": secret}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S))
        try:
            await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)
            closed = False
        except websockets.ConnectionClosed:
            closed = True
        return reply, closed


def test_trade_stream_bad_key_is_unauthorized_and_closed(venue):
    reply, closed = asyncio.run(_auth_reply(venue.trading_stream_url, "PKBAD", "bad"))
    assert reply == {"stream": "authorization", "data": {"action": "authenticate", "status": "unauthorized"}}
    assert closed


def test_alpaca_py_trading_stream_receives_fill(venue):
    stream = TradingStream(
        venue.ctx.config.api_key, venue.ctx.config.api_secret, paper=True, url_override=venue.trading_stream_url
    )
    got: list[TradeUpdate] = []

    async def on_update(update: TradeUpdate) -> None:
        got.append(update)

    stream.subscribe_trade_updates(on_update)
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: venue.call(lambda: any(s.streams for s in venue.ctx.trade_sessions)),
            timeout=10,
            what="stream listening",
        )
        sdk_client(venue).submit_order(market(qty=1))
        wait_for(lambda: any(u.event == "fill" for u in got), timeout=10, what="fill via TradingStream")
        assert isinstance(got[-1], TradeUpdate) and got[-1].order.symbol == "AAPL"
    finally:
        stream.stop()
        thread.join(10)
    assert not thread.is_alive()


async def _dropped(url: str, key: str, secret: str, drop) -> bool:
    async with websockets.connect(url, open_timeout=WS_TIMEOUT_S) as ws:
        await ws.send(json.dumps({"action": "authenticate", "data": {"key_id": key, "secret_key": secret}}))
        await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)
        await asyncio.get_running_loop().run_in_executor(None, drop)
        try:
            await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)
        except websockets.ConnectionClosed:
            return True
        return False


def test_drop_streams_fault_cuts_trade_stream(venue):
    cfg = venue.ctx.config
    assert asyncio.run(
        _dropped(
            venue.trading_stream_url, cfg.api_key, cfg.api_secret, lambda: venue.set_faults(drop_streams="trading")
        )
    )
    assert http(venue, "GET", "/v2/account").status_code == 200


def test_http_error_rate_and_latency_faults(venue):
    client = sdk_client(venue)
    venue.set_faults(http_error_rate=1.0, http_error_status=503)
    with pytest.raises(APIError) as err:
        client.get_account()
    assert err.value.status_code == 503
    venue.set_faults(http_error_rate=0.0, latency_ms=1.0)
    assert client.get_account().status == "ACTIVE"


async def _listen(venue):
    cfg = venue.ctx.config
    ws = await websockets.connect(venue.trading_stream_url, open_timeout=WS_TIMEOUT_S)
    await ws.send(json.dumps({"action": "authenticate", "data": {"key_id": cfg.api_key, "secret_key": cfg.api_secret}}))
    await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)
    await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
    await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)
    return ws


async def _silent_then_loud(venue, client) -> dict:
    ws = await _listen(venue)
    try:
        run = asyncio.get_running_loop().run_in_executor
        await run(None, lambda: venue.set_faults(stream_silent=True))
        await run(None, lambda: client.submit_order(market(client_order_id="during-silence")))
        await run(None, lambda: venue.set_faults(stream_silent=False))
        await run(None, lambda: client.submit_order(market(client_order_id="after-silence")))
        return json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S))
    finally:
        await ws.close()


def test_stream_silent_fault_swallows_trade_updates(venue):
    first = asyncio.run(_silent_then_loud(venue, sdk_client(venue)))
    assert first["data"]["order"]["client_order_id"] == "after-silence"


async def _partial_fills(venue, client) -> list[str]:
    ws = await _listen(venue)
    try:
        run = asyncio.get_running_loop().run_in_executor
        await run(None, lambda: venue.set_faults(partial_fill_prob=1.0))
        await run(None, lambda: client.submit_order(market(qty=10)))
        events = []
        while "fill" not in events:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S))["data"]["event"])
            if events[-1] == "partial_fill":
                await run(None, lambda: venue.set_faults(partial_fill_prob=0.0))
        return events
    finally:
        await ws.close()


def test_partial_fill_fault_on_the_stream(venue):
    events = asyncio.run(_partial_fills(venue, sdk_client(venue)))
    assert events[0] == "new" and events[1] == "partial_fill" and events[-1] == "fill"
