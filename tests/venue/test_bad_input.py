"""Hostile or broken input gets Alpaca-shaped errors and never takes the venue down."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import websockets
from venue_helpers import HTTP_TIMEOUT_S, http

WS_TIMEOUT_S = 10.0


def still_up(venue) -> None:
    r = http(venue, "GET", "/v2/account")
    assert r.status_code == 200 and r.json()["status"] == "ACTIVE"


def order(**kw):
    body = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}
    body.update(kw)
    return body


def test_malformed_json_is_400(venue):
    r = http(
        venue, "POST", "/v2/orders", data=b'{"symbol": "AAPL", "qty": ', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["code"] == 40010000
    r = http(venue, "POST", "/v2/orders", json=["not", "an", "object"])
    assert r.status_code == 400 and r.json()["code"] == 40010000
    r = http(venue, "POST", "/v2/orders", data=b"\xff\xfe\x00garbage")
    assert r.status_code == 400
    still_up(venue)


@pytest.mark.parametrize(
    "body, status, code",
    [
        (order(symbol="ZZZZ"), 422, 40010001),
        (order(qty="-5"), 422, 40010001),
        (order(qty=0), 422, 40010001),
        (order(qty="abc"), 422, 40010001),
        (order(qty=1.5, time_in_force="gtc"), 422, 40010001),  # fractional orders are DAY orders
        (order(qty="0.0000000001"), 422, 40010001),  # more than 9 decimals
        (order(qty="NaN"), 422, 40010001),
        (order(qty=None), 422, 40010001),
        (order(side="up"), 422, 40010001),
        (order(type="market_maker"), 422, 40010001),
        (order(time_in_force="forever"), 422, 40010001),
        (order(type="limit"), 422, 40010001),
        (order(type="limit", limit_price="-1"), 422, 40010001),
        (order(type="limit", limit_price="10.123"), 422, 42210000),
        (order(type="limit", limit_price={"x": 1}), 422, 40010001),
        (order(client_order_id="x" * 200), 422, 40010001),
        (order(symbol=12), 422, 40010001),
        (order(order_class="bracket", take_profit="high"), 422, 40010001),
    ],
)
def test_invalid_orders_are_422(venue, body, status, code):
    r = http(venue, "POST", "/v2/orders", json=body)
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert isinstance(r.json()["message"], str)
    if body.get("symbol") == "ZZZZ":
        assert r.json()["message"] == "asset not found"


def test_error_responses_carry_rate_limit_headers(venue):
    r = http(venue, "GET", "/v2/orders/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404 and r.json()["code"] == 40410000, r.text
    assert int(r.headers["X-RateLimit-Remaining"]) >= 0
    assert "X-RateLimit-Limit" in r.headers and "X-RateLimit-Reset" in r.headers
    r = http(venue, "POST", "/v2/orders", json=order(symbol="ZZZZ"))
    assert r.status_code == 422 and "X-RateLimit-Remaining" in r.headers


def test_oversize_body_is_413(venue):
    big = {"symbol": "AAPL", "pad": "x" * (venue.ctx.config.max_body_bytes + 10)}
    r = http(venue, "POST", "/v2/orders", json=big)
    assert r.status_code == 413 and r.json()["code"] == 41300000
    still_up(venue)


def test_auth_missing_unknown_path_wrong_method(venue):
    import requests

    r = requests.get(venue.base_url + "/v2/account", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 401 and r.json() == {"code": 40110000, "message": "request is not authorized"}
    r = http(venue, "GET", "/v2/nowhere")
    assert r.status_code == 404 and r.json()["code"] == 40410000
    r = http(venue, "PUT", "/v2/account")
    assert r.status_code == 405 and "code" in r.json()
    r = http(venue, "GET", "/v2/orders/not-a-uuid")
    assert r.status_code == 404
    r = http(venue, "GET", "/v2/orders", params={"status": "weird"})
    assert r.status_code == 422
    r = http(venue, "GET", "/v2/orders", params={"after": "yesterday"})
    assert r.status_code == 422
    r = http(venue, "DELETE", "/v2/positions/AAPL", params={"percentage": "500"})
    assert r.status_code == 422
    r = http(venue, "POST", "/admin/faults", json={"no_such_knob": 1})
    assert r.status_code == 422
    r = http(venue, "POST", "/admin/faults", json={"latency_ms": "slow"})
    assert r.status_code == 422
    still_up(venue)


def test_handler_crash_is_500_and_venue_survives(venue):
    def boom(*a, **kw):
        raise RuntimeError("injected bug")

    original = venue.ctx.exchange.account_view
    venue.call(lambda: setattr(venue.ctx.exchange, "account_view", boom))
    try:
        r = http(venue, "GET", "/v2/account")
        assert r.status_code == 500 and r.json()["code"] == 50010000
    finally:
        venue.call(lambda: setattr(venue.ctx.exchange, "account_view", original))
    still_up(venue)


def test_http_garbage_on_the_socket(venue):
    with socket.create_connection((venue.host, venue.port), timeout=HTTP_TIMEOUT_S) as s:
        s.sendall(b"\x00\x01\x02 NOT HTTP AT ALL\r\n\r\n")
        try:
            s.recv(1024)
        except (TimeoutError, ConnectionResetError):
            pass
    still_up(venue)


async def _garbage_session(venue) -> list[dict]:
    cfg = venue.ctx.config
    replies = []
    async with websockets.connect(venue.trading_stream_url, open_timeout=WS_TIMEOUT_S) as ws:
        for frame in (
            b"\x00\xff\xfe",
            "not json",
            "[1,2,3]",
            '{"action": 5}',
            '{"action":"listen","data":{"streams":["trade_updates"]}}',
        ):
            await ws.send(frame)
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)))
        await ws.send(
            json.dumps({"action": "authenticate", "data": {"key_id": cfg.api_key, "secret_key": cfg.api_secret}})
        )
        replies.append(json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)))
        await ws.send(json.dumps({"action": "listen", "data": {"streams": "trade_updates"}}))
        replies.append(json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)))
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates", "bogus"]}}))
        replies.append(json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)))
    return replies


def test_garbage_websocket_frames_on_stream(venue):
    replies = asyncio.run(_garbage_session(venue))
    assert replies[0]["data"] == {"error": "invalid data provided"}
    assert replies[3]["data"] == {"error": "invalid data provided"}
    assert replies[4] == {"stream": "authorization", "data": {"action": "listen", "status": "unauthorized"}}
    assert replies[5]["data"]["status"] == "authorized"
    assert "error" in replies[6]["data"]
    assert replies[7] == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    still_up(venue)


async def _oversize_frame(venue) -> bool:
    async with websockets.connect(venue.trading_stream_url, open_timeout=WS_TIMEOUT_S, max_size=None) as ws:
        await ws.send("x" * (1024 * 1024))
        try:
            await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)
        except websockets.ConnectionClosed:
            return True
        return False


def test_oversize_websocket_frame_closes_only_that_socket(venue):
    assert asyncio.run(_oversize_frame(venue))
    still_up(venue)


async def _no_auth(venue) -> bool:
    async with websockets.connect(venue.trading_stream_url, open_timeout=WS_TIMEOUT_S) as ws:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S)
        except websockets.ConnectionClosed:
            return True


def test_stream_without_auth_times_out(tmp_path, venue_keys):
    from stockade.venue.config import VenueConfig
    from stockade.venue.server import start_venue

    key, secret = venue_keys
    handle = start_venue(VenueConfig(api_key=key, api_secret=secret, symbols=("AAPL",), auth_timeout_s=0.3))
    try:
        assert asyncio.run(_no_auth(handle))
        still_up(handle)
    finally:
        handle.stop()


# ---- command line ---------------------------------------------------------------------------------


def test_cli_usage_errors_exit_2(monkeypatch, capsys):
    from stockade.venue.cli import main

    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    assert main(["--bogus"]) == 2
    assert main(["--port", "notanumber"]) == 2
    assert main(["--clock", "lunar"]) == 2
    capsys.readouterr()
    assert main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "APCA_API_KEY_ID" in err[0]
    assert main(["--api-key", "K", "--api-secret", "S", "--port", "70000"]) == 2
    assert main(["--api-key", "K", "--api-secret", "S", "--symbols", ","]) == 2
    assert main(["--api-key", "K", "--api-secret", "S", "--settings", "/nonexistent/settings.toml"]) == 2


def test_cli_settings_table_gives_defaults_flags_win(tmp_path):
    import argparse

    from stockade.venue.cli import UsageError, build_config

    settings = tmp_path / "settings.toml"
    settings.write_text('[venue]\nseed = 99\nclock = "nyse"\nquote_rate_hz = 8.0\napi_secret = "ignored"\n')
    args = argparse.Namespace(
        settings=str(settings),
        host=None,
        port=None,
        seed=5,
        data_dir=None,
        quote_rate=None,
        clock=None,
        symbols="aapl",
        api_key=None,
        api_secret=None,
    )
    cfg = build_config(args, {"APCA_API_KEY_ID": "K", "APCA_API_SECRET_KEY": "S"})
    assert (cfg.seed, cfg.clock, cfg.quote_rate_hz, cfg.symbols, cfg.api_secret) == (5, "nyse", 8.0, ("AAPL",), "S")
    settings.write_text('[venue]\nseed = "seven"\n')
    args.seed = None
    with pytest.raises(UsageError):
        build_config(args, {"APCA_API_KEY_ID": "K", "APCA_API_SECRET_KEY": "S"})


def test_cli_serves_until_sigterm(tmp_path, venue_keys):
    import os
    import re
    import selectors
    import signal
    import subprocess
    import sys

    import requests

    key, secret = venue_keys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "APCA_API_KEY_ID": key, "APCA_API_SECRET_KEY": secret}
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(root, "run.py"),
            "venue",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
            "--symbols",
            "AAPL,MSFT",
            "--quote-rate",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=30), "venue printed nothing"
        line = proc.stdout.readline()
        assert secret not in line
        base = re.search(r"rest=(\S+)", line).group(1)
        assert re.search(r"trading_stream=ws://127\.0\.0\.1:\d+/stream", line)
        assert re.search(r"data_stream=ws://127\.0\.0\.1:\d+/v2/iex", line)
        r = requests.get(
            base + "/v2/account",
            timeout=HTTP_TIMEOUT_S,
            headers={"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret},
        )
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert secret not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_upgrade_header_does_not_bypass_rest_auth(venue):
    import requests

    r = requests.get(
        venue.base_url + "/v2/account",
        timeout=HTTP_TIMEOUT_S,
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )
    assert r.status_code == 401
