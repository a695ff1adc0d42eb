"""The venue's market side as alpaca-py and a JSON websocket client see it."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import requests
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.live.stock import StockDataStream
from alpaca.data.models import Bar, Quote
from alpaca.data.requests import (
    StockBarsRequest,
    StockLatestQuoteRequest,
    StockLatestTradeRequest,
    StockSnapshotRequest,
)
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.client import TradingClient
from alpaca.trading.requests import GetCalendarRequest
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, os.path.dirname(__file__))
from conftest_market import (
    KEY,
    SECRET,
    TIMEOUT,
    authenticated_client,
    json_client,
    no_market_sockets,
    send,
)
from waiting import wait_for

from stockade.venue import market_stream


def data_client(venue) -> StockHistoricalDataClient:
    client = StockHistoricalDataClient(KEY, SECRET, url_override=venue.base_url)
    client._session.request = functools.partial(client._session.request, timeout=TIMEOUT)
    return client


def raw_get(venue, path: str, **params) -> requests.Response:
    return requests.get(
        venue.base_url + path,
        params=params,
        timeout=TIMEOUT,
        headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET},
    )


# ---- REST --------------------------------------------------------------------------


def test_sdk_parses_multi_symbol_bars(market_venue):
    start = datetime.now(UTC) - timedelta(hours=3)
    barset = data_client(market_venue).get_stock_bars(
        StockBarsRequest(symbol_or_symbols=["AAPL", "SPY", "NOPE"], timeframe=TimeFrame.Minute, start=start)
    )
    assert set(barset.data) == {"AAPL", "SPY"}  # unknown symbols are left out, as Alpaca does
    bars = barset.data["AAPL"]
    assert len(bars) >= 170 and all(isinstance(b, Bar) for b in bars)
    assert all(a.timestamp < b.timestamp for a, b in zip(bars, bars[1:], strict=False))
    assert bars[0].timestamp >= start - timedelta(minutes=1)
    assert all(b.high >= max(b.open, b.close) and b.low <= min(b.open, b.close) for b in bars)
    hourly = data_client(market_venue).get_stock_bars(
        StockBarsRequest(
            symbol_or_symbols="MSFT", timeframe=TimeFrame(1, TimeFrameUnit.Hour), start=start - timedelta(days=2)
        )
    )
    assert all(b.timestamp.minute == 0 for b in hourly.data["MSFT"])


def test_pages_join_to_the_whole(market_venue):
    common = dict(symbols="AAPL,MSFT,SPY", timeframe="1Min", start=(datetime.now(UTC) - timedelta(hours=2)).isoformat())
    whole = raw_get(market_venue, "/v2/stocks/bars", limit=10000, **common).json()
    assert whole["next_page_token"] is None
    joined: dict[str, list] = {}
    token, pages = None, 0
    while True:
        page = raw_get(
            market_venue, "/v2/stocks/bars", limit=100, **common, **({"page_token": token} if token else {})
        ).json()
        pages += 1
        assert sum(len(v) for v in page["bars"].values()) <= 100
        for symbol, bars in page["bars"].items():
            joined.setdefault(symbol, []).extend(bars)
        token = page["next_page_token"]
        if token is None:
            break
    assert pages > 3
    # Bars finished between the two reads may extend the paged copy.
    for symbol, bars in whole["bars"].items():
        assert joined[symbol][: len(bars)] == bars
    desc = raw_get(
        market_venue, "/v2/stocks/AAPL/bars", timeframe="1Min", sort="desc", limit=5, start=common["start"]
    ).json()
    assert desc["symbol"] == "AAPL" and len(desc["bars"]) == 5 and desc["next_page_token"]
    assert [b["t"] for b in desc["bars"]] == sorted((b["t"] for b in desc["bars"]), reverse=True)


def test_sdk_parses_latest_quote_trade_and_snapshot(market_venue):
    client = data_client(market_venue)
    quotes = client.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols=["AAPL", "NOPE"]))
    assert set(quotes) == {"AAPL"}
    q = quotes["AAPL"]
    assert isinstance(q, Quote) and 0 < q.bid_price < q.ask_price and q.ask_size > 0
    assert q.timestamp.tzinfo is not None and q.bid_exchange == "V" and q.tape == "C"
    trade = client.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols="SPY"))["SPY"]
    assert trade.price > 0 and trade.size > 0 and trade.tape == "B"
    snap = client.get_stock_snapshot(StockSnapshotRequest(symbol_or_symbols=["MSFT"]))["MSFT"]
    assert snap.latest_quote.ask_price > 0 and snap.daily_bar.volume > 0 and snap.previous_daily_bar.close > 0
    raw = raw_get(market_venue, "/v2/stocks/quotes/latest", symbols="AAPL").json()
    assert set(raw["quotes"]["AAPL"]) == {"ap", "as", "ax", "bp", "bs", "bx", "c", "t", "z"}
    single = raw_get(market_venue, "/v2/stocks/AAPL/trades/latest").json()
    assert single["symbol"] == "AAPL" and set(single["trade"]) == {"c", "i", "p", "s", "t", "x", "z"}


def test_bad_parameters_get_alpaca_errors(market_venue):
    cases = [
        ({"symbols": "AAPL", "timeframe": "7Day"}, 422),
        ({"symbols": "AAPL"}, 422),  # no timeframe
        ({"timeframe": "1Min"}, 400),  # no symbols
        ({"symbols": "AAPL", "timeframe": "1Min", "limit": "0"}, 422),
        ({"symbols": "AAPL", "timeframe": "1Min", "start": "yesterday"}, 422),
        ({"symbols": "AAPL", "timeframe": "1Min", "sort": "up"}, 422),
        ({"symbols": "AAPL", "timeframe": "1Min", "feed": "nasdaq"}, 422),
        ({"symbols": "AAPL", "timeframe": "1Min", "page_token": "%%%"}, 422),
        ({"symbols": "AA PL", "timeframe": "1Min"}, 400),
    ]
    for params, status in cases:
        response = raw_get(market_venue, "/v2/stocks/bars", **params)
        assert response.status_code == status, params
        body = response.json()
        assert set(body) == {"code", "message"} and isinstance(body["code"], int), params
    assert raw_get(market_venue, "/v2/stocks/NOPE/quotes/latest").status_code == 404
    unauthorized = requests.get(
        market_venue.base_url + "/v2/stocks/bars", timeout=TIMEOUT, params={"symbols": "AAPL", "timeframe": "1Min"}
    )
    assert unauthorized.status_code == 401


def test_clock_and_calendar_parse_into_sdk_models(market_venue):
    client = TradingClient(KEY, SECRET, paper=True, url_override=market_venue.base_url)
    client._session.request = functools.partial(client._session.request, timeout=TIMEOUT)
    clock = client.get_clock()
    assert clock.is_open and clock.next_close > clock.timestamp  # the test venue is always open
    days = client.get_calendar(
        GetCalendarRequest(start=datetime(2025, 12, 1).date(), end=datetime(2025, 12, 31).date())
    )
    assert len(days) == 31 and days[0].open.hour == 0
    body = raw_get(market_venue, "/v2/calendar", start="2025-12-01", end="2025-12-02").json()
    assert set(body[0]) == {"date", "open", "close", "session_open", "session_close", "settlement_date"}


# ---- the stream: alpaca-py (msgpack) -------------------------------------------------------


def test_sdk_stream_receives_quotes_trades_and_bars_over_msgpack(market_venue):
    no_market_sockets(market_venue)
    stream = StockDataStream(
        KEY,
        SECRET,
        url_override=market_venue.data_stream_url("iex"),
        websocket_params={"open_timeout": TIMEOUT, "ping_interval": 10, "ping_timeout": 30},
    )
    received = deque(maxlen=10_000)

    async def on_data(item):
        received.append(item)

    stream.subscribe_quotes(on_data, "AAPL", "SPY")
    stream.subscribe_trades(on_data, "MSFT")
    thread = threading.Thread(target=stream.run, name="sdk-stream", daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: {getattr(x, "symbol", None) for x in list(received)} >= {"AAPL", "SPY", "MSFT"},
            TIMEOUT,
            what="quotes and trades through alpaca-py",
        )
    finally:
        wait_for(lambda: stream._loop is not None and stream._loop.is_running(), TIMEOUT)
        stream.stop()
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    quotes = [x for x in received if isinstance(x, Quote)]
    assert quotes and all(q.symbol in ("AAPL", "SPY") and q.bid_price < q.ask_price for q in quotes)
    # msgpack Timestamp carried the wall-clock time of emission.
    assert abs((datetime.now(UTC) - quotes[-1].timestamp).total_seconds()) < 30
    trades = [x for x in received if not isinstance(x, Quote)]
    assert trades and all(t.symbol == "MSFT" and t.price > 0 for t in trades)


# ---- the stream: JSON clients ----------------------------------------------------------------


def test_json_frames_have_alpacas_shape(market_venue):
    ws = authenticated_client(market_venue)
    try:
        sub = send(ws, {"action": "subscribe", "quotes": ["AAPL"], "trades": ["*"], "bars": ["SPY"]})
        assert sub == [
            {
                "T": "subscription",
                "trades": ["*"],
                "quotes": ["AAPL"],
                "bars": ["SPY"],
                "updatedBars": [],
                "dailyBars": [],
                "statuses": [],
                "lulds": [],
                "corrections": ["*"],
                "cancelErrors": ["*"],
            }
        ]
        seen: dict[str, dict] = {}
        while not {"q", "t"} <= set(seen):
            for message in json.loads(ws.recv(timeout=TIMEOUT)):
                seen[message["T"]] = message
                if message["T"] == "q":
                    assert message["S"] == "AAPL"
        q, t = seen["q"], seen["t"]
        assert list(q) == ["T", "S", "bx", "bp", "bs", "ax", "ap", "as", "c", "z", "t"]
        assert set(t) == {"T", "S", "i", "x", "p", "s", "c", "z", "t"}
        assert q["bp"] < q["ap"] and isinstance(q["bs"], int)
        stamp = datetime.fromisoformat(q["t"].replace("Z", "+00:00")[:26] + "+00:00") if "." in q["t"] else None
        assert stamp is None or abs((datetime.now(UTC) - stamp).total_seconds()) < 30
        assert q["t"].endswith("Z") and len(q["t"].split(".")[-1]) <= 10
        unsub = send(ws, {"action": "unsubscribe", "trades": ["*"], "quotes": ["AAPL"]})
        assert unsub[0]["trades"] == [] and unsub[0]["quotes"] == [] and unsub[0]["bars"] == ["SPY"]
    finally:
        ws.close()


def test_auth_failure_is_402_and_closes(market_venue):
    no_market_sockets(market_venue)
    ws = json_client(market_venue)
    assert send(ws, {"action": "auth", "key": KEY, "secret": "wrong"}) == [
        {"T": "error", "code": 402, "msg": "auth failed"}
    ]
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=TIMEOUT)


def test_no_auth_in_time_is_404_and_closes(market_venue):
    ws = json_client(market_venue)
    started = time.monotonic()
    assert json.loads(ws.recv(timeout=TIMEOUT)) == [{"T": "error", "code": 404, "msg": "auth timeout"}]
    assert time.monotonic() - started < TIMEOUT
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=TIMEOUT)


def test_second_connection_is_406(market_venue):
    first = authenticated_client(market_venue)
    try:
        second = json_client(market_venue)
        assert send(second, {"action": "auth", "key": KEY, "secret": SECRET}) == [
            {"T": "error", "code": 406, "msg": "connection limit exceeded"}
        ]
        with pytest.raises(ConnectionClosed):
            second.recv(timeout=TIMEOUT)
        # The first one is untouched.
        assert send(first, {"action": "subscribe", "quotes": ["SPY"]})[0]["T"] == "subscription"
    finally:
        first.close()


def test_protocol_errors_leave_the_connection_usable(market_venue):
    no_market_sockets(market_venue)
    ws = json_client(market_venue)
    try:
        assert send(ws, {"action": "subscribe", "quotes": ["AAPL"]})[0]["code"] == 401
        assert send(ws, "{not json")[0] == {"T": "error", "code": 400, "msg": "invalid syntax"}
        assert send(ws, {"action": "dance"})[0]["code"] == 400
        assert send(ws, {"action": "auth", "key": KEY, "secret": SECRET})[0]["msg"] == "authenticated"
        assert send(ws, {"action": "auth", "key": KEY, "secret": SECRET})[0]["code"] == 403
        assert send(ws, {"action": "subscribe", "quotes": "AAPL"})[0]["code"] == 400
        assert send(ws, {"action": "subscribe", "quotes": ["AAPL"]})[0]["T"] == "subscription"
    finally:
        ws.close()


def test_silent_stream_stays_connected_then_resumes(market_venue):
    ws = authenticated_client(market_venue)
    try:
        send(ws, {"action": "subscribe", "quotes": ["*"]})
        ws.recv(timeout=TIMEOUT)  # data flows
        market_venue.set_faults(stream_silent=True)
        with pytest.raises(TimeoutError):
            for _ in range(1000):  # drain what was already in flight
                ws.recv(timeout=0.5)
        ws.ping().wait(TIMEOUT)  # still connected, just mute
        market_venue.set_faults(stream_silent=False)
        assert json.loads(ws.recv(timeout=TIMEOUT))[0]["T"] == "q"
    finally:
        market_venue.set_faults(stream_silent=False)
        ws.close()


def test_dropped_streams_are_cut(market_venue):
    ws = authenticated_client(market_venue)
    send(ws, {"action": "subscribe", "quotes": ["AAPL"]})
    market_venue.set_faults(drop_streams="market")
    with pytest.raises((ConnectionClosed, TimeoutError)):
        for _ in range(10_000):
            ws.recv(timeout=TIMEOUT)
    no_market_sockets(market_venue)


def test_a_slow_consumer_costs_bounded_memory_then_is_cut_off():
    """Unit level: a connection whose writer is stuck keeps at most the queue bound."""
    aborted = []
    transport = SimpleNamespace(abort=lambda: aborted.append(True))
    ws = SimpleNamespace(_req=SimpleNamespace(transport=transport), closed=False)
    ctx = SimpleNamespace(faults=SimpleNamespace(stream_silent=False))

    async def main():
        hub = market_stream.MarketStreamHub(ctx, send_queue_max=10, slow_client_timeout_s=5.0)
        session = market_stream._Session(hub, ws, "iex", binary=False)
        session.authenticated = True
        session.subs["quotes"]["*"] = None
        hub.sessions.add(session)
        quote = SimpleNamespace(symbol="AAPL")
        session.sending_since = 100.0  # a send that began at loop time 100 never finished
        for i in range(50):
            session.offer(market_stream._Outgoing(quote), 101.0 + i * 0.01)
        assert len(session.data) == 10 and session.dropped == 40 and not aborted
        session.offer(market_stream._Outgoing(quote), 106.0)  # stuck for more than 5 s
        assert aborted == [True] and session.closing and len(session.data) == 0

    asyncio.run(main())


def test_benches_run_and_report():
    from stockade.bench.venue import bench_quote_publish, bench_rest_roundtrips

    quotes = bench_quote_publish(0.5, 3, encoding="msgpack")
    assert quotes["quotes_per_s"] > 100 and quotes["latency_us"]["p50"] > 0 and quotes["symbols"] == 3
    rest = bench_rest_roundtrips(50)
    assert rest["errors"] == 0 and rest["requests_per_s"] > 0 and rest["latency_us"]["p99"] >= rest["latency_us"]["p50"]
