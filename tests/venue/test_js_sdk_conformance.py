"""The official JavaScript SDK (@alpacahq/alpaca-trade-api 3.1.3 and 4.0.2) against the venue.

The venue runs with a generated self-signed certificate: the 3.x market-data
stream only speaks wss://, and Node trusts the written CA through
NODE_EXTRA_CA_CERTS. Each script (tests/venue/js) covers REST, both streams
and error cases; see external_clients.py for how they run.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
import pytest
from external_clients import JS_DIR, node_or_skip, run_client

from stockade.venue.server import start_venue


@pytest.fixture
def tls_venue(venue_config, tmp_path):
    handle = start_venue(msgspec.structs.replace(venue_config, tls_self_signed_dir=str(tmp_path / "tls")))
    try:
        yield handle
    finally:
        handle.stop(timeout=10)


def run_sdk(script: str, venue, min_node: int) -> dict:
    node = node_or_skip(min_node)
    cfg = venue.ctx.config
    env = {
        "VENUE_URL": venue.base_url,
        "VENUE_KEY": cfg.api_key,
        "VENUE_SECRET": cfg.api_secret,
        "NODE_EXTRA_CA_CERTS": f"{cfg.tls_self_signed_dir}/ca.pem",
    }
    return run_client([node, script], env, JS_DIR)


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_sdk_3(tls_venue):
    r = run_sdk("sdk3.js", tls_venue, 16)
    assert r["account"] == {"cash": "100000", "status": "ACTIVE"}
    clock = r["clock"]
    assert clock["is_open"] is True
    assert iso(clock["timestamp"]) < iso(clock["next_close"]) < iso(clock["next_open"])
    assert r["trade_stream"] == {"streams": ["trade_updates"]}
    assert r["market_buy"]["fill"] == {
        "event": "fill",
        "qty": "2",
        "position_qty": "2",
        "order_status": "filled",
        "client_order_id": "js3-buy",
    }
    assert r["position"] == {"qty": "2", "qty_available": "2"}

    t = r["trailing_stop"]
    assert (t["type"], t["trail_price"], t["replaced_trail_price"]) == ("trailing_stop", "50", "60")
    assert float(t["stop_price"]) == pytest.approx(float(t["hwm"]) - 50, abs=0.005)
    assert float(t["replaced_stop_price"]) == pytest.approx(float(t["replaced_hwm"]) - 60, abs=0.005)
    assert r["oco"] == {"order_class": "oco", "legs": 1, "leg_type": "stop", "parent_after": "canceled"}
    assert r["oto"] == {"order_class": "oto", "legs": [["stop", "held"]]}
    n = r["notional"]
    assert n["qty"] is None and n["notional"] == "100" and n["position_qty"] == n["filled_qty"]
    assert float(n["filled_qty"]) * float(n["filled_avg_price"]) == pytest.approx(100, abs=0.01)

    e = r["errors"]
    assert e["get_position"] == {"status": 404, "body": {"code": 40410000, "message": "position does not exist"}}
    assert e["close_position"] == {"status": 404, "body": {"code": 40410000, "message": "position not found: SPY"}}
    assert e["two_trails"]["status"] == 422 and e["fractional_gtc"]["status"] == 422
    assert e["fractional_gtc"]["body"]["message"] == "fractional orders must be DAY orders"
    assert e["bad_key"] == {"status": 401, "body": {"code": 40110000, "message": "request is not authorized"}}

    h = r["historical"]  # getQuotesV2 / getTradesV2 / getMultiQuotesV2 page through the venue
    assert h["quotes"] == 40 and h["trades"] == 9 and h["multi"] == {"AAPL": 40, "MSFT": 40} and h["bars"] == 11
    assert h["first_quote"]["BidPrice"] < h["first_quote"]["AskPrice"]
    assert h["first_quote"]["Timestamp"].startswith("2025-03-04T15:00")
    assert r["data_stream"]["symbol"] == "AAPL" and 0 < r["data_stream"]["bid"] < r["data_stream"]["ask"]
    assert r["close"] == {"side": "sell", "qty": "2", "type": "market"}


def test_sdk_4(tls_venue):
    r = run_sdk("sdk4.js", tls_venue, 20)  # 4.x: "Node.js >= 20 is required"
    assert r["account"] == {"cash": "100000", "status": "ACTIVE"}
    clock = r["clock"]
    assert clock["is_open"] is True
    assert iso(clock["timestamp"]) < iso(clock["next_close"]) < iso(clock["next_open"])
    assert r["trade_stream"] == {"streams": ["trade_updates"]}
    assert r["market_buy"]["fill"] == {"event": "fill", "order_status": "filled", "client_order_id": "js4-buy"}
    assert r["position"] == {"qty": "2"}
    t = r["trailing_stop"]
    assert (t["type"], t["trail_percent"]) == ("trailing_stop", "30")
    assert float(t["stop_price"]) == pytest.approx(float(t["hwm"]) * 0.7, abs=0.006)
    assert r["oco"] == {"order_class": "oco", "legs": 1}
    assert r["notional"]["notional"] == "100" and 0 < float(r["notional"]["filled_qty"]) < 1

    e = r["errors"]
    assert e["get_position"] == {"status": 404, "code": 40410000, "message": "position does not exist"}
    assert e["close_position"] == {"status": 404, "code": 40410000, "message": "position not found: SPY"}
    assert e["fractional_limit"]["status"] == 422
    assert e["fractional_limit"]["message"] == "fractional orders must be DAY orders"

    h = r["historical"]
    assert h["quotes"] == 40 and h["trades"] == {"AAPL": 40, "MSFT": 40}
    assert h["page_size"] == 7 and h["next_page_token"]
    assert r["data_stream"]["symbol"] == "AAPL" and 0 < r["data_stream"]["bid"] < r["data_stream"]["ask"]
    assert r["close"] == {"side": "sell", "qty": "2"}
