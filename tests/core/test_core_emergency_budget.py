"""The kill switch spends the shared REST budget of its key: every liquidation
request takes a token (the reserve included), so the order manager and the
reconciler see it, and none is ever held back or refused, even with the
bucket empty. Real alpaca-py clients against the real in-process venue."""

from __future__ import annotations

import secrets

import pytest
from waiting import wait_for

from stockade.actors.emergency_stop import EmergencyStop, emergency_liquidation, liquidation_client
from stockade.actors.services import BrokerAccess, Services
from stockade.broker.rest import BrokerEndpoints
from stockade.broker.token_bucket import BudgetSpent, TokenBucket, limit_client, shared_bucket
from stockade.codecs.messages import Kill
from stockade.ops.settings import EmergencySettings, OrdersSettings, Settings
from stockade.storage.store import Store
from stockade.supervisors.context import ActorContext
from stockade.supervisors.faults import FaultInjector
from stockade.supervisors.router import Router
from stockade.venue.config import VenueConfig
from stockade.venue.server import start_venue

# 6 a minute refills 0.1 token a second: a liquidation of a few seconds cannot
# earn back what it spends, so the counts below are exact enough to assert.
RATE, RESERVE = 6, 2


@pytest.fixture
def world(tmp_path):
    key, secret = "PK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    venue = start_venue(VenueConfig(port=0, seed=7, api_key=key, api_secret=secret, symbols=("AAPL", "SPY"),
                                    quote_rate_hz=4.0, rate_limit_per_min=100_000))
    store = Store.open(tmp_path / "data")
    url = venue.base_url
    access = BrokerAccess("embedded", BrokerEndpoints(url, url, url + "/v2/iex", url + "/stream"), key, secret)
    settings = Settings(orders=OrdersSettings(rate_limit_per_min=RATE, emergency_reserve=RESERVE),
                        emergency=EmergencySettings(attempts=5, retry_interval_s=0.2, flat_timeout_s=10.0))
    svc = Services(settings=settings, store=store, broker=access, faults=FaultInjector())
    try:
        yield svc, access.trading_client()  # the test's own client, outside the budget
    finally:
        store.close()
        venue.stop(timeout=10)


def _hold(client, symbol: str, qty: int) -> None:
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest

    client.submit_order(MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    wait_for(lambda: any(p.symbol == symbol for p in client.get_all_positions()), 10, 0.05, f"{symbol} held")


def test_emergency_spending_takes_the_reserve_then_overdraws_never_refuses():
    clock_t = [0.0]
    bucket = TokenBucket(60, reserve=2, capacity=3, clock=lambda: clock_t[0])
    assert bucket.take() and not bucket.take()  # ordinary callers stop at the reserve
    assert [bucket.take_emergency() for _ in range(3)] == [True, True, False]
    assert (bucket.taken, bucket.overdrawn, bucket.refused) == (3, 1, 1)  # the overdraft is no refusal
    clock_t[0] += 1.0  # 1 token a second
    assert bucket.take_emergency() and bucket.tokens == 0.0


def test_kill_spends_the_shared_bucket_reserve_included(world):
    svc, client = world
    router = Router()
    gen = router.next_generation("emergency_stop")
    ref = EmergencyStop.start(ActorContext(name="emergency_stop", generation=gen, router=router,
                                           notify=lambda _m: None, extras={"services": svc}))
    router.register("emergency_stop", ref, gen)
    try:
        _hold(client, "AAPL", 5)
        _hold(client, "SPY", 2)
        # The same bucket the order manager and the reconciler draw from.
        bucket = shared_bucket(svc.broker.key, RATE, RESERVE)
        ordinary = limit_client(svc.broker.trading_client(), bucket, max_wait_s=0.0)
        while bucket.take():  # a busy strategy spent everything down to the reserve
            pass
        with pytest.raises(BudgetSpent):
            ordinary.get_account()
        taken, overdrawn = bucket.taken, bucket.overdrawn

        report = router.ask("emergency_stop", Kill("budget test", "test"), timeout=10).result(timeout=30)

        assert report.flat and client.get_all_positions() == []
        assert bucket.taken - taken >= RESERVE  # the liquidation spent the reserve...
        assert bucket.overdrawn - overdrawn >= 1  # ...and went on with the bucket empty
        assert bucket.tokens < RESERVE + 1  # what it spent is gone for the others
        with pytest.raises(BudgetSpent):
            ordinary.get_account()
    finally:
        ref.stop(timeout=10)


def test_liquidation_without_an_actor_is_counted_and_not_refused_on_an_empty_bucket(world):
    """The root's exhaustion hook and `ctl kill`'s fallback build their own client."""
    svc, client = world
    _hold(client, "AAPL", 3)
    bucket = shared_bucket(svc.broker.key, RATE, RESERVE)
    while bucket.take_emergency():
        pass
    taken, overdrawn = bucket.taken, bucket.overdrawn

    report = emergency_liquidation(svc, "supervision gave up", "supervision")

    assert report.flat and client.get_all_positions() == []
    assert svc.trading_state().state == "HALTED"
    # cancel, close, then at least one positions + orders check: every one counted
    # and sent, though the refill (0.1/s) left at most a stray token for them.
    assert (bucket.taken - taken) + (bucket.overdrawn - overdrawn) >= 4
    assert bucket.overdrawn - overdrawn >= 3
    assert liquidation_client(svc)._retry > 0  # its SDK 429 retries stay on (own thread)
