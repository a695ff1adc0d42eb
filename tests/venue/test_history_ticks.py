"""Historical quotes and trades: alpaca-py parses them, pages join to the whole, ticks agree with bars."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta

from alpaca.data.models import Quote, Trade
from alpaca.data.requests import StockBarsRequest, StockQuotesRequest, StockTradesRequest
from alpaca.data.timeframe import TimeFrame

sys.path.insert(0, os.path.dirname(__file__))
from test_market_data_conformance import data_client, raw_get

from stockade.venue.history_ticks import TICKS_PER_BAR

WINDOW_START = datetime(2025, 3, 4, 15, 0, tzinfo=UTC)  # any past window works
WINDOW_END = WINDOW_START + timedelta(minutes=30)


def test_sdk_parses_historical_quotes_and_trades(market_venue):
    client = data_client(market_venue)
    quotes = client.get_stock_quotes(
        StockQuotesRequest(symbol_or_symbols=["AAPL", "SPY", "NOPE"], start=WINDOW_START, end=WINDOW_END)
    )
    assert set(quotes.data) == {"AAPL", "SPY"}
    aapl = quotes.data["AAPL"]
    assert len(aapl) == 30 * TICKS_PER_BAR and all(isinstance(q, Quote) for q in aapl)
    assert all(WINDOW_START <= q.timestamp <= WINDOW_END for q in aapl)
    assert all(a.timestamp < b.timestamp for a, b in zip(aapl, aapl[1:], strict=False))
    assert all(0 < q.bid_price < q.ask_price and q.bid_size > 0 for q in aapl)

    trades = client.get_stock_trades(
        StockTradesRequest(symbol_or_symbols="AAPL", start=WINDOW_START, end=WINDOW_END, limit=25)
    )
    assert len(trades.data["AAPL"]) == 25 and all(isinstance(t, Trade) for t in trades.data["AAPL"])


def test_trades_agree_with_the_bars(market_venue):
    client = data_client(market_venue)
    bars = client.get_stock_bars(
        StockBarsRequest(
            symbol_or_symbols="MSFT",
            timeframe=TimeFrame.Minute,
            start=WINDOW_START,
            end=WINDOW_END - timedelta(seconds=1),
        )
    )
    trades = client.get_stock_trades(
        StockTradesRequest(symbol_or_symbols="MSFT", start=WINDOW_START, end=WINDOW_END - timedelta(seconds=1))
    )
    by_minute: dict[datetime, list] = {}
    for t in trades.data["MSFT"]:
        by_minute.setdefault(t.timestamp.replace(second=0, microsecond=0), []).append(t)
    for bar in bars.data["MSFT"]:
        ticks = by_minute[bar.timestamp]
        prices = [t.price for t in ticks]
        assert (prices[0], prices[-1], max(prices), min(prices)) == (bar.open, bar.close, bar.high, bar.low)
        assert sum(t.size for t in ticks) == bar.volume


def test_pages_join_to_the_whole_in_alpacas_shape(market_venue):
    common = dict(symbols="AAPL,MSFT", start=WINDOW_START.isoformat(), end=WINDOW_END.isoformat())
    for kind in ("quotes", "trades"):
        whole = raw_get(market_venue, f"/v2/stocks/{kind}", limit=10000, **common).json()
        assert set(whole) == {kind, "next_page_token"} and whole["next_page_token"] is None
        joined: dict[str, list] = {}
        token, pages = None, 0
        while True:
            page = raw_get(
                market_venue, f"/v2/stocks/{kind}", limit=37, **common, **({"page_token": token} if token else {})
            ).json()
            pages += 1
            assert sum(len(v) for v in page[kind].values()) <= 37  # limit counts across symbols
            for symbol, items in page[kind].items():
                joined.setdefault(symbol, []).extend(items)
            token = page["next_page_token"]
            if token is None:
                break
        assert pages == -(-2 * 30 * TICKS_PER_BAR // 37) and joined == whole[kind]

    single = raw_get(
        market_venue, "/v2/stocks/AAPL/trades", limit=3, sort="desc", start=common["start"], end=common["end"]
    ).json()
    assert set(single) == {"trades", "symbol", "next_page_token"} and single["symbol"] == "AAPL"
    assert len(single["trades"]) == 3 and single["next_page_token"]
    assert [t["t"] for t in single["trades"]] == sorted((t["t"] for t in single["trades"]), reverse=True)
    assert set(single["trades"][0]) == {"c", "i", "p", "s", "t", "x", "z"}
    q = raw_get(market_venue, "/v2/stocks/AAPL/quotes", limit=1, start=common["start"]).json()["quotes"][0]
    assert set(q) == {"ap", "as", "ax", "bp", "bs", "bx", "c", "t", "z"}


def test_same_window_same_ticks_and_bad_parameters(market_venue):
    a = raw_get(market_venue, "/v2/stocks/SPY/quotes", start=WINDOW_START.isoformat(), limit=50).json()
    b = raw_get(market_venue, "/v2/stocks/SPY/quotes", start=WINDOW_START.isoformat(), limit=50).json()
    assert a == b
    r = raw_get(market_venue, "/v2/stocks/SPY/trades", limit=0)
    assert r.status_code == 422 and r.json()["code"] == 42210000
    r = raw_get(market_venue, "/v2/stocks/quotes")
    assert r.status_code == 400 and r.json()["message"] == "missing symbols"
    r = raw_get(market_venue, "/v2/stocks/SPY/quotes", page_token="not-a-token")
    assert r.status_code == 422
