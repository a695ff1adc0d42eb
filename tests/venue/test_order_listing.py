"""Listing and rendering orders: the open-orders index and the rendered-order cache.

GET /v2/orders?status=open reads the exchange's open index instead of its
whole history, and `order_json` reuses a rendering while the order is
unchanged: both must answer exactly what a scan and a fresh rendering do.
"""

from __future__ import annotations

from test_matching import FakeClock, make, quote, req

from stockade.venue.alpaca_json import _order_json, order_json


def _book(ex, clock) -> None:
    """Open, filled, cancelled, replaced and bracket orders on two symbols and both sides."""
    quote(ex, clock, 100.00, 100.10)
    quote(ex, clock, 50.00, 50.05, symbol="MSFT")
    ex.submit(req(qty=10, order_class="bracket", take_profit_limit=120.0, stop_loss_stop=90.0))
    ex.submit(req(qty=5, type="limit", limit_price=95.0))
    cancel = ex.submit(req(qty=5, type="limit", limit_price=94.0))
    ex.cancel(cancel.id)
    replaced = ex.submit(req(qty=3, type="limit", limit_price=93.0))
    ex.replace(replaced.id, qty=None, limit_price=93.5, stop_price=None, time_in_force=None, client_order_id=None)
    ex.submit(req(symbol="MSFT", qty=4, type="limit", limit_price=49.0))
    ex.submit(req(symbol="MSFT", qty=4))  # filled at once
    clock.now += 1_000_000_000
    ex.submit(req(symbol="MSFT", qty=2, side="sell", type="limit", limit_price=60.0))
    quote(ex, clock, 95.00, 95.02)  # fills the 95 limit


def test_open_listing_from_the_index_is_the_scan_of_every_order():
    ex, clock, _ = make()
    _book(ex, clock)
    everything = ex.list_orders(status="all", limit=500)
    assert any(not o.is_open for o in everything) and any(o.is_open for o in everything)
    for kw in (
        {},
        {"direction": "asc"},
        {"nested": True},
        {"symbols": {"MSFT"}},
        {"side": "sell"},
        {"after_ns": everything[-1].submitted_at_ns},
        {"until_ns": everything[0].submitted_at_ns},
        {"limit": 2},
    ):
        limit = kw.pop("limit", 500)
        scan = [o for o in ex.list_orders(status="all", limit=500, **kw) if o.is_open][:limit]
        assert [o.id for o in ex.list_orders(status="open", limit=limit, **kw)] == [o.id for o in scan], kw


def test_a_changed_order_is_rendered_again_and_a_body_is_the_callers_own():
    ex, clock, _ = make(clock=FakeClock())
    quote(ex, clock, 100.00, 100.10)
    order = ex.submit(req(qty=10, type="limit", limit_price=99.0))
    first = order_json(order, ex)
    assert first["status"] == "new" and first["filled_qty"] == "0"
    first["status"] = "scribbled"  # a caller's edit must not reach the next rendering
    assert order_json(order, ex)["status"] == "new"
    quote(ex, clock, 98.90, 98.95)  # the limit fills
    again = order_json(order, ex)
    assert again == _order_json(order)
    assert again["status"] == "filled" and again["filled_qty"] == "10" and again["filled_at"] is not None


def test_a_bracket_renders_its_legs_as_they_are_now():
    ex, clock, _ = make()
    quote(ex, clock, 100.00, 100.10)
    entry = ex.submit(req(qty=10, order_class="bracket", take_profit_limit=120.0, stop_loss_stop=90.0))
    before = order_json(entry, ex)
    assert [leg["status"] for leg in before["legs"]] == [_order_json(leg)["status"] for leg in ex.legs_of(entry)]
    assert order_json(entry, ex, nested=False)["legs"] is None
    quote(ex, clock, 120.50, 120.60)  # the take-profit fills, the stop is cancelled
    after = order_json(entry, ex)
    assert sorted(leg["status"] for leg in after["legs"]) == ["canceled", "filled"]


def test_a_listings_text_is_json_dumps_of_its_orders_as_they_are_now():
    import json

    from stockade.venue.alpaca_json import orders_text

    ex, clock, _ = make()
    _book(ex, clock)
    for nested in (False, True):
        for status in ("open", "closed", "all"):
            orders = ex.list_orders(status=status, limit=500, nested=nested)
            want = json.dumps([order_json(o, ex, nested=nested) for o in orders])
            assert orders_text(orders, ex, nested=nested) == want
    assert orders_text([], ex, nested=False) == "[]"
    resting = ex.list_orders(status="open", limit=500)
    orders_text(resting, ex, nested=False)  # remembered
    quote(ex, clock, 89.00, 89.02)  # the bracket's stop and the resting buy limits fill
    after = json.loads(orders_text(resting, ex, nested=False))
    assert [o["status"] for o in after] == [o.status for o in resting]
    assert "filled" in {o["status"] for o in after}
