"""Order kinds Alpaca accepts beyond the plain ones, through the real alpaca-py TradingClient.

Trailing stops (trail_price, trail_percent, the high-water mark, PATCH trail),
OTO and OCO classes, notional orders and fractional quantities, each with the
rules Alpaca's "Understand Orders" and "Fractional Trading" pages give.
"""

from __future__ import annotations

import math

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, OrderType, TimeInForce
from alpaca.trading.requests import (
    GetOrderByIdRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)
from venue_helpers import current_quote, http, inject_quote, sdk_client
from waiting import wait_for

from stockade.venue.server import start_venue


def market(symbol="AAPL", qty=None, side=OrderSide.BUY, **kw) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY, **kw)


def order_status(client, order_id, status):
    return wait_for(
        lambda: (o := client.get_order_by_id(order_id)).status == status and o, timeout=10, what=f"order {status}"
    )


def hold(client, venue, qty=10, symbol="AAPL"):
    """Buy `qty` shares at the market and wait for the fill."""
    order = client.submit_order(market(symbol, qty=qty))
    return order_status(client, order.id, OrderStatus.FILLED)


def api_error(fn) -> APIError:
    with pytest.raises(APIError) as err:
        fn()
    return err.value


# ---- trailing stops --------------------------------------------------------------------------


def test_trailing_stop_follows_the_high_water_mark_and_triggers(venue):
    client = sdk_client(venue)
    hold(client, venue, qty=5)
    trail = client.submit_order(
        TrailingStopOrderRequest(
            symbol="AAPL", qty=5, side=OrderSide.SELL, time_in_force=TimeInForce.GTC, trail_price=5.0
        )
    )
    assert trail.type == OrderType.TRAILING_STOP and trail.trail_price == "5" and trail.trail_percent is None
    hwm = float(trail.hwm)
    assert float(trail.stop_price) == pytest.approx(hwm - 5.0, abs=0.005)
    assert client.get_open_position("AAPL").qty_available == "0"  # the stop holds the shares

    peak = round(hwm + 40.0, 2)
    inject_quote(venue, "AAPL", bid=peak, ask=peak + 0.05)  # the market runs up: the stop follows
    # The simulator's next quote (back near the old price) is far under the new stop: it triggers.
    done = order_status(client, trail.id, OrderStatus.FILLED)
    assert float(done.hwm) == peak and float(done.stop_price) == pytest.approx(peak - 5.0, abs=0.005)
    assert float(done.filled_avg_price) <= peak - 5.0
    with pytest.raises(APIError):
        client.get_open_position("AAPL")


def test_trailing_stop_percent_and_replace_trail(venue):
    client = sdk_client(venue)
    hold(client, venue, qty=3)
    trail = client.submit_order(
        TrailingStopOrderRequest(
            symbol="AAPL", qty=3, side=OrderSide.SELL, time_in_force=TimeInForce.DAY, trail_percent=40.0
        )
    )
    hwm = float(trail.hwm)
    assert trail.trail_percent == "40" and float(trail.stop_price) == pytest.approx(hwm * 0.6, abs=0.006)
    new = client.replace_order_by_id(trail.id, ReplaceOrderRequest(trail=45.0))
    assert new.replaces == trail.id and new.trail_percent == "45" and new.trail_price is None
    assert float(new.stop_price) == pytest.approx(float(new.hwm) * 0.55, abs=0.006)
    assert client.get_order_by_id(trail.id).status == OrderStatus.REPLACED
    limit = client.submit_order(
        LimitOrderRequest(symbol="MSFT", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1.0)
    )
    err = api_error(lambda: client.replace_order_by_id(limit.id, ReplaceOrderRequest(trail=2.0)))
    assert err.status_code == 422


@pytest.mark.parametrize(
    "extra, message",
    [
        ({}, "exactly one of trail_price or trail_percent"),
        ({"trail_price": "1", "trail_percent": "1"}, "exactly one of trail_price or trail_percent"),
        (
            {
                "trail_price": "1",
                "order_class": "bracket",
                "take_profit": {"limit_price": "900"},
                "stop_loss": {"stop_price": "1"},
            },
            "single orders",
        ),
        ({"trail_price": "1", "stop_price": "100"}, "must not be given"),
        ({"trail_price": "-1"}, "trail_price must be > 0"),
    ],
)
def test_trailing_stop_rules(venue, extra, message):
    hold(sdk_client(venue), venue, qty=1)
    body = {"symbol": "AAPL", "qty": "1", "side": "sell", "type": "trailing_stop", "time_in_force": "day", **extra}
    r = http(venue, "POST", "/v2/orders", json=body)
    assert r.status_code == 422 and message in r.json()["message"], r.text


def test_trailing_stop_is_not_for_extended_hours(venue):
    hold(sdk_client(venue), venue, qty=1)
    r = http(
        venue,
        "POST",
        "/v2/orders",
        json={
            "symbol": "AAPL",
            "qty": "1",
            "side": "sell",
            "type": "trailing_stop",
            "time_in_force": "day",
            "trail_price": "1",
            "extended_hours": True,
        },
    )
    assert r.status_code == 422 and r.json()["code"] == 42210000


# ---- OTO and OCO --------------------------------------------------------------------------------


def test_oto_entry_with_only_a_stop_loss(venue):
    client = sdk_client(venue)
    ask = current_quote(venue, "AAPL").ask
    entry = client.submit_order(
        market(qty=4, order_class=OrderClass.OTO, stop_loss=StopLossRequest(stop_price=round(ask * 0.5, 2)))
    )
    assert entry.order_class == OrderClass.OTO and len(entry.legs) == 1
    order_status(client, entry.id, OrderStatus.FILLED)
    (leg,) = client.get_order_by_id(entry.id, GetOrderByIdRequest(nested=True)).legs
    assert (leg.type, leg.side, leg.status, leg.qty) == (OrderType.STOP, OrderSide.SELL, OrderStatus.NEW, "4")
    assert client.get_open_position("AAPL").qty_available == "0"
    err = api_error(lambda: client.replace_order_by_id(entry.id, ReplaceOrderRequest(qty=5)))
    assert err.status_code == 422


def test_oto_needs_exactly_one_leg(venue):
    r = http(
        venue,
        "POST",
        "/v2/orders",
        json={
            "symbol": "AAPL",
            "qty": "1",
            "side": "buy",
            "type": "market",
            "time_in_force": "day",
            "order_class": "oto",
        },
    )
    assert r.status_code == 422 and "oto orders require" in r.json()["message"]


def oco(client, venue, qty, tp, sl):
    return client.submit_order(
        LimitOrderRequest(
            symbol="AAPL",
            qty=qty,
            side=OrderSide.SELL,
            time_in_force=TimeInForce.GTC,
            order_class=OrderClass.OCO,
            take_profit=TakeProfitRequest(limit_price=tp),
            stop_loss=StopLossRequest(stop_price=sl),
        )
    )


def test_oco_take_profit_fill_cancels_the_stop_loss(venue):
    client = sdk_client(venue)
    hold(client, venue, qty=6)
    bid = current_quote(venue, "AAPL").bid
    tp, sl = round(bid * 1.5, 2), round(bid * 0.5, 2)
    parent = oco(client, venue, 6, tp, sl)
    assert parent.order_class == OrderClass.OCO and parent.type == OrderType.LIMIT
    assert parent.limit_price == str(tp) and len(parent.legs) == 1
    stop = parent.legs[0]
    assert (stop.type, stop.stop_price, stop.side) == (OrderType.STOP, str(sl), OrderSide.SELL)
    wait_for(lambda: client.get_order_by_id(stop.id).status == OrderStatus.NEW, 10, what="stop-loss live")
    assert client.get_open_position("AAPL").qty_available == "0"  # the pair holds the 6 shares once

    inject_quote(venue, "AAPL", bid=tp + 1, ask=tp + 1.05)
    assert order_status(client, parent.id, OrderStatus.FILLED).filled_qty == "6"
    assert client.get_order_by_id(stop.id).status == OrderStatus.CANCELED


def test_oco_stop_loss_fill_cancels_the_take_profit(venue):
    client = sdk_client(venue)
    hold(client, venue, qty=2)
    bid = current_quote(venue, "AAPL").bid
    parent = oco(client, venue, 2, round(bid * 1.5, 2), round(bid * 0.7, 2))
    stop_id = parent.legs[0].id
    inject_quote(venue, "AAPL", bid=round(bid * 0.6, 2), ask=round(bid * 0.6, 2) + 0.05)
    order_status(client, stop_id, OrderStatus.FILLED)
    assert client.get_order_by_id(parent.id).status == OrderStatus.CANCELED


def test_oco_take_profit_qty_replace_carries_the_stop_loss(venue):
    """The two exits of an OCO cover the same shares: a new take-profit qty is the stop-loss's too."""
    client = sdk_client(venue)
    hold(client, venue, qty=6)
    bid = current_quote(venue, "AAPL").bid
    parent = oco(client, venue, 6, round(bid * 1.5, 2), round(bid * 0.5, 2))
    stop = parent.legs[0]
    order_status(client, parent.id, OrderStatus.NEW)
    replaced = client.replace_order_by_id(parent.id, ReplaceOrderRequest(qty=4))
    assert replaced.qty == "4"
    leg = client.get_order_by_id(stop.id)
    assert leg.qty == "4" and leg.status == OrderStatus.NEW
    nested = client.get_order_by_id(replaced.id, GetOrderByIdRequest(nested=True))
    assert [(o.id, o.qty) for o in nested.legs] == [(stop.id, "4")]
    # The stop-loss, triggered, sells the 4 the pair now covers, not the 6 it once did.
    inject_quote(venue, "AAPL", bid=round(bid * 0.4, 2), ask=round(bid * 0.4, 2) + 0.05)
    assert order_status(client, stop.id, OrderStatus.FILLED).filled_qty == "4"
    assert client.get_open_position("AAPL").qty == "2"


def test_bracket_take_profit_qty_replace_carries_the_stop_loss(venue):
    client = sdk_client(venue)
    bid = current_quote(venue, "AAPL").bid
    entry = client.submit_order(
        market(
            qty=5,
            order_class=OrderClass.BRACKET,
            take_profit=TakeProfitRequest(limit_price=round(bid * 1.5, 2)),
            stop_loss=StopLossRequest(stop_price=round(bid * 0.5, 2)),
        )
    )
    order_status(client, entry.id, OrderStatus.FILLED)
    take_profit, stop_loss = sorted(entry.legs, key=lambda o: o.type != OrderType.LIMIT)
    order_status(client, take_profit.id, OrderStatus.NEW)
    client.replace_order_by_id(take_profit.id, ReplaceOrderRequest(qty=3))
    leg = client.get_order_by_id(stop_loss.id)
    assert leg.qty == "3" and leg.status in (OrderStatus.NEW, OrderStatus.HELD)
    assert client.get_open_position("AAPL").qty_available == "2"


def test_oco_cancel_one_cancels_both_and_rules(venue):
    client = sdk_client(venue)
    hold(client, venue, qty=2)
    bid = current_quote(venue, "AAPL").bid
    parent = oco(client, venue, 2, round(bid * 1.5, 2), round(bid * 0.5, 2))
    client.cancel_order_by_id(parent.legs[0].id)
    assert client.get_order_by_id(parent.id).status == OrderStatus.CANCELED
    # Alpaca's threshold: the stop-loss at least $0.01 under the take-profit's limit.
    err = api_error(lambda: oco(client, venue, 2, round(bid * 1.5, 2), round(bid * 1.6, 2)))
    assert err.status_code == 422 and err.code == 42210000 and "stop_loss.stop_price must be <=" in str(err)
    r = http(
        venue,
        "POST",
        "/v2/orders",
        json={
            "symbol": "AAPL",
            "qty": "2",
            "side": "sell",
            "type": "market",
            "time_in_force": "gtc",
            "order_class": "oco",
            "take_profit": {"limit_price": str(round(bid * 1.5, 2))},
            "stop_loss": {"stop_price": str(round(bid * 0.5, 2))},
        },
    )
    assert r.status_code == 422 and "oco orders must be limit orders" in r.json()["message"]
    err = api_error(lambda: oco(client, venue, 3, round(bid * 1.5, 2), round(bid * 0.5, 2)))
    assert err.status_code == 403 and err.code == 40310000  # more than held


# ---- notional and fractional ----------------------------------------------------------------------


def test_notional_buy_fills_fractional_shares(venue):
    client = sdk_client(venue)
    submitted = client.submit_order(market(notional=1000))
    assert submitted.notional == "1000" and submitted.qty is None
    done = order_status(client, submitted.id, OrderStatus.FILLED)
    price = float(done.filled_avg_price)
    shares = math.floor(1000 / price * 1e9) / 1e9
    assert float(done.filled_qty) == pytest.approx(shares, abs=1e-9) and shares != int(shares)
    assert float(done.filled_qty) * price <= 1000 + 1e-6
    pos = client.get_open_position("AAPL")
    assert pos.qty == done.filled_qty


def test_fractional_qty_round_trip(venue):
    client = sdk_client(venue)
    bought = order_status(client, client.submit_order(market(qty=2.5)).id, OrderStatus.FILLED)
    assert bought.filled_qty == "2.5"
    sold = client.submit_order(market(qty=0.75, side=OrderSide.SELL))
    order_status(client, sold.id, OrderStatus.FILLED)
    assert client.get_open_position("AAPL").qty == "1.75"
    closed = client.close_position("AAPL")
    order_status(client, closed.id, OrderStatus.FILLED)


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"qty": "1.5", "time_in_force": "gtc"}, 422, "fractional orders must be DAY orders"),
        (
            {"qty": "1.5", "type": "trailing_stop", "trail_price": "1", "side": "sell"},
            422,
            "fractional orders must be market, limit, stop or stop_limit orders",
        ),
        ({"notional": "0.5"}, 422, "notional must be >= 1"),
        ({"notional": "100", "qty": "1"}, 400, "qty and notional"),
        (
            {
                "notional": "100",
                "order_class": "bracket",
                "take_profit": {"limit_price": "900"},
                "stop_loss": {"stop_price": "1"},
            },
            422,
            "fractional orders are supported only for simple orders",
        ),
    ],
)
def test_fractional_rules(venue, body, status, message):
    full = {"symbol": "AAPL", "qty": None, "side": "buy", "type": "market", "time_in_force": "day", **body}
    r = http(venue, "POST", "/v2/orders", json={k: v for k, v in full.items() if v is not None})
    assert r.status_code == status and message in r.json()["message"], r.text


def test_fractional_limit_stop_and_stop_limit_are_accepted(venue):
    # Alpaca takes fractional qty and notional on limit orders and, since its
    # "Fractional USD Stop & Stop Limit Orders" change, on stops too (DAY only);
    # the venue refused every kind but market.
    client = sdk_client(venue)
    ask = current_quote(venue, "AAPL").ask
    limit = client.submit_order(
        LimitOrderRequest(
            symbol="AAPL", qty=1.5, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=round(ask * 1.05, 2)
        )
    )
    assert order_status(client, limit.id, OrderStatus.FILLED).filled_qty == "1.5"
    by_dollars = client.submit_order(
        LimitOrderRequest(
            symbol="AAPL",
            notional=100,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            limit_price=round(ask * 1.05, 2),
        )
    )
    assert by_dollars.notional == "100" and by_dollars.qty is None
    filled = order_status(client, by_dollars.id, OrderStatus.FILLED)
    assert 0 < float(filled.filled_qty) * float(filled.filled_avg_price) <= 100 + 1e-6
    bid = current_quote(venue, "AAPL").bid
    for body in (
        {"type": "stop", "stop_price": f"{bid * 0.5:.2f}"},
        {"type": "stop_limit", "stop_price": f"{bid * 0.5:.2f}", "limit_price": f"{bid * 0.4:.2f}"},
    ):
        r = http(
            venue,
            "POST",
            "/v2/orders",
            json={"symbol": "AAPL", "qty": "0.25", "side": "sell", "time_in_force": "day", **body},
        )
        assert r.status_code == 200 and r.json()["qty"] == "0.25" and r.json()["type"] == body["type"], r.text


def test_a_filled_notional_order_keeps_qty_null(venue):
    """Alpaca: "notional ... If entered, qty will be null"; the shares it bought are filled_qty."""
    client = sdk_client(venue)
    done = order_status(client, client.submit_order(market(notional=100)).id, OrderStatus.FILLED)
    assert done.qty is None and done.notional == "100" and 0 < float(done.filled_qty) < 1
    listed = http(venue, "GET", "/v2/orders", params={"status": "closed"}).json()
    assert [(o["qty"], o["notional"]) for o in listed] == [(None, "100")]


def test_a_notional_order_cannot_be_replaced(venue):
    """Alpaca: "Notional orders cannot be replaced at all"."""
    client = sdk_client(venue)
    bid = current_quote(venue, "AAPL").bid
    limit = round(bid * 0.5, 2)  # under the market: rests
    resting = client.submit_order(
        LimitOrderRequest(
            symbol="AAPL", notional=50, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=limit
        )
    )
    order_status(client, resting.id, OrderStatus.NEW)
    err = api_error(lambda: client.replace_order_by_id(resting.id, ReplaceOrderRequest(limit_price=limit - 1)))
    assert err.status_code == 422 and "notional orders cannot be replaced" in str(err)
    assert client.get_order_by_id(resting.id).status == OrderStatus.NEW


def test_a_resting_notional_sell_reserves_its_shares(venue):
    # A notional order has no share count until it fills, and held_for_orders
    # counted it as 0: the shares it would sell could be sold again by a
    # second order, which Alpaca refuses as "insufficient qty available".
    client = sdk_client(venue)
    hold(client, venue, qty=3)
    bid = current_quote(venue, "AAPL").bid
    limit = round(bid * 1.2, 2)  # above the bid: it rests
    resting = client.submit_order(
        LimitOrderRequest(
            symbol="AAPL",
            notional=round(limit * 2, 2),
            side=OrderSide.SELL,
            time_in_force=TimeInForce.DAY,
            limit_price=limit,
        )
    )
    assert resting.status in (OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PENDING_NEW)
    assert client.get_open_position("AAPL").qty_available == "1"
    err = api_error(lambda: client.submit_order(market(qty=3, side=OrderSide.SELL)))
    assert err.status_code == 403 and err.code == 40310000 and "insufficient qty" in str(err)
    client.submit_order(market(qty=1, side=OrderSide.SELL))  # what is left is still for sale


def test_non_fractionable_asset(venue_config):
    import msgspec

    handle = start_venue(msgspec.structs.replace(venue_config, non_fractionable=("SPY",)))
    try:
        client = sdk_client(handle)
        assert client.get_asset("SPY").fractionable is False and client.get_asset("AAPL").fractionable is True
        err = api_error(lambda: client.submit_order(market("SPY", notional=50)))
        assert err.status_code == 422 and "requested asset is not fractionable" in str(err)
        client.submit_order(market("SPY", qty=1))  # whole shares are fine
    finally:
        handle.stop()


def test_notional_sell_takes_dollars_out_of_a_fractional_position(venue):
    client = sdk_client(venue)
    hold(client, venue, qty=3)
    bid = current_quote(venue, "AAPL").bid
    sold = order_status(
        client, client.submit_order(market(notional=round(bid, 2), side=OrderSide.SELL)).id, OrderStatus.FILLED
    )
    assert sold.notional == str(round(bid, 2)) and 0.9 < float(sold.filled_qty) < 1.1
    assert float(client.get_open_position("AAPL").qty) == pytest.approx(3 - float(sold.filled_qty), abs=1e-9)
    err = api_error(lambda: client.submit_order(market(notional=round(bid * 5, 2), side=OrderSide.SELL)))
    assert err.status_code == 403 and err.code == 40310000  # more dollars than the shares held are worth
