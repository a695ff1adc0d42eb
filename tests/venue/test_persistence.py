"""A venue restarted on the same data dir finds the same account, positions and orders."""

from __future__ import annotations

import msgspec
import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from venue_helpers import sdk_client
from waiting import wait_for

from stockade.venue.server import start_venue


def _trade(client):
    buy = client.submit_order(
        MarketOrderRequest(
            symbol="AAPL", qty=7, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, client_order_id="buy-1"
        )
    )
    wait_for(lambda: client.get_order_by_id(buy.id).status == OrderStatus.FILLED, timeout=10, what="fill")
    resting = client.submit_order(
        LimitOrderRequest(
            symbol="MSFT",
            qty=2,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.GTC,
            limit_price=1.0,
            client_order_id="rest-1",
        )
    )
    return buy, resting


def test_restart_keeps_account_positions_orders(venue_config):
    first = start_venue(venue_config)
    try:
        client = sdk_client(first)
        buy, resting = _trade(client)
        before_acct = client.get_account()
        before_pos = client.get_open_position("AAPL")
        before_orders = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
    finally:
        first.stop()
    assert not first.thread.is_alive()

    second = start_venue(venue_config)
    try:
        client = sdk_client(second)
        acct = client.get_account()
        assert (acct.id, acct.account_number, acct.cash) == (
            before_acct.id,
            before_acct.account_number,
            before_acct.cash,
        )
        pos = client.get_open_position("AAPL")
        assert (pos.qty, pos.avg_entry_price, pos.asset_id) == (
            before_pos.qty,
            before_pos.avg_entry_price,
            before_pos.asset_id,
        )
        after_orders = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
        assert [(o.id, o.status, o.filled_qty) for o in after_orders] == [
            (o.id, o.status, o.filled_qty) for o in before_orders
        ]
        assert client.get_order_by_client_id("rest-1").status == OrderStatus.NEW
        # client_order_id stays unique across the restart
        with pytest.raises(APIError) as err:
            client.submit_order(
                LimitOrderRequest(
                    symbol="MSFT",
                    qty=1,
                    side=OrderSide.BUY,
                    time_in_force=TimeInForce.GTC,
                    limit_price=1.0,
                    client_order_id="rest-1",
                )
            )
        assert err.value.code == 40010001
        # the restored resting order is live: it can be cancelled
        client.cancel_order_by_id(resting.id)
        assert client.get_order_by_id(resting.id).status == OrderStatus.CANCELED
        # and selling the restored shares works
        sell = client.submit_order(
            MarketOrderRequest(symbol="AAPL", qty=7, side=OrderSide.SELL, time_in_force=TimeInForce.DAY)
        )
        wait_for(lambda: client.get_order_by_id(sell.id).status == OrderStatus.FILLED, timeout=10, what="sell")
    finally:
        second.stop()

    third = start_venue(venue_config)
    try:
        client = sdk_client(third)
        assert client.get_all_positions() == []
        assert client.get_order_by_id(resting.id).status == OrderStatus.CANCELED
        fills = third.call(lambda: list(third.ctx.exchange.fills))
        assert [f.side for f in fills] == ["buy", "sell"]
    finally:
        third.stop()


def test_no_data_dir_means_nothing_persists(venue_config):
    cfg = msgspec.structs.replace(venue_config, data_dir=None)
    first = start_venue(cfg)
    try:
        _trade(sdk_client(first))
    finally:
        first.stop()
    second = start_venue(cfg)
    try:
        client = sdk_client(second)
        assert client.get_all_positions() == []
        assert client.get_account().cash == "100000"
    finally:
        second.stop()


def test_ledger_store_round_trip(tmp_path):
    from test_matching import FakeClock, make, quote, req

    from stockade.venue.ledger_store import LedgerStore

    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    ex.submit(req(qty=3))
    store = LedgerStore(str(tmp_path))
    assert store.load() is None
    store.save_snapshot(ex.snapshot())
    ex.take_changes()
    ex.submit(req(qty=2, type="limit", limit_price=50.0))
    store.apply(ex.take_changes())
    store.close()

    snap = LedgerStore(str(tmp_path)).load()
    assert snap is not None
    assert snap.account == ex.account
    assert sorted(o.id for o in snap.orders) == sorted(ex.orders)
    assert snap.positions == list(ex.positions.values())
    assert len(snap.fills) == 1 and snap.fills[0] == ex.fills[0]
    assert isinstance(clock, FakeClock)
