"""Helpers shared by the market-side venue tests (their `market_venue` fixture is in conftest.py)."""

from __future__ import annotations

import json
from typing import Any

from waiting import wait_for
from websockets.sync.client import ClientConnection, connect

from stockade.venue.config import VenueConfig
from stockade.venue.server import VenueHandle

KEY, SECRET = "test-key", "test-secret"
TIMEOUT = 5.0  # every network call


def market_config(**overrides: Any) -> VenueConfig:
    base = dict(
        api_key=KEY, api_secret=SECRET, seed=11, quote_rate_hz=40.0, auth_timeout_s=0.5, rate_limit_per_min=100_000
    )
    base.update(overrides)
    return VenueConfig(**base)


def no_market_sockets(handle: VenueHandle) -> None:
    """Wait until the venue has forgotten every market websocket (the 1-connection limit)."""
    wait_for(lambda: not handle.ctx.websockets["market"], TIMEOUT, what="market websockets closed")


def json_client(handle: VenueHandle, feed: str = "iex", **kw: Any) -> ClientConnection:
    ws = connect(handle.data_stream_url(feed), open_timeout=TIMEOUT, close_timeout=TIMEOUT, legacy=True, **kw)
    assert json.loads(ws.recv(timeout=TIMEOUT)) == [{"T": "success", "msg": "connected"}]
    return ws


def send(ws: ClientConnection, message: Any) -> list[dict[str, Any]]:
    """Send a JSON message and return the next frame, decoded."""
    ws.send(json.dumps(message) if not isinstance(message, str) else message)
    return json.loads(ws.recv(timeout=TIMEOUT))


def authenticated_client(handle: VenueHandle, feed: str = "iex") -> ClientConnection:
    no_market_sockets(handle)
    ws = json_client(handle, feed)
    assert send(ws, {"action": "auth", "key": KEY, "secret": SECRET}) == [{"T": "success", "msg": "authenticated"}]
    return ws
