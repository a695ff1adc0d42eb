"""Helpers shared by the venue tests: SDK client with timeouts, injected quotes, raw HTTP."""

from __future__ import annotations

import functools
import time

import msgspec
import requests
from alpaca.trading.client import TradingClient

from stockade.venue.server import VenueHandle

HTTP_TIMEOUT_S = 10.0


class InjectedQuote(msgspec.Struct, frozen=True):
    """A top of book handed straight to the exchange, so a test decides the price."""

    symbol: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    ts_ns: int


def sdk_client(venue: VenueHandle, key: str | None = None, secret: str | None = None) -> TradingClient:
    """alpaca-py's TradingClient pointed at the venue, every request with a timeout."""
    client = TradingClient(
        key or venue.ctx.config.api_key,
        secret or venue.ctx.config.api_secret,
        paper=True,
        url_override=venue.base_url,
    )
    client._session.request = functools.partial(client._session.request, timeout=HTTP_TIMEOUT_S)
    # 429 is a result under test, not something to sleep 3 s on and retry.
    client._retry_codes = []
    return client


def inject_quote(venue: VenueHandle, symbol: str, bid: float, ask: float, size: float = 10_000) -> None:
    q = InjectedQuote(symbol, bid, ask, size, size, time.time_ns())

    def apply() -> None:
        venue.ctx.exchange.on_quote(q)
        venue.ctx.persist()

    venue.call(apply)


def current_quote(venue: VenueHandle, symbol: str):
    return venue.call(lambda: venue.ctx.exchange.quotes[symbol])


def headers(venue: VenueHandle) -> dict[str, str]:
    return {
        "APCA-API-KEY-ID": venue.ctx.config.api_key,
        "APCA-API-SECRET-KEY": venue.ctx.config.api_secret,
    }


def http(venue: VenueHandle, method: str, path: str, **kw) -> requests.Response:
    hdrs = {**headers(venue), **kw.pop("headers", {})}
    return requests.request(method, venue.base_url + path, headers=hdrs, timeout=HTTP_TIMEOUT_S, **kw)
