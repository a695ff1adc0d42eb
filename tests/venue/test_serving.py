"""How the venue serves other clients: /stream/, TLS, the access log, Alpaca's not-found wording."""

from __future__ import annotations

import json
import logging
import os
import ssl
import stat

import msgspec
import pytest
import requests
import trustme
from venue_helpers import HTTP_TIMEOUT_S, headers, http
from websockets.sync.client import connect

from stockade.venue.cli import UsageError, _parser, build_config
from stockade.venue.server import start_venue

ENV = {"APCA_API_KEY_ID": "K", "APCA_API_SECRET_KEY": "S"}


def authorize(url: str, venue, **kw) -> dict:
    """Authenticate on a trade-updates socket; the server's reply."""
    cfg = venue.ctx.config
    with connect(url, open_timeout=HTTP_TIMEOUT_S, close_timeout=HTTP_TIMEOUT_S, **kw) as ws:
        ws.send(json.dumps({"action": "authenticate", "data": {"key_id": cfg.api_key, "secret_key": cfg.api_secret}}))
        return json.loads(ws.recv(timeout=HTTP_TIMEOUT_S))


def test_trade_stream_also_at_trailing_slash(venue):
    # alpaca-trade-api (Python) connects to ".../stream/"; the venue answered 404 there.
    for url in (venue.trading_stream_url, venue.trading_stream_url + "/"):
        assert authorize(url, venue)["data"]["status"] == "authorized"


def test_not_found_wording_differs_for_get_and_close(venue):
    got = http(venue, "GET", "/v2/positions/AAPL")
    assert (got.status_code, got.json()) == (404, {"code": 40410000, "message": "position does not exist"})
    closed = http(venue, "DELETE", "/v2/positions/AAPL")
    assert (closed.status_code, closed.json()) == (404, {"code": 40410000, "message": "position not found: AAPL"})


# ---- access log ----------------------------------------------------------------------------------


def test_access_log_one_line_per_request_without_secrets(venue_config, caplog):
    handle = start_venue(msgspec.structs.replace(venue_config, access_log=True))
    try:
        with caplog.at_level(logging.INFO, logger="stockade.venue.access"):
            http(handle, "GET", "/v2/account")
            http(handle, "GET", "/v2/orders", params={"status": "all", "symbols": "AAPL"})
            http(handle, "GET", "/v2/nowhere")
            requests.get(
                handle.base_url + "/v2/account",
                timeout=HTTP_TIMEOUT_S,
                headers={"APCA-API-KEY-ID": "wrong", "APCA-API-SECRET-KEY": "nope"},
            )
    finally:
        handle.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "stockade.venue.access"]
    assert [line.rsplit(" ", 1)[0] for line in lines] == [
        "GET /v2/account 200",
        "GET /v2/orders 200",
        "GET /v2/nowhere 404",
        "GET /v2/account 401",
    ]
    assert all(line.endswith("ms") for line in lines)
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "stockade.venue.access")
    secret, key = venue_config.api_secret, venue_config.api_key
    assert not any(secret in line or key in line or "status=all" in line for line in lines)


def test_access_log_escapes_control_bytes_in_the_path(venue_config, caplog):
    # aiohttp percent-decodes the path: %0A and %1B reached the log as a real
    # newline (a forged second line) and a terminal escape.
    handle = start_venue(msgspec.structs.replace(venue_config, access_log=True))
    try:
        with caplog.at_level(logging.INFO, logger="stockade.venue.access"):
            got = http(handle, "GET", "/v2/orders/x%0A2026-12-03 10:00:00 INFO forged%1B%5B31m%00")
    finally:
        handle.stop()
    assert got.status_code == 404
    [line] = [r.getMessage() for r in caplog.records if r.name == "stockade.venue.access"]
    assert line.isprintable(), line
    assert line.startswith("GET /v2/orders/x\\n2026-12-03 10:00:00 INFO forged\\x1b[31m\\x00 404 ")


def test_access_log_is_off_when_switched_off(venue, caplog):
    with caplog.at_level(logging.INFO, logger="stockade.venue.access"):
        http(venue, "GET", "/v2/account")
    assert not [r for r in caplog.records if r.name == "stockade.venue.access"]


def test_cli_flags_for_tls_and_access_log(tmp_path):
    args = _parser().parse_args(["--tls-self-signed", str(tmp_path / "tls"), "--no-access-log"])
    cfg = build_config(args, ENV)
    assert cfg.tls_self_signed_dir == str(tmp_path / "tls") and cfg.access_log is False and cfg.tls_enabled
    assert build_config(_parser().parse_args([]), ENV).access_log is True  # on by default when standalone
    with pytest.raises(UsageError):
        build_config(_parser().parse_args(["--tls-cert", "cert.pem"]), ENV)  # no key
    with pytest.raises(UsageError):
        build_config(_parser().parse_args(["--tls-cert", "c", "--tls-key", "k", "--tls-self-signed", "d"]), ENV)


# ---- TLS -------------------------------------------------------------------------------------------


def test_self_signed_tls_with_the_written_ca(venue_config, tmp_path):
    tls_dir = tmp_path / "tls"
    handle = start_venue(msgspec.structs.replace(venue_config, tls_self_signed_dir=str(tls_dir)))
    try:
        ca = tls_dir / "ca.pem"
        assert handle.base_url.startswith("https://") and handle.trading_stream_url.startswith("wss://")
        assert stat.S_IMODE(os.stat(tls_dir / "key.pem").st_mode) == 0o600
        r = requests.get(handle.base_url + "/v2/clock", headers=headers(handle), verify=str(ca), timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200 and r.json()["is_open"] is True
        with pytest.raises(requests.exceptions.SSLError):  # nobody trusts it without the CA file
            requests.get(handle.base_url + "/v2/clock", headers=headers(handle), timeout=HTTP_TIMEOUT_S)
        context = ssl.create_default_context(cafile=str(ca))
        assert authorize(handle.trading_stream_url, handle, ssl=context)["data"]["status"] == "authorized"
        localhost = handle.base_url.replace("127.0.0.1", "localhost")
        assert (
            requests.get(
                localhost + "/v2/account", headers=headers(handle), verify=str(ca), timeout=HTTP_TIMEOUT_S
            ).status_code
            == 200
        )
    finally:
        handle.stop()


def test_tls_with_the_operators_certificate(venue_config, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    handle = start_venue(
        msgspec.structs.replace(venue_config, tls_cert_file=str(cert_file), tls_key_file=str(key_file))
    )
    try:
        r = requests.get(
            handle.base_url + "/v2/account", headers=headers(handle), verify=str(ca_file), timeout=HTTP_TIMEOUT_S
        )
        assert r.status_code == 200
    finally:
        handle.stop()
    with pytest.raises(RuntimeError, match="cannot load TLS certificate"):
        start_venue(
            msgspec.structs.replace(
                venue_config, tls_cert_file=str(key_file), tls_key_file=str(key_file), data_dir=str(tmp_path / "other")
            )
        )
