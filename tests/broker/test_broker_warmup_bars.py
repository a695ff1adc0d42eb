"""Warm-up bars for many symbols per request (broker/warmup_bars.py) against the real loopback venue.

The venue runs with the free plan's data budget (200 calls/min) and its
access log on: every request it answers is counted there, whatever the
client did. One request per symbol (the old warm-up) would be 300 calls here.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest

from stockade.broker.rest import make_data_client
from stockade.broker.warmup_bars import WarmupBars

N_SYMBOLS = 300
N_BARS = 120


@pytest.fixture
def venue():
    from stockade.venue.config import VenueConfig
    from stockade.venue.server import start_venue

    key, secret = "PK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    symbols = tuple(f"W{i:03d}" for i in range(N_SYMBOLS))
    v = start_venue(
        VenueConfig(
            port=0,
            seed=11,
            api_key=key,
            api_secret=secret,
            symbols=symbols,
            quote_rate_hz=0.2,
            rate_limit_per_min=200,
            access_log=True,
        )
    )
    try:
        yield v, key, secret, symbols
    finally:
        v.stop(timeout=10)


def bars_requests(caplog) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == "stockade.venue.access" and r.getMessage().startswith("GET /v2/stocks/bars ")
    )


def test_three_hundred_symbols_warm_up_in_a_few_requests(venue, caplog):
    v, key, secret, symbols = venue
    caplog.set_level(logging.INFO, logger="stockade.venue.access")
    history = WarmupBars(lambda: make_data_client(key, secret, v.base_url, raw_data=True), symbols, N_BARS, "iex")
    now_ns = time.time_ns()
    got = {s: history.bars(s, now_ns) for s in symbols}
    for s, bars in got.items():
        assert len(bars) == N_BARS, (s, len(bars))
        stamps = [b.ts_ns for b in bars]
        assert stamps == sorted(stamps, reverse=True), s  # newest first, as one symbol's request gave them
        assert all(b.symbol == s for b in bars)
    # A request (page) per chunk of symbols and per 10,000 bars: 5 in the
    # market's hours, more at night (the second window, a day, holds a whole
    # session per symbol), far under the budget of 200 a minute either way.
    requests = bars_requests(caplog)
    assert 0 < requests <= 30, requests
    assert not [r for r in caplog.records if " 429 " in r.getMessage()]


def test_the_same_bars_as_one_request_for_one_symbol(venue):
    v, key, secret, symbols = venue
    from alpaca.common.enums import Sort
    from alpaca.data.requests import StockBarsRequest
    from alpaca.data.timeframe import TimeFrame

    client = make_data_client(key, secret, v.base_url)  # alpaca-py's models, for the answer alone
    now_ns = time.time_ns()
    history = WarmupBars(lambda: make_data_client(key, secret, v.base_url, raw_data=True), symbols[:50], N_BARS, "iex")
    batched = history.bars(symbols[7], now_ns)
    end = datetime.fromtimestamp(now_ns / 1e9, UTC)
    alone = client.get_stock_bars(
        StockBarsRequest(
            symbol_or_symbols=symbols[7],
            timeframe=TimeFrame.Minute,
            start=end - timedelta(days=5),
            end=end,
            limit=N_BARS,
            feed="iex",
            sort=Sort.DESC,
        )
    ).data[symbols[7]]
    assert [(b.ts_ns, b.open, b.high, b.low, b.close, b.volume) for b in batched] == [
        (int(b.timestamp.timestamp() * 1e9), b.open, b.high, b.low, b.close, b.volume) for b in alone
    ]


def test_a_failed_fetch_is_not_repeated_by_every_symbol(venue, caplog):
    v, key, secret, symbols = venue
    caplog.set_level(logging.INFO, logger="stockade.venue.access")
    history = WarmupBars(
        lambda: make_data_client("PKWRONG", "wrong", v.base_url, raw_data=True), symbols, N_BARS, "iex"
    )
    failures = 0
    for s in symbols[:100]:
        try:
            history.bars(s, time.time_ns())
        except Exception:
            failures += 1
    assert failures == 100
    assert bars_requests(caplog) <= 3  # the first ask's request (and its retries), not one per symbol


def test_a_fenced_asker_does_not_fail_the_next_one(venue):
    from stockade.supervisors import fence
    from stockade.supervisors.fence import Fenced, FenceToken

    v, key, secret, symbols = venue
    history = WarmupBars(lambda: make_data_client(key, secret, v.base_url, raw_data=True), symbols[:20], N_BARS, "iex")
    fence.bind(FenceToken("analyzer:W000", 1, lambda: False))  # replaced: its REST calls are refused
    try:
        with pytest.raises(Fenced):
            history.bars(symbols[0], time.time_ns())
    finally:
        fence.bind(None)
    assert len(history.bars(symbols[1], time.time_ns())) == N_BARS  # not "failed moments ago"
