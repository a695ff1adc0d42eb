"""EmergencyStop against a real in-process venue (real alpaca-py client): a Flatten
closes everything and leaves the trading state alone; a Kill closes everything
and leaves it HALTED."""

from __future__ import annotations

import pytest
from actor_probes import hold, start_actor, venue_services

from stockade.actors.emergency_stop import EmergencyStop
from stockade.codecs.messages import Flatten, Kill
from stockade.config.settings import EmergencySettings, Settings
from stockade.supervisors.router import Router


@pytest.fixture
def world(tmp_path):
    settings = Settings(emergency=EmergencySettings(attempts=5, retry_interval_s=0.2, flat_timeout_s=10.0))
    with venue_services(tmp_path / "data", settings, seed=5) as svc:
        router = Router()
        ref = start_actor(router, EmergencyStop, "emergency_stop", {"services": svc})
        try:
            yield svc, router, svc.broker.trading_client()
        finally:
            ref.stop(timeout=10)


def test_flatten_closes_everything_without_halting(world):
    svc, router, client = world
    hold(client, "AAPL", 10)
    hold(client, "SPY", 3)
    future = router.ask("emergency_stop", Flatten("10 min to the close", "risk_guard:flatten"), timeout=10)
    report = future.result(timeout=30)
    assert report.flat
    assert client.get_all_positions() == []
    assert svc.trading_state().state == "ACTIVE"


def test_kill_closes_everything_and_halts(world):
    svc, router, client = world
    hold(client, "AAPL", 4)
    future = router.ask("emergency_stop", Kill("loss breaker: test", "risk_guard:loss_breaker"), timeout=10)
    assert svc.trading_state().state == "HALTED"  # persisted before the answer
    assert future.result(timeout=30).flat
    assert client.get_all_positions() == []
