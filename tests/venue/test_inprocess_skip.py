"""The in-process venue skips a resting order only where the exchange's match would find no price."""

import copy
import random

from stockade.codecs.messages import Quote
from stockade.venue.exchange import Exchange, Order
from stockade.venue.inprocess import _may_execute


def test_a_skipped_order_is_one_the_exchange_would_not_have_executed_at_that_quote():
    rng = random.Random(13)
    kinds = ("market", "limit", "stop", "stop_limit", "trailing_stop")
    skipped = executable = 0
    for i in range(20_000):
        mid = rng.uniform(10.0, 200.0)
        half = rng.choice((0.005, 0.01, mid * 0.001))
        bid, ask = round(mid - half, 2), round(mid + half, 2)
        kind = rng.choice(kinds)
        level = round(mid * rng.uniform(0.98, 1.02), 2)
        if rng.random() < 0.05:
            level = bid if rng.random() < 0.5 else ask  # right at the touch
        order = _resting(rng, f"{i}", kind, level, triggered=0.2)
        quote = Quote("S", bid, ask, 100.0, 100.0, 1, 1)
        price = Exchange._executable_price(copy.deepcopy(order), quote)
        if not _may_execute(order, quote):
            skipped += 1
            assert price is None, (order, quote, price)
        elif price is not None:
            executable += 1
    assert skipped > 2_000 and executable > 2_000  # both sides of the test were exercised


def test_a_book_out_of_reach_holds_no_order_the_quote_could_execute():
    """`_reach` sums a symbol's book up; a quote it says is out of reach is skipped whole,
    so no order of that book may pass `_may_execute` at it."""
    from stockade.venue.inprocess import _reach, _within_reach

    rng = random.Random(29)
    kinds = ("limit",) * 6 + ("stop",) * 6 + ("market", "stop_limit", "trailing_stop")
    out_of_reach = within = 0
    for b in range(5_000):
        mid = rng.uniform(10.0, 200.0)
        bid, ask = round(mid - 0.01, 2), round(mid + 0.01, 2)
        book = []
        for i in range(rng.randint(1, 4)):
            kind = rng.choice(kinds)
            level = round(mid * rng.uniform(0.99, 1.01), 2)
            if rng.random() < 0.1:
                level = bid if rng.random() < 0.5 else ask  # right at the touch
            book.append(_resting(rng, f"{b}-{i}", kind, level, triggered=0.1))
        quote = Quote("S", bid, ask, 100.0, 100.0, 1, 1)
        reach = _reach(book)
        if reach is not None and not _within_reach(reach, quote):
            out_of_reach += 1
            assert not any(_may_execute(o, quote) for o in book), (book, quote)
        else:
            within += 1
    assert out_of_reach > 500 and within > 500  # both sides of the test were exercised


def _resting(rng: random.Random, tag: str, kind: str, level: float, *, triggered: float) -> Order:
    """A random resting order of symbol S at `level` (its stop already triggered with probability `triggered`)."""
    return Order(
        id=f"o{tag}",
        client_order_id=f"c{tag}",
        symbol="S",
        asset_id="a",
        side=rng.choice(("buy", "sell")),
        type=kind,
        time_in_force="day",
        qty=10,
        limit_price=level if kind in ("limit", "stop_limit") else None,
        stop_price=level if kind in ("stop", "stop_limit", "trailing_stop") else None,
        status="new",
        stop_triggered=rng.random() < triggered,
    )
