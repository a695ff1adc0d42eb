"""EmergencyStop against a real in-process venue (real alpaca-py client): a Flatten
closes everything and leaves the trading state alone; a Kill closes everything
and leaves it HALTED."""

from __future__ import annotations

import secrets

import pytest
from waiting import wait_for

from stockade.actors.emergency_stop import EmergencyStop
from stockade.actors.services import BrokerAccess, Services
from stockade.broker.rest import BrokerEndpoints
from stockade.codecs.messages import Flatten, Kill
from stockade.ops.settings import EmergencySettings, Settings
from stockade.storage.store import Store
from stockade.supervisors.context import ActorContext
from stockade.supervisors.faults import FaultInjector
from stockade.supervisors.router import Router
from stockade.venue.config import VenueConfig
from stockade.venue.server import start_venue


@pytest.fixture
def world(tmp_path):
    key, secret = "PK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    venue = start_venue(VenueConfig(port=0, seed=5, api_key=key, api_secret=secret, symbols=("AAPL", "SPY"),
                                    quote_rate_hz=4.0, rate_limit_per_min=100_000))
    store = Store.open(tmp_path / "data")
    url = venue.base_url
    access = BrokerAccess("embedded", BrokerEndpoints(url, url, url + "/v2/iex", url + "/stream"), key, secret)
    settings = Settings(emergency=EmergencySettings(attempts=5, retry_interval_s=0.2, flat_timeout_s=10.0))
    svc = Services(settings=settings, store=store, broker=access, faults=FaultInjector())
    router = Router()
    gen = router.next_generation("emergency_stop")
    ref = EmergencyStop.start(ActorContext(name="emergency_stop", generation=gen, router=router,
                                           notify=lambda _m: None, extras={"services": svc}))
    router.register("emergency_stop", ref, gen)
    try:
        yield svc, router, access.trading_client()
    finally:
        ref.stop(timeout=10)
        store.close()
        venue.stop(timeout=10)


def _hold(client, symbol: str, qty: int) -> None:
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest

    client.submit_order(MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    wait_for(lambda: any(p.symbol == symbol for p in client.get_all_positions()), 10, 0.05, f"{symbol} held")


def test_flatten_closes_everything_without_halting(world):
    svc, router, client = world
    _hold(client, "AAPL", 10)
    _hold(client, "SPY", 3)
    future = router.ask("emergency_stop", Flatten("10 min to the close", "risk_guard:flatten"), timeout=10)
    report = future.result(timeout=30)
    assert report.flat
    assert client.get_all_positions() == []
    assert svc.trading_state().state == "ACTIVE"


def test_kill_closes_everything_and_halts(world):
    svc, router, client = world
    _hold(client, "AAPL", 4)
    future = router.ask("emergency_stop", Kill("loss breaker: test", "risk_guard:loss_breaker"), timeout=10)
    assert svc.trading_state().state == "HALTED"  # persisted before the answer
    assert future.result(timeout=30).flat
    assert client.get_all_positions() == []
