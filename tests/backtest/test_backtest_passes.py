"""The order manager's periodic resync asks the broker only for what it needs.

Its tracked orders mostly rest at the broker (a bracket's legs, for hours):
the open orders answer for them. All orders (closed ones included, each a
JSON object and an alpaca-py model) are asked for only when a tracked
order is not among the open ones. In a backtest the trade-updates stream
misses nothing, so a resync never needs them. Real actors, the alpaca-py
clients on the in-process venue, real lmdb files.
"""

from __future__ import annotations

import collections
import datetime as dt

from stockade.config.settings import settings_from_dict
from stockade.ops.backtest import Engine
from stockade.ops.backtest_data import SimSource

SYMBOLS = ("AAPL", "MSFT", "NVDA")
DAY = dt.date(2026, 6, 2)


def test_a_resync_of_resting_orders_lists_open_orders_only(tmp_path):
    settings = settings_from_dict({"logging": {"level": "WARNING"}})
    source = SimSource(SYMBOLS, 4, DAY, DAY)
    b = settings.backtest
    days = list(source.days(b.bar_spread_bps, b.quote_size))
    engine = Engine(settings, SYMBOLS, 4, tmp_path / "out", None, market=source.market)
    listings: collections.Counter[str] = collections.Counter()
    resting: list[int] = []
    try:
        engine.start(days[0].events[0].ts_ns)
        assert engine.venue is not None
        venue = engine.venue
        handle = venue.handle

        def counting(method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, bytes]:
            if method == "GET" and path == "/v2/orders":
                listings[query.get("status", "open")] += 1
                resting.append(sum(1 for o in venue.exchange.orders.values() if o.is_open))
            return handle(method, path, query, body)

        venue.handle = counting  # type: ignore[method-assign]
        for day in days:
            engine.replay(day.events)
        figures = engine.finish()
    finally:
        engine.close()
    assert figures["orders"] > 0 and figures["fills"] > 0, figures
    assert max(resting) > 0  # orders rested at the broker while the passes ran
    assert listings["open"] > 0 and listings["closed"] > 0  # resyncs and reconcile passes ran
    assert listings["all"] == 0, listings
