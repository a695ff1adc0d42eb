"""The older Python SDK, alpaca-trade-api 3.2.0, against the venue (in its own virtual environment).

Its trade stream connects to /stream/ (trailing slash), its market data comes
from APCA_API_DATA_URL, set before the SDK is imported (here: in the client
process's environment). See external_clients.py for how the client runs.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from external_clients import ATA_DIR, ata_python_or_skip, run_client


def test_alpaca_trade_api(venue):
    python = ata_python_or_skip()
    cfg = venue.ctx.config
    r = run_client(
        [python, str(ATA_DIR / "client.py")],
        {
            "VENUE_URL": venue.base_url,
            "VENUE_KEY": cfg.api_key,
            "VENUE_SECRET": cfg.api_secret,
            "APCA_API_DATA_URL": venue.base_url,
        },
        ATA_DIR,
    )
    assert r["account"] == {"cash": "100000", "status": "ACTIVE"}
    clock = r["clock"]
    assert clock["is_open"] == "True"
    assert (
        datetime.fromisoformat(clock["timestamp"])
        < datetime.fromisoformat(clock["next_close"])
        < datetime.fromisoformat(clock["next_open"])
    )

    assert r["trade_stream"] == {"events": ["new", "fill"], "fill_qty": "2", "client_order_id": "ata-buy"}
    assert r["data_stream"]["symbol"] == "AAPL" and 0 < r["data_stream"]["bid"] < r["data_stream"]["ask"]
    assert r["position"] == {"qty": "2"}

    t = r["trailing_stop"]
    assert (t["type"], t["trail_price"], t["replaced_trail_price"]) == ("trailing_stop", "50", "60")
    assert float(t["stop_price"]) == pytest.approx(float(t["hwm"]) - 50, abs=0.005)
    assert r["oco"] == {"order_class": "oco", "legs": 1, "leg_after": "canceled"}
    n = r["notional"]
    assert n["qty"] is None and n["notional"] == "250" and n["filled_qty"] == n["position_qty"]

    e = r["errors"]
    assert e["get_position"] == {"status": 404, "code": 40410000, "message": "position does not exist"}
    assert e["close_position"] == {"status": 404, "code": 40410000, "message": "position not found: SPY"}
    assert e["notional_and_qty"]["status"] == 400
    assert e["oto_both_legs"]["status"] == 422

    h = r["historical"]
    assert h["quotes"] == 40 and h["trades"] == 13 and h["multi_quotes"] == {"AAPL": 40, "MSFT": 40}
    assert set(h["first_trade"]) >= {"c", "i", "p", "s", "t", "x", "z"}
    assert r["close"] == {"side": "sell"}
