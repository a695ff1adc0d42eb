"""Every open order past Alpaca's 500-a-call limit, through alpaca-py against the loopback venue."""

from __future__ import annotations

from datetime import timedelta

import pytest

venue_server = pytest.importorskip("stockade.venue.server")
from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce  # noqa: E402
from alpaca.trading.requests import LimitOrderRequest, StopLossRequest, TakeProfitRequest  # noqa: E402

from stockade.broker import liquidation  # noqa: E402
from stockade.broker.order_pages import OrderPagingError, list_all_orders  # noqa: E402
from stockade.broker.rest import make_trading_client  # noqa: E402
from stockade.venue.config import VenueConfig  # noqa: E402

KEY, SECRET = "PKORDERPAGES01", "order-pages-test-secret"
BRACKETS = 180  # three open orders each (entry + two held legs, all submitted at one instant)
SIMPLE = 70


@pytest.fixture(scope="module")
def crowded():
    """A venue holding 610 open orders, and the ids of all of them."""
    import tempfile

    with tempfile.TemporaryDirectory() as data:
        handle = venue_server.start_venue(
            VenueConfig(
                api_key=KEY,
                api_secret=SECRET,
                data_dir=data,
                symbols=("AAPL", "MSFT"),
                rate_limit_per_min=100_000,  # the budget is not under test here
            )
        )
        try:
            client = make_trading_client(KEY, SECRET, url=handle.base_url, retry_attempts=0)
            ids: set[str] = set()
            for i in range(BRACKETS):
                order = client.submit_order(
                    LimitOrderRequest(
                        symbol="AAPL" if i % 2 else "MSFT",
                        qty=1,
                        side=OrderSide.BUY,
                        time_in_force=TimeInForce.GTC,
                        limit_price=1.00,  # far under the market: rests
                        order_class=OrderClass.BRACKET,
                        take_profit=TakeProfitRequest(limit_price=5.00),
                        stop_loss=StopLossRequest(stop_price=0.50),
                    )
                )
                assert len(order.legs or []) == 2
                ids |= {str(order.id), *(str(leg.id) for leg in order.legs or [])}
            for _ in range(SIMPLE):
                order = client.submit_order(
                    LimitOrderRequest(
                        symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1.00
                    )
                )
                ids.add(str(order.id))
            assert len(ids) == 3 * BRACKETS + SIMPLE > 500
            yield client, ids
        finally:
            handle.stop(10)


def test_liquidation_sees_every_open_order_past_500(crowded):
    client, ids = crowded
    orders = liquidation.open_orders(client)
    assert len(orders) == len(ids)
    assert {str(o.id) for o in orders} == ids


@pytest.mark.parametrize("page", [500, 7, 4])
def test_pages_keep_each_order_once_across_boundaries(crowded, page):
    """Small pages end inside a bracket (three orders, one instant): none is lost or repeated."""
    client, ids = crowded
    orders = list_all_orders(client, "open", page_limit=page, max_pages=1000)
    assert sorted(str(o.id) for o in orders) == sorted(ids)
    times = [o.submitted_at for o in orders]
    assert times == sorted(times, reverse=True)


def test_a_page_no_larger_than_one_instant_refuses_instead_of_skipping(crowded):
    client, _ = crowded
    with pytest.raises(OrderPagingError, match="cannot page past"):
        list_all_orders(client, "open", page_limit=3)


def test_closed_and_after_filters_page_too(crowded):
    client, ids = crowded
    newest = list_all_orders(client, "open")[0].submitted_at
    # The venue's times carry nanoseconds, alpaca-py's microseconds: one past is after it.
    assert list_all_orders(client, "open", after=newest + timedelta(microseconds=1)) == []
    assert list_all_orders(client, "closed") == []
    assert {str(o.id) for o in list_all_orders(client, "all", page_limit=50)} == ids
