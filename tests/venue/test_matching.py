"""Unit tests of the venue's Exchange: matching per order type, partial fills, OCO, no PDT rule.

No server, no threads: a hand-driven clock and hand-made quotes.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from stockade.venue.exchange import Exchange, OrderRequest, TradeEvent, VenueError

NS = 1_000_000_000
# Wednesday 2024-03-13 11:00 New York (15:00 UTC)
T0 = int(dt.datetime(2024, 3, 13, 15, 0, tzinfo=dt.UTC).timestamp()) * NS


class FakeClock:
    def __init__(self, now_ns: int = T0, open_: bool = True) -> None:
        self.now = now_ns
        self.open = open_

    def now_ns(self) -> int:
        return self.now

    def is_open(self, ts_ns: int | None = None) -> bool:
        return self.open


class Q(msgspec.Struct, frozen=True):
    symbol: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    ts_ns: int


def make(cash: float = 100_000.0, seed: int = 1, prob: float = 0.0, clock: FakeClock | None = None):
    clock = clock or FakeClock()
    events: list[TradeEvent] = []
    ex = Exchange(
        ("AAPL", "MSFT"), clock, initial_cash=cash, seed=seed, partial_fill_prob=lambda: prob, on_event=events.append
    )
    return ex, clock, events


def quote(ex: Exchange, clock: FakeClock, bid: float, ask: float, size: float = 1000, symbol: str = "AAPL") -> None:
    clock.now += NS
    ex.on_quote(Q(symbol, bid, ask, size, size, clock.now))


def req(**kw) -> OrderRequest:
    base = dict(symbol="AAPL", qty=10, side="buy", type="market", time_in_force="day")
    base.update(kw)
    return OrderRequest(**base)


def names(events: list[TradeEvent]) -> list[str]:
    return [e.event for e in events]


# ---- order types ----------------------------------------------------------------------


def test_market_buy_fills_at_ask_and_updates_account():
    ex, clock, events = make()
    quote(ex, clock, 100.00, 100.10)
    order = ex.submit(req(qty=10))
    assert order.status == "filled"
    assert order.filled_avg_price == pytest.approx(100.10)
    assert names(events) == ["new", "fill"]
    assert events[-1].price == pytest.approx(100.10) and events[-1].position_qty == 10
    assert ex.positions["AAPL"].qty == 10
    assert ex.account.cash == pytest.approx(100_000 - 1001.0)


def test_market_sell_fills_at_bid_and_average_entry_price():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.0)
    ex.submit(req(qty=10))
    quote(ex, clock, 110.0, 110.0)
    ex.submit(req(qty=10))
    assert ex.positions["AAPL"].avg_entry_price == pytest.approx(105.0)
    quote(ex, clock, 120.0, 120.2)
    sell = ex.submit(req(qty=20, side="sell"))
    assert sell.filled_avg_price == pytest.approx(120.0)
    assert "AAPL" not in ex.positions
    assert ex.account.cash == pytest.approx(100_000 - 1000 - 1100 + 2400)


def test_market_order_waits_for_the_open_when_closed():
    ex, clock, events = make()
    quote(ex, clock, 100.0, 100.1)
    clock.open = False
    ex.tick()
    order = ex.submit(req())
    assert order.status == "accepted"
    quote(ex, clock, 100.0, 100.1)
    assert order.status == "accepted" and events == []
    clock.open = True
    quote(ex, clock, 101.0, 101.1)
    assert order.status == "filled" and order.filled_avg_price == pytest.approx(101.1)


def test_limit_buy_rests_until_ask_reaches_limit():
    ex, clock, events = make()
    quote(ex, clock, 100.0, 100.1)
    order = ex.submit(req(type="limit", limit_price=99.5))
    assert order.status == "new"
    quote(ex, clock, 99.6, 99.7)
    assert order.status == "new"
    quote(ex, clock, 99.3, 99.4)
    assert order.status == "filled"
    assert order.filled_avg_price == pytest.approx(99.4)  # price improvement at the touch
    assert names(events) == ["new", "fill"]


def test_limit_sell_fills_when_bid_reaches_limit():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    ex.submit(req())
    order = ex.submit(req(side="sell", type="limit", limit_price=101.0))
    quote(ex, clock, 100.9, 101.0)
    assert order.status == "new"
    quote(ex, clock, 101.2, 101.3)
    assert order.status == "filled" and order.filled_avg_price == pytest.approx(101.2)


def test_stop_sell_triggers_at_stop_and_fills_at_bid():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    ex.submit(req())
    stop = ex.submit(req(side="sell", type="stop", stop_price=95.0))
    quote(ex, clock, 96.0, 96.1)
    assert stop.status == "new"
    quote(ex, clock, 94.5, 94.6)
    assert stop.status == "filled" and stop.filled_avg_price == pytest.approx(94.5)


def test_stop_limit_triggers_then_waits_for_its_limit():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    order = ex.submit(req(type="stop_limit", stop_price=102.0, limit_price=102.5))
    quote(ex, clock, 102.9, 103.0)  # triggered, but ask above the limit
    assert order.status == "new" and order.stop_triggered
    quote(ex, clock, 101.0, 101.1)  # a triggered stop-limit stays a limit order
    assert order.status == "filled" and order.filled_avg_price == pytest.approx(101.1)


# ---- partial fills -----------------------------------------------------------------------


def test_partial_fill_by_quote_size():
    ex, clock, events = make()
    quote(ex, clock, 100.0, 100.1, size=30)
    order = ex.submit(req(qty=100, type="limit", limit_price=100.5))
    assert order.status == "partially_filled" and order.filled_qty == 30
    quote(ex, clock, 100.0, 100.2, size=50)
    assert order.filled_qty == 80
    quote(ex, clock, 100.0, 100.3, size=50)
    assert order.status == "filled" and order.filled_qty == 100
    assert names(events) == ["new", "partial_fill", "partial_fill", "fill"]
    assert order.filled_avg_price == pytest.approx((30 * 100.1 + 50 * 100.2 + 20 * 100.3) / 100)


def test_partial_fill_probability_is_seeded_and_repeatable():
    def run(seed: int) -> list[int]:
        ex, clock, events = make(seed=seed, prob=1.0)
        quote(ex, clock, 100.0, 100.1)
        order = ex.submit(req(qty=100))
        while order.status != "filled":
            quote(ex, clock, 100.0, 100.1)
        return [e.qty for e in events if e.qty]

    first = run(42)
    assert len(first) > 1 and sum(first) == 100
    assert run(42) == first


# ---- brackets / OCO ----------------------------------------------------------------------


def bracket(ex: Exchange, qty: int = 10):
    order = ex.submit(req(qty=qty, order_class="bracket", take_profit_limit=110.0, stop_loss_stop=95.0))
    tp, sl = ex.legs_of(order)
    return order, tp, sl


def test_bracket_legs_held_until_entry_fills_then_take_profit_cancels_stop():
    ex, clock, events = make()
    clock.open = False
    ex.tick()
    quote(ex, clock, 100.0, 100.1)
    entry, tp, sl = bracket(ex)
    assert (entry.status, tp.status, sl.status) == ("accepted", "held", "held")
    assert tp.type == "limit" and tp.side == "sell" and sl.type == "stop"
    clock.open = True
    quote(ex, clock, 100.0, 100.1)
    assert entry.status == "filled" and tp.status == "new" and sl.status == "new"
    assert ex.held_for_orders("AAPL") == 10  # the OCO pair reserves the shares once
    quote(ex, clock, 110.5, 110.6)
    assert tp.status == "filled" and sl.status == "canceled"
    assert "AAPL" not in ex.positions
    assert names(events)[-2:] == ["fill", "canceled"]


def test_bracket_stop_loss_fill_cancels_take_profit():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    entry, tp, sl = bracket(ex)
    quote(ex, clock, 94.0, 94.1)
    assert sl.status == "filled" and sl.filled_avg_price == pytest.approx(94.0)
    assert tp.status == "canceled"


def test_cancel_bracket_entry_cancels_its_legs():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    entry = ex.submit(
        req(type="limit", limit_price=90.0, order_class="bracket", take_profit_limit=110.0, stop_loss_stop=85.0)
    )
    ex.cancel(entry.id)
    assert [o.status for o in [entry, *ex.legs_of(entry)]] == ["canceled", "canceled", "canceled"]


def test_bracket_leg_on_wrong_side_of_base_price_is_refused():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    with pytest.raises(VenueError) as err:
        ex.submit(req(order_class="bracket", take_profit_limit=100.05, stop_loss_stop=95.0))
    assert err.value.status == 422 and "take_profit.limit_price" in err.value.message


# ---- rejections -----------------------------------------------------------------------------


def test_duplicate_client_order_id_is_422():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    ex.submit(req(client_order_id="abc"))
    with pytest.raises(VenueError) as err:
        ex.submit(req(client_order_id="abc"))
    assert (err.value.status, err.value.code) == (422, 40010001)


def test_selling_more_than_held_is_insufficient_qty():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    ex.submit(req(qty=10))
    ex.submit(req(qty=6, side="sell", type="limit", limit_price=200.0))  # holds 6 shares
    with pytest.raises(VenueError) as err:
        ex.submit(req(qty=5, side="sell"))
    e = err.value
    assert (e.status, e.code, e.message) == (403, 40310000, "insufficient qty available for order")
    assert e.extra == {"available": "4", "existing_qty": "10", "held_for_orders": "6", "symbol": "AAPL"}


def test_close_position_beyond_available_reports_held_shares():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    ex.submit(req(qty=10))
    ex.submit(req(qty=6, side="sell", type="limit", limit_price=200.0))  # holds 6 shares
    with pytest.raises(VenueError) as err:
        ex.close_position("AAPL")
    e = err.value
    assert (e.status, e.code, e.message) == (403, 40310000, "insufficient qty available for order")
    assert e.extra == {"available": "4", "existing_qty": "10", "held_for_orders": "6", "symbol": "AAPL"}
    with pytest.raises(VenueError) as err:
        ex.close_position("AAPL", qty=11)
    assert err.value.extra == {"available": "4", "existing_qty": "10", "held_for_orders": "6", "symbol": "AAPL"}
    assert ex.close_position("AAPL", qty=4).qty == 4


def test_no_shorting():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    with pytest.raises(VenueError) as err:
        ex.submit(req(side="sell"))
    assert (err.value.status, err.value.code) == (403, 40310000)


def test_insufficient_buying_power_counts_open_buys():
    ex, clock, _ = make(cash=10_000)
    quote(ex, clock, 100.0, 100.1)
    ex.submit(req(qty=60, type="limit", limit_price=90.0))  # reserves 5 400
    with pytest.raises(VenueError) as err:
        ex.submit(req(qty=50, type="limit", limit_price=99.0))
    assert (err.value.status, err.value.code, err.value.message) == (403, 40310000, "insufficient buying power")
    ex.submit(req(qty=40, type="limit", limit_price=99.0))  # 3 960 still fits


def test_unknown_symbol_and_bad_qty_are_422():
    ex, clock, _ = make()
    with pytest.raises(VenueError) as err:
        ex.submit(req(symbol="ZZZZ"))
    assert (err.value.status, err.value.code, err.value.message) == (422, 40010001, "asset not found")
    with pytest.raises(VenueError) as err:
        ex.submit(req(qty=0))
    assert err.value.status == 422


def test_cancel_filled_is_422_and_unknown_is_404():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    order = ex.submit(req())
    with pytest.raises(VenueError) as err:
        ex.cancel(order.id)
    assert (err.value.status, err.value.code) == (422, 42210000)
    with pytest.raises(VenueError) as err:
        ex.cancel("00000000-0000-4000-8000-000000000000")
    assert (err.value.status, err.value.code) == (404, 40410000)


# ---- time in force ---------------------------------------------------------------------------


def test_day_orders_expire_at_the_close_gtc_orders_stay():
    ex, clock, events = make()
    quote(ex, clock, 100.0, 100.1)
    day = ex.submit(req(type="limit", limit_price=50.0))
    gtc = ex.submit(req(type="limit", limit_price=50.0, time_in_force="gtc"))
    ex.tick()
    clock.open = False
    clock.now += NS
    ex.tick()
    assert day.status == "expired" and day.expired_at_ns == clock.now
    assert gtc.status == "new"
    assert "expired" in names(events)


def test_replace_creates_a_new_order_and_ends_the_old_one():
    ex, clock, events = make()
    quote(ex, clock, 100.0, 100.1)
    old = ex.submit(req(type="limit", limit_price=90.0))
    new = ex.replace(old.id, limit_price=101.0)
    assert old.status == "replaced" and old.replaced_by == new.id and new.replaces == old.id
    ex.route_pending()
    assert new.status == "filled"
    assert "replaced" in names(events)


# ---- no pattern day trading (FINRA retired the rule; Alpaca dropped it on 2026-07-06) ----------------


def day_trade(ex: Exchange, clock: FakeClock) -> None:
    quote(ex, clock, 100.0, 100.0)
    ex.submit(req(qty=1))
    ex.submit(req(qty=1, side="sell"))


def test_day_trades_are_never_refused_or_counted_even_under_25k():
    ex, clock, _ = make(cash=10_000)
    for _ in range(6):  # the old rule refused the 4th
        day_trade(ex, clock)
    assert "AAPL" not in ex.positions
    view = ex.account_view()
    assert view.equity == pytest.approx(10_000.0)
    fields = set(msgspec.structs.asdict(view.state)) | set(msgspec.structs.asdict(view))
    assert not fields & {"pattern_day_trader", "day_trades", "daytrade_count"}, fields


def test_an_intraday_refusal_is_buying_power_only():
    """Under intraday margin an order that does not fit is refused for buying power
    (403 40310000), however many day trades came before it."""
    ex, clock, _ = make(cash=1_000)
    for _ in range(4):
        day_trade(ex, clock)
    with pytest.raises(VenueError) as err:
        ex.submit(req(qty=20))
    assert (err.value.status, err.value.code, err.value.message) == (403, 40310000, "insufficient buying power")


def test_snapshot_restore_round_trip():
    ex, clock, _ = make()
    quote(ex, clock, 100.0, 100.1)
    ex.submit(req(qty=10))
    resting = ex.submit(req(type="limit", limit_price=50.0, client_order_id="rest"))
    snap = msgspec.msgpack.decode(msgspec.msgpack.encode(ex.snapshot()), type=type(ex.snapshot()))
    ex2, _, _ = make(clock=clock)
    ex2.restore(snap)
    assert ex2.positions["AAPL"].qty == 10
    assert ex2.get_order_by_client_id("rest").id == resting.id
    assert ex2.account.cash == pytest.approx(ex.account.cash)


def test_day_order_left_over_from_a_closed_session_expires_on_restart():
    from stockade.venue.clock import MarketClock

    now = {"ns": T0}
    clock = MarketClock("nyse", now_fn=lambda: now["ns"])
    ex, _, _ = make(clock=clock)
    ex.on_quote(Q("AAPL", 100.0, 100.1, 100, 100, now["ns"]))
    day = ex.submit(req(type="limit", limit_price=50.0))
    gtc = ex.submit(req(type="limit", limit_price=50.0, time_in_force="gtc"))
    snap = ex.snapshot()
    now["ns"] += 24 * 3600 * NS  # the venue was down over Wednesday's close
    ex2, _, _ = make(clock=clock)
    ex2.restore(snap)
    ex2.tick()
    assert ex2.orders[day.id].status == "expired" and ex2.orders[gtc.id].status == "new"


def test_day_order_queued_after_the_close_lives_through_the_next_session():
    from stockade.venue.clock import MarketClock

    evening = T0 + 8 * 3600 * NS  # Wednesday 19:00 New York: closed
    now = {"ns": evening}
    clock = MarketClock("nyse", now_fn=lambda: now["ns"])
    ex, _, _ = make(clock=clock)
    ex.on_quote(Q("AAPL", 100.0, 100.1, 100, 100, now["ns"]))
    order = ex.submit(req())
    assert order.status == "accepted"
    now["ns"] = T0 + 24 * 3600 * NS  # Thursday 11:00: open
    ex.on_quote(Q("AAPL", 101.0, 101.1, 100, 100, now["ns"]))
    assert order.status == "filled" and order.filled_avg_price == pytest.approx(101.1)
