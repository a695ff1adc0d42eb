"""Pure pieces the actors lean on: token bucket, conflation, ledger maths,
order translation, liquidation against a scripted broker."""

from __future__ import annotations

import types

import pytest

from stockade.broker.conflation import ConflatingBuffer
from stockade.broker.orders import build_request, client_order_id, is_ours
from stockade.broker.token_bucket import TokenBucket
from stockade.codecs.messages import OrderIntent, Quote, Trade
from stockade.codecs.records import OrderRecord, PositionRecord
from stockade.trading.ledger import apply_fill, fill_increment


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_keeps_a_reserve_for_emergencies():
    clock = FakeClock()
    bucket = TokenBucket(60, reserve=2, capacity=5, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]  # 5 - 3 = reserve of 2
    assert bucket.take(emergency=True) and bucket.take(emergency=True)
    assert not bucket.take(emergency=True)
    clock.t = 3.0  # 60/min = 1/s
    assert bucket.take(emergency=True)
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(10, reserve=10)


def _quote(symbol: str, bid: float) -> Quote:
    return Quote(symbol, bid, bid + 0.01, 100, 100, 1, 1)


def test_conflation_holds_only_the_newest_quote_per_symbol():
    buf = ConflatingBuffer()
    assert buf.offer(_quote("AAPL", 1.0)) is True
    for i in range(1000):
        assert buf.offer(_quote("AAPL", 2.0 + i)) is False
    assert buf.offer(_quote("MSFT", 5.0)) is True
    assert buf.pending() == 2 and buf.conflated == 1000
    taken = buf.take(lambda s: s == "AAPL")
    assert [q.bid for q in taken] == [1001.0]
    assert buf.pending() == 1
    assert [q.symbol for q in buf.take(lambda s: True)] == ["MSFT"]


def test_conflation_merges_trades_so_volume_adds_up_and_trade_precedes_quote():
    buf = ConflatingBuffer()
    assert buf.offer_trade(Trade("AAPL", 10.0, 100, 1, 1)) is True
    assert buf.offer_trade(Trade("AAPL", 11.0, 50, 2, 2)) is False
    buf.offer(_quote("AAPL", 12.0))
    assert buf.take(lambda s: False) == []  # no room: everything stays, nothing lost
    taken = buf.take(lambda s: True)
    assert [type(x).__name__ for x in taken] == ["Trade", "Quote"]
    trade = taken[0]
    assert (trade.price, trade.size, trade.ts_ns) == (11.0, 150, 2) and buf.trades_merged == 1
    assert buf.take(lambda s: True) == []


def test_apply_fill_averages_adds_keeps_average_on_reductions_and_resets_on_flat():
    p = apply_fill(None, "AAPL", "buy", 10, 100.0, 1)
    p = apply_fill(p, "AAPL", "buy", 10, 110.0, 2)
    assert (p.qty, p.avg_entry_price) == (20, 105.0)
    p = apply_fill(p, "AAPL", "sell", 5, 120.0, 3)
    assert (p.qty, p.avg_entry_price) == (15, 105.0)
    p = apply_fill(p, "AAPL", "sell", 15, 90.0, 4)
    assert (p.qty, p.avg_entry_price) == (0, 0.0)
    flipped = apply_fill(PositionRecord(symbol="X", qty=5, avg_entry_price=10.0, updated_ns=0), "X", "sell", 8, 12.0, 5)
    assert (flipped.qty, flipped.avg_entry_price) == (-3, 12.0)


def _record(**kw) -> OrderRecord:
    base = dict(
        client_order_id="stk-1",
        intent_id="1",
        symbol="AAPL",
        side="buy",
        qty=10,
        order_type="market",
        created_ns=0,
        updated_ns=0,
    )
    base.update(kw)
    return OrderRecord(**base)


def test_fill_increment_from_cumulative_updates_never_counts_twice():
    rec = _record()
    assert fill_increment(rec, 4, 100.0, None) == (4, 100.0)
    rec = _record(filled_qty=4, filled_avg_price=100.0)
    qty, price = fill_increment(rec, 10, 101.2, None)
    assert qty == 6 and price == pytest.approx(102.0)
    assert fill_increment(rec, 10, 101.2, 103.0) == (6, 103.0)  # the stream's own fill price wins
    assert fill_increment(rec, 4, 100.0, None) is None  # a replay
    assert fill_increment(rec, 3, 100.0, None) is None  # stale news


def _intent(**kw) -> OrderIntent:
    base = dict(
        intent_id="abc",
        symbol="AAPL",
        side="buy",
        qty=7,
        order_type="market",
        limit_price=None,
        take_profit=201.234,
        stop_loss=189.987,
        reason="t",
        proposal_id="p",
        quote_recv_ns=0,
    )
    base.update(kw)
    return OrderIntent(**base)


def test_build_request_is_a_bracket_with_prices_on_the_tick_and_a_deterministic_id():
    coid = client_order_id("abc")
    assert coid == client_order_id("abc") and is_ours(coid) and not is_ours("1f2e-uuid")
    req = build_request(_intent(), coid)
    body = req.to_request_fields()
    assert body["client_order_id"] == coid
    assert body["order_class"] == "bracket"
    assert body["take_profit"] == {"limit_price": 201.23}
    assert body["stop_loss"] == {"stop_price": 189.99}
    stop = build_request(
        _intent(side="sell", order_type="stop", stop_price=180.0, take_profit=None, stop_loss=None, reduce_only=True),
        coid,
    ).to_request_fields()
    assert stop["type"] == "stop" and stop["stop_price"] == 180.0 and "order_class" not in stop


class ScriptedBroker:
    """The broker as liquidation sees it: positions close on the second attempt."""

    def __init__(self) -> None:
        self.positions = [types.SimpleNamespace(symbol="AAPL", qty="10")]
        self.closes = 0
        self.cancels = 0

    def cancel_orders(self):
        self.cancels += 1

    def close_all_positions(self, cancel_orders=None):
        self.closes += 1
        if self.closes >= 2:
            self.positions = []
        else:
            raise RuntimeError("HTTP 500")

    def get_all_positions(self):
        return list(self.positions)

    def get_orders(self, request):
        return []


def test_liquidation_retries_until_flat_and_reports_errors():
    from stockade.broker.liquidation import liquidate

    broker = ScriptedBroker()
    report = liquidate(broker, attempts=5, retry_interval_s=0.01, flat_timeout_s=10)
    assert report.flat and report.attempts == 2
    assert any("HTTP 500" in e for e in report.errors)


def test_liquidation_gives_up_and_says_what_is_left():
    from stockade.broker.liquidation import liquidate

    broker = ScriptedBroker()
    broker.close_all_positions = lambda cancel_orders=None: None  # never closes
    report = liquidate(broker, attempts=3, retry_interval_s=0.01, flat_timeout_s=10)
    assert not report.flat and report.attempts == 3 and report.positions_left == ("AAPL",)


def test_reconciler_adopts_only_a_disagreement_seen_twice_or_on_the_first_pass():
    from stockade.trading.ledger import disagreements_to_adopt

    # First pass after start: the broker wins at once.
    adopt, again = disagreements_to_adopt({"AAPL": 5}, {"AAPL": 10, "MSFT": 3}, {}, first_pass=True)
    assert adopt == ["AAPL", "MSFT"] and again == {}
    # A fill in flight: seen once, re-checked, not adopted.
    adopt, again = disagreements_to_adopt({"AAPL": 0}, {"AAPL": 10}, {}, first_pass=False)
    assert adopt == [] and again == {"AAPL": (0, 10)}
    # The fill landed in the ledger meanwhile: agreement, nothing to do.
    adopt, again = disagreements_to_adopt({"AAPL": 10}, {"AAPL": 10}, again, first_pass=False)
    assert adopt == [] and again == {}
    # The same disagreement twice in a row: adopted.
    adopt, again = disagreements_to_adopt({"AAPL": 0}, {"AAPL": 10}, {"AAPL": (0, 10)}, first_pass=False)
    assert adopt == ["AAPL"] and again == {}
    # A changed disagreement starts over.
    adopt, again = disagreements_to_adopt({"AAPL": 0}, {"AAPL": 12}, {"AAPL": (0, 10)}, first_pass=False)
    assert adopt == [] and again == {"AAPL": (0, 12)}
    # Ledger holds what the broker no longer has.
    adopt, _ = disagreements_to_adopt({"NVDA": 4}, {}, {"NVDA": (4, 0)}, first_pass=False)
    assert adopt == ["NVDA"]


def test_a_snapshot_older_than_the_ledgers_fills_is_neither_adopted_nor_remembered():
    from stockade.trading.ledger import disagreements_to_adopt, snapshot_stale

    # Fill sequences read before the broker was asked, and when its answer is used.
    before = {"MSFT": 3, "AAPL": 1}
    assert snapshot_stale(before, {"MSFT": 4, "AAPL": 1}) == {"MSFT"}  # a take-profit fill landed meanwhile
    assert snapshot_stale({}, {"NVDA": 1}) == {"NVDA"}  # the symbol's first fill
    assert snapshot_stale(before, dict(before)) == set()
    # Even on the first pass (adopted at once) and even when seen twice before.
    adopt, again = disagreements_to_adopt(
        {"MSFT": 0, "AAPL": 5}, {"MSFT": 23, "AAPL": 7}, {"MSFT": (0, 23)}, first_pass=True, stale={"MSFT"}
    )
    assert adopt == ["AAPL"] and again == {}
    adopt, again = disagreements_to_adopt(
        {"MSFT": 0}, {"MSFT": 23}, {"MSFT": (0, 23)}, first_pass=False, stale={"MSFT"}
    )
    assert adopt == [] and again == {}


def test_liquidation_errors_never_carry_a_registered_secret():
    from stockade.broker.liquidation import liquidate
    from stockade.broker.rest import register_secret

    secret = "SECRET-zz9-plural-z-alpha"
    register_secret(secret)
    broker = ScriptedBroker()

    def leaky(cancel_orders=None):
        raise RuntimeError(f"401 from https://api.example?key={secret}")

    broker.close_all_positions = leaky
    report = liquidate(broker, attempts=2, retry_interval_s=0.01, flat_timeout_s=10)
    assert not report.flat and report.errors
    assert all(secret not in e for e in report.errors), report.errors


def _order(coid: str, side: str, kind: str, qty: int, filled: int = 0, state: str = "accepted", **kw) -> OrderRecord:
    return OrderRecord(
        client_order_id=coid,
        intent_id="",
        symbol="AAPL",
        side=side,
        qty=qty,
        order_type=kind,
        state=state,
        filled_qty=filled,
        created_ns=0,
        updated_ns=0,
        **kw,
    )


def test_ledger_coverage_counts_stops_on_their_way_and_bracket_entries_without_known_legs():
    from stockade.trading.ledger import ledger_uncovered

    assert ledger_uncovered(10, []) == 10
    assert ledger_uncovered(10, [_order("tp", "sell", "limit", 10)]) == 10  # a take-profit is no protection
    assert ledger_uncovered(10, [_order("s", "sell", "stop", 6, filled=2)]) == 6  # 4 of it still rests
    assert ledger_uncovered(10, [_order("p", "sell", "stop", 10, state="intent")]) == 0  # on its way: not twice
    assert ledger_uncovered(10, [_order("h", "sell", "stop", 10, state="unknown")]) == 0  # in doubt: not twice
    # A bracket entry whose legs are not known yet: its stop leg covers what it filled.
    entry = _order("b", "buy", "market", 8, filled=8, state="submitted", order_class="bracket")
    assert ledger_uncovered(10, [entry]) == 2
    known = _order("b", "buy", "market", 8, filled=8, state="submitted", order_class="bracket", legs=("b-s",))
    assert ledger_uncovered(10, [known]) == 10  # its legs are orders of their own, counted as such
    assert ledger_uncovered(10, [_order("x", "sell", "trailing_stop", 12)]) == 0


def test_protection_coverage_bare_exposed_and_stops_on_their_way():
    from stockade.trading.protection import coverage

    on_its_way = _order("p", "sell", "stop", 6, state="intent")
    resting = _order("s", "sell", "stop", 3)
    seen = coverage(10, [on_its_way, resting, _order("tp", "sell", "limit", 10)])
    assert (seen.bare, seen.exposed, seen.pending) == (1, 7, (on_its_way,))  # counted for bare, not for exposed
    assert coverage(0, [resting]) == coverage(-3, []) == coverage(0, [])  # no long position: nothing to cover
    assert coverage(0, []).bare == 0 and coverage(0, []).pending == ()


def test_protection_is_bounded_by_the_broker_and_priced_under_the_reference():
    from stockade.trading.protection import broker_bounded, is_protective, protective_stop_price

    assert broker_bounded(bare=4, ledger_qty=10, broker_qty=10) == 4
    assert broker_bounded(bare=4, ledger_qty=10, broker_qty=8) == 2  # 2 of the bare shares were sold unseen
    assert broker_bounded(bare=4, ledger_qty=10, broker_qty=5) == 0  # never a stop that could open a short
    assert broker_bounded(bare=4, ledger_qty=10, broker_qty=12) == 4  # never more than the ledger's bare
    assert protective_stop_price(100.0, 5.0) == 95.0
    assert protective_stop_price(10.017, 1.0) == 9.91  # rounded down to a valid price
    assert is_protective(_order("s", "sell", "stop", 3, reduce_only=True))
    assert not is_protective(_order("s", "sell", "stop", 3))  # a stop of a strategy's own
    assert not is_protective(_order("l", "sell", "limit", 3, reduce_only=True))
    protective = _intent(side="sell", order_type="stop", take_profit=None, stop_loss=None, reduce_only=True)
    assert is_protective(protective) and not is_protective(_intent())


def test_protection_watch_asks_at_once_backs_off_and_reports_once_past_the_bound():
    import random

    from stockade.trading.protection import ProtectionWatch

    watch = ProtectionWatch(bound_s=10.0, base_s=0.5, cap_s=4.0, rng=random.Random(1))
    assert watch.due("AAPL", 100.0)  # the first time: at once
    watch.requested("AAPL", 100.0)
    delays = []
    now = 100.0
    for _ in range(8):  # refused each time: the next request waits longer, up to the cap
        while not watch.due("AAPL", now):
            now += 0.01
        delays.append(now)
        watch.requested("AAPL", now)
    gaps = [b - a for a, b in zip([100.0, *delays], delays, strict=False)]
    assert all(0.05 - 1e-9 <= g <= 4.0 + 0.011 for g in gaps)  # never a busy loop, never past the cap
    assert watch.overdue(109.0) == []  # 9 s bare: within the bound
    assert watch.bare_for("AAPL", 111.0) == 11.0
    assert watch.overdue(111.0) == ["AAPL"] and watch.overdue(112.0) == []  # once per episode
    watch.covered("AAPL")
    assert watch.symbols() == [] and watch.bare_for("AAPL", 113.0) == 0.0
    assert watch.due("AAPL", 120.0)  # a new episode starts over
    with pytest.raises(ValueError):
        ProtectionWatch(bound_s=0.0, base_s=0.5, cap_s=4.0)
