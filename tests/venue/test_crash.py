"""The scripted price crash: the simulator's move, and the admin endpoint that scripts it."""

from __future__ import annotations

import math

import pytest
from venue_helpers import http
from waiting import wait_for

from stockade.venue.market import MarketSimulator

T0 = 1_700_000_000_000_000_000


def test_crash_moves_the_price_process_and_it_stays_down():
    now = [T0]
    sim = MarketSimulator(("AAPL", "MSFT"), seed=3, quote_rate_hz=10.0, now_fn=lambda: now[0])
    before = sim.latest_quote("AAPL").bid
    moved = sim.crash(30.0, ["AAPL"])
    assert set(moved) == {"AAPL"}
    for _ in range(200):  # 20 simulated seconds: no reversion to the old level
        now[0] += 100_000_000
        sim.step()
    q = sim.latest_quote("AAPL")
    assert q.ask < before * 0.8, (before, q)
    assert math.isclose(moved["AAPL"], q.bid, rel_tol=0.05)
    assert sim.latest_quote("MSFT").bid > 0  # untouched symbols keep trading


@pytest.mark.parametrize("pct, symbols", [(0.0, None), (100.0, None), (-5.0, None), (10.0, ["ZZZZ"])])
def test_crash_refuses_bad_input(pct, symbols):
    sim = MarketSimulator(("AAPL",), seed=3, now_fn=lambda: T0)
    with pytest.raises(ValueError):
        sim.crash(pct, symbols)


def test_admin_crash_endpoint_moves_the_quotes_and_the_account(venue):
    before = venue.ctx.market.latest_quote("SPY").bid
    r = http(venue, "POST", "/admin/crash", json={"pct": 25, "symbols": ["SPY"]})
    assert r.status_code == 200, r.text
    assert set(r.json()["crashed"]) == {"SPY"}
    wait_for(lambda: venue.ctx.market.latest_quote("SPY").ask < before * 0.85, 30, 0.1, "crashed SPY quote")
    for body in ({"pct": "lots"}, {"pct": 150}, {"pct": 10, "symbols": ["NOPE"]}, ["pct"]):
        bad = http(venue, "POST", "/admin/crash", json=body)
        assert bad.status_code == 422, (body, bad.text)
    assert http(venue, "POST", "/admin/crash", json={"pct": 10}, headers={"APCA-API-KEY-ID": "x"}).status_code in (
        401,
        403,
    )
