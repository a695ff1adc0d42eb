"""Extended-hours orders end to end: the alpaca-py request `build_request` makes,
the real alpaca-py TradingClient against the venue (accepted as a limit, refused
with Alpaca's error otherwise), and the venue's expiry of extended day orders
at the end of the after-hours session on the NYSE clock."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
from alpaca.trading.requests import (
    LimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
)
from venue_helpers import sdk_client

from stockade.broker.orders import build_request, client_order_id
from stockade.codecs.messages import OrderIntent
from stockade.venue.clock import NEW_YORK, MarketClock
from stockade.venue.exchange import Exchange, OrderRequest

S = 1_000_000_000


def intent(**kw) -> OrderIntent:
    base = dict(
        intent_id="ext1",
        symbol="AAPL",
        side="buy",
        qty=3,
        order_type="limit",
        limit_price=50.25,
        take_profit=None,
        stop_loss=None,
        reason="open",
        proposal_id="p1",
        quote_recv_ns=0,
        extended_hours=True,
    )
    base.update(kw)
    return OrderIntent(**base)


# ---- the request ------------------------------------------------------------------


def test_extended_intent_is_a_simple_day_limit_with_the_flag():
    r = build_request(intent(), "stk-ext1", time_in_force="gtc")
    assert isinstance(r, LimitOrderRequest)
    body = r.to_request_fields()
    assert body["extended_hours"] is True
    assert body["type"] == "limit" and body["limit_price"] == 50.25
    assert body["time_in_force"] == "day"  # DAY even with orders.time_in_force = "gtc"
    assert "order_class" not in body and "take_profit" not in body and "stop_loss" not in body


def test_extended_intent_never_carries_bracket_legs():
    r = build_request(intent(take_profit=52.0, stop_loss=49.0), "stk-ext1")
    body = r.to_request_fields()
    assert body["extended_hours"] is True and "order_class" not in body and "stop_loss" not in body


def test_regular_intent_is_unchanged():
    r = build_request(
        intent(extended_hours=False, order_type="market", limit_price=None, take_profit=52.0, stop_loss=49.0), "stk-reg"
    )
    body = r.to_request_fields()
    assert body["type"] == "market" and body["order_class"] == "bracket"
    assert "extended_hours" not in body


# ---- alpaca-py against the venue -----------------------------------------------------------


def test_extended_limit_accepted_by_the_venue(venue):
    client = sdk_client(venue)
    order = client.submit_order(build_request(intent(), client_order_id("ext1")))
    assert order.extended_hours is True
    assert order.type.value == "limit" and float(order.limit_price) == 50.25
    assert order.time_in_force == TimeInForce.DAY
    assert client.get_order_by_client_id(client_order_id("ext1")).extended_hours is True


def test_extended_gtc_limit_accepted_by_the_venue(venue):
    # Alpaca takes DAY or GTC limits with extended_hours (its 2026 error text names both).
    client = sdk_client(venue)
    order = client.submit_order(
        LimitOrderRequest(
            symbol="AAPL",
            qty=1,
            side=OrderSide.BUY,
            limit_price=50.0,
            time_in_force=TimeInForce.GTC,
            extended_hours=True,
        )
    )
    assert order.extended_hours is True and order.time_in_force == TimeInForce.GTC


def test_extended_market_order_refused_with_alpacas_error(venue):
    client = sdk_client(venue)
    # build_request passes a non-limit extended intent through, so the broker's refusal is what the sender sees
    request = build_request(intent(order_type="market", limit_price=None), client_order_id("ext-mkt"))
    with pytest.raises(APIError) as err:
        client.submit_order(request)
    assert err.value.status_code == 422
    assert err.value.message == "extended hours order must be DAY or GTC limit orders"
    assert client.get_orders() == []


def test_extended_stop_and_bracket_refused(venue):
    client = sdk_client(venue)
    with pytest.raises(APIError) as err:
        client.submit_order(
            StopOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.SELL,
                stop_price=40.0,
                time_in_force=TimeInForce.DAY,
                extended_hours=True,
            )
        )
    assert err.value.status_code == 422
    assert err.value.message == "stop orders are not eligible for extended hours trading"
    with pytest.raises(APIError) as err:
        client.submit_order(
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                limit_price=50.0,
                time_in_force=TimeInForce.DAY,
                extended_hours=True,
                order_class=OrderClass.BRACKET,
                take_profit=TakeProfitRequest(limit_price=60.0),
                stop_loss=StopLossRequest(stop_price=40.0),
            )
        )
    assert err.value.status_code == 422
    assert "extended hours are not supported" in err.value.message


# ---- expiry on the NYSE clock -------------------------------------------------------------------


class Clock(MarketClock):
    def __init__(self, now: int) -> None:
        self.now = now
        super().__init__("nyse", lambda: self.now)


def ny_ns(day: date, h: int, m: int = 0, s: int = 0) -> int:
    return int(datetime.combine(day, time(h, m, s), tzinfo=NEW_YORK).timestamp()) * S


def exchange(now: int) -> tuple[Exchange, Clock]:
    clock = Clock(now)
    return Exchange(("AAPL",), clock, initial_cash=100_000.0, seed=1, partial_fill_prob=lambda: 0.0), clock


def limit(extended: bool) -> OrderRequest:
    return OrderRequest(
        symbol="AAPL", qty=1, side="buy", type="limit", time_in_force="day", limit_price=10.0, extended_hours=extended
    )


@pytest.mark.parametrize(
    "day,created,last_alive,expired_at",
    [
        (date(2026, 11, 23), (17, 0), (19, 59, 59), (20, 0, 0)),  # after-hours order: ends with the session
        (date(2026, 11, 27), (14, 0), (16, 59, 59), (17, 0, 0)),  # early close: after-hours end at 17:00
    ],
)
def test_extended_day_order_expires_with_the_after_hours_session(day, created, last_alive, expired_at):
    ex, clock = exchange(ny_ns(day, *created))
    ext = ex.submit(limit(True))
    plain = ex.submit(limit(False))
    assert ext.status == "accepted" and plain.status == "accepted"  # no simulator quotes outside regular hours
    clock.now = ny_ns(day, *last_alive)
    ex.tick(clock.now)
    assert ext.status == "accepted"
    clock.now = ny_ns(day, *expired_at)
    ex.tick(clock.now)
    assert ext.status == "expired"
    assert plain.status == "accepted"  # queued for the next regular session, as at Alpaca


def test_pre_market_extended_order_survives_the_regular_close():
    day = date(2026, 11, 23)
    ex, clock = exchange(ny_ns(day, 8))
    ext = ex.submit(limit(True))
    plain = ex.submit(limit(False))
    for hms in ((9, 30, 0), (15, 59, 59), (16, 0, 0)):
        clock.now = ny_ns(day, *hms)
        ex.tick(clock.now)
    assert ext.status == "new"  # routed at the open; the regular close does not end it
    assert plain.status == "expired"
    clock.now = ny_ns(day, 20)
    ex.tick(clock.now)
    assert ext.status == "expired"
