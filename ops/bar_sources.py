"""Where training's one-minute bars come from: the paper venue's simulator
(offline, a pure function of the seed) or Alpaca's REST API.

The application's side of training: the data set maths (`trading/datasets.py`)
stays pure and never imports the venue; only the application may.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from stockade.codecs.messages import Bar
from stockade.trading.datasets import NS_PER_MIN

# The fixed end of the simulated history: the sim's bars are a pure function
# of (seed, symbol, minutes before the end), so a fixed end makes the data
# set a pure function of the seed.
SIM_END_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z


def sim_bars(symbols: Sequence[str], seed: int, days: float, end_ns: int = SIM_END_NS) -> dict[str, list[Bar]]:
    """One-minute bars from the paper venue's market simulator (offline, a pure function of the seed)."""
    from stockade.venue.market import MarketSimulator

    market = MarketSimulator(tuple(symbols), seed=seed, now_fn=lambda: end_ns)
    start_ns = end_ns - int(days * 24 * 60) * NS_PER_MIN
    out: dict[str, list[Bar]] = {}
    for symbol in market.symbols:
        out[symbol] = [
            Bar(symbol, b.open, b.high, b.low, b.close, float(b.volume), b.ts_ns)
            for b in market.bars(symbol, 1, start_ns, end_ns - NS_PER_MIN)
        ]
    return out


def rest_bars(client, symbols: Sequence[str], start_ns: int, end_ns: int, feed: str) -> dict[str, list[Bar]]:
    """One-minute bars through an alpaca-py StockHistoricalDataClient (Alpaca or the venue).

    alpaca-py follows the pagination itself.
    """
    from datetime import datetime

    from alpaca.common.enums import Sort
    from alpaca.data.requests import StockBarsRequest
    from alpaca.data.timeframe import TimeFrame

    from stockade.broker.rest import data_feed

    request = StockBarsRequest(
        symbol_or_symbols=list(symbols),
        timeframe=TimeFrame.Minute,
        start=datetime.fromtimestamp(start_ns / 1e9, UTC),
        end=datetime.fromtimestamp(end_ns / 1e9, UTC),
        feed=data_feed(feed),
        sort=Sort.ASC,
    )
    data = client.get_stock_bars(request).data
    return {
        symbol: [
            Bar(symbol, b.open, b.high, b.low, b.close, float(b.volume), int(b.timestamp.timestamp() * 1e9))
            for b in data.get(symbol, [])
        ]
        for symbol in symbols
    }
