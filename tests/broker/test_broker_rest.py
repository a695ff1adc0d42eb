"""broker/rest.py: endpoints, redaction, timeouts and retry policy of the SDK clients."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from stockade.broker.rest import (
    BrokerEndpoints,
    TimeoutSession,
    data_feed,
    endpoints_for,
    make_data_client,
    make_trading_client,
    redact,
    register_secret,
    resolve_endpoints,
)

KEY, SECRET = "PKREST000TEST", "rest-secret-0123456789"
CLOCK = {
    "timestamp": "2024-03-01T10:00:00-05:00",
    "is_open": True,
    "next_open": "2024-03-04T09:30:00-05:00",
    "next_close": "2024-03-01T16:00:00-05:00",
}


# ---- endpoints ----------------------------------------------------------------------


def test_paper_defaults():
    assert resolve_endpoints(env={}) == BrokerEndpoints(
        "https://paper-api.alpaca.markets",
        "https://data.alpaca.markets",
        "wss://stream.data.alpaca.markets/v2/iex",
        "wss://paper-api.alpaca.markets/stream",
    )


def test_live_defaults_and_feed():
    ep = resolve_endpoints(paper=False, feed="sip", env={})
    assert ep.trading_url == "https://api.alpaca.markets"
    assert ep.trading_stream_url == "wss://api.alpaca.markets/stream"
    assert ep.stream_url == "wss://stream.data.alpaca.markets/v2/sip"


def test_env_base_url_honoured_and_stream_follows_it():
    ep = resolve_endpoints(env={"APCA_API_BASE_URL": "https://api.alpaca.markets/v2/"})
    assert ep.trading_url == "https://api.alpaca.markets"  # /v2 stripped: the SDK adds it
    assert ep.trading_stream_url == "wss://api.alpaca.markets/stream"


def test_settings_win_over_env_and_venue_urls():
    ep = resolve_endpoints(
        trading_url="http://127.0.0.1:8123",
        data_url="http://127.0.0.1:8123",
        stream_url="ws://127.0.0.1:8123/v2/iex",
        env={"APCA_API_BASE_URL": "https://api.alpaca.markets"},
    )
    assert ep == BrokerEndpoints(
        "http://127.0.0.1:8123", "http://127.0.0.1:8123", "ws://127.0.0.1:8123/v2/iex", "ws://127.0.0.1:8123/stream"
    )


def test_endpoints_for_a_settings_section():
    from stockade.config.settings import Settings, settings_from_dict

    a = Settings().alpaca
    assert endpoints_for(a, {}).trading_url == "https://paper-api.alpaca.markets"
    ep = endpoints_for(a, {"APCA_API_BASE_URL": "http://127.0.0.1:9/"})
    assert (ep.trading_url, ep.trading_stream_url) == ("http://127.0.0.1:9", "ws://127.0.0.1:9/stream")
    assert endpoints_for(a, {}).stream_url == "wss://stream.data.alpaca.markets/v2/iex"
    with pytest.raises(ValueError, match="APCA_API_BASE_URL"):
        endpoints_for(a, {"APCA_API_BASE_URL": "nonsense"})
    explicit = settings_from_dict({"alpaca": {"trading_url": "http://h:1"}}).alpaca
    assert endpoints_for(explicit, {"APCA_API_BASE_URL": "http://other:2"}).trading_url == "http://h:1"
    live = settings_from_dict({"alpaca": {"paper": False, "allow_live": True}}).alpaca
    assert endpoints_for(live, {}).trading_url == "https://api.alpaca.markets"


@pytest.mark.parametrize(
    "kw",
    [
        dict(trading_url="ftp://x"),
        dict(stream_url="https://x/v2/iex"),
        dict(trading_stream_url="x"),
        dict(feed="nasdaq"),
    ],
)
def test_bad_urls_name_the_setting(kw):
    with pytest.raises(ValueError) as info:
        resolve_endpoints(env={}, **kw)
    assert next(iter(kw)) in str(info.value)


# ---- redaction ----------------------------------------------------------------------


def test_redact_registered_and_field_values():
    register_secret(KEY, SECRET, "", None, "ab")
    text = (
        f'auth {{"action":"auth","key":"{KEY}","secret":"{SECRET}"}} '
        f"APCA-API-SECRET-KEY: other-secret key_id=abc secret_key=zzz; plain {SECRET}"
    )
    out = redact(text)
    assert KEY not in out and SECRET not in out and "other-secret" not in out and "zzz" not in out
    assert "ab" in redact("ab cd")  # too short to be registered
    assert redact("nothing here") == "nothing here"
    assert "xyz-extra" not in redact("token xyz-extra", extra=["xyz-extra"])


# ---- REST clients against a local HTTP peer -------------------------------------------


class _Peer:
    """A tiny HTTP server: answers GET /v2/clock from a scripted list of statuses."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.hits = 0
        self.headers = []
        peer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                peer.hits += 1
                peer.headers.append(dict(self.headers))
                status = peer.statuses.pop(0) if peer.statuses else 200
                body = json.dumps(CLOCK if status == 200 else {"code": status, "message": "nope"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_trading_client_retries_429_only(monkeypatch):
    with _Peer([429, 429, 200]) as peer:
        client = make_trading_client(KEY, SECRET, peer.url, retry_wait_s=0.01)
        assert client.get_clock().is_open is True
        assert peer.hits == 3
        assert peer.headers[0]["APCA-API-KEY-ID"] == KEY
    from alpaca.common.exceptions import APIError

    with _Peer([504, 200]) as peer:
        client = make_trading_client(KEY, SECRET, peer.url, retry_wait_s=0.01)
        with pytest.raises(APIError):
            client.get_clock()  # 504 may have done the work: not the SDK's call to retry
        assert peer.hits == 1
    with _Peer([429, 429, 429, 429]) as peer:
        client = make_trading_client(KEY, SECRET, peer.url, retry_attempts=0)
        with pytest.raises(APIError):
            client.get_clock()
        assert peer.hits == 1  # 0 means no retry, unlike the SDK constructor


def test_data_client_retries_server_errors():
    with _Peer([503, 504, 200]) as peer:
        client = make_data_client(KEY, SECRET, peer.url, retry_wait_s=0.01)
        assert client._request("GET", "/clock")["is_open"] is True
        assert peer.hits == 3


def test_feed_setting_becomes_a_request_alpaca_py_accepts():
    from alpaca.data.enums import DataFeed
    from alpaca.data.requests import StockBarsRequest
    from alpaca.data.timeframe import TimeFrame

    assert data_feed("iex") is DataFeed.IEX and data_feed("sip") is DataFeed.SIP
    # "test" is the streams' test feed: REST has no such feed, so the account's default is asked.
    assert data_feed("test") is None
    for feed in ("iex", "sip", "test"):
        StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, feed=data_feed(feed))
    with pytest.raises(ValueError):  # what the raw setting did for "test"
        StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, feed="test")


def test_every_call_has_a_timeout():
    # Accepts TCP connections, never answers: only a read timeout ends the call.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    try:
        url = f"http://127.0.0.1:{lsock.getsockname()[1]}"
        client = make_trading_client(KEY, SECRET, url, timeout_s=0.3, connect_timeout_s=0.3)
        assert isinstance(client._session, TimeoutSession)
        t0 = time.monotonic()
        with pytest.raises(requests.exceptions.Timeout):
            client.get_clock()
        assert time.monotonic() - t0 < 3
    finally:
        lsock.close()


def test_timeout_session_keeps_explicit_timeouts(monkeypatch):
    seen = []
    monkeypatch.setattr(requests.Session, "request", lambda self, m, u, *a, **kw: seen.append(kw.get("timeout")))
    s = TimeoutSession((1, 2))
    s.request("GET", "http://x")
    s.request("GET", "http://x", timeout=9)
    assert seen == [(1, 2), 9]


def test_a_long_configured_timeout_is_busy_up_to_the_cap_not_an_error():
    # An actor's thread declares each request busy for its connect + read
    # timeouts; past fence.MAX_BUSY_S that declaration raised ValueError, so
    # every REST call failed once an operator set a long read timeout.
    from stockade.supervisors import fence

    token = fence.FenceToken("worker", 1, lambda: True)
    fence.bind(token)
    try:
        with _Peer([200]) as peer:
            resp = TimeoutSession((1.0, 2 * fence.MAX_BUSY_S)).request("GET", peer.url + "/v2/clock")
        assert resp.status_code == 200 and peer.hits == 1
        assert token.busy_what == "GET /v2/clock"
    finally:
        fence.bind(None)


def test_secrets_not_logged_by_factories(caplog):
    caplog.set_level(logging.DEBUG)
    make_trading_client(KEY, SECRET, "http://127.0.0.1:9")
    assert SECRET not in caplog.text
