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
        order = Order(
            id=f"o{i}",
            client_order_id=f"c{i}",
            symbol="S",
            asset_id="a",
            side=rng.choice(("buy", "sell")),
            type=kind,
            time_in_force="day",
            qty=10,
            limit_price=level if kind in ("limit", "stop_limit") else None,
            stop_price=level if kind in ("stop", "stop_limit", "trailing_stop") else None,
            status="new",
            stop_triggered=rng.random() < 0.2,
        )
        quote = Quote("S", bid, ask, 100.0, 100.0, 1, 1)
        price = Exchange._executable_price(copy.deepcopy(order), quote)
        if not _may_execute(order, quote):
            skipped += 1
            assert price is None, (order, quote, price)
        elif price is not None:
            executable += 1
    assert skipped > 2_000 and executable > 2_000  # both sides of the test were exercised
