"""The kill switch spends the shared REST budget of its key: every liquidation
request takes a token (the reserve included), so the order manager and the
reconciler see it, and none is ever held back or refused, even with the
bucket empty. Real alpaca-py clients against the real in-process venue."""

from __future__ import annotations

import pytest
from actor_probes import hold, start_actor, venue_services

from stockade.actors.emergency_stop import EmergencyStop, emergency_liquidation, liquidation_client
from stockade.broker.token_bucket import BudgetSpent, TokenBucket, limit_client, shared_bucket
from stockade.codecs.messages import Kill
from stockade.config.settings import EmergencySettings, OrdersSettings, Settings
from stockade.supervisors.router import Router

# 6 a minute refills 0.1 token a second: a liquidation of a few seconds cannot
# earn back what it spends, so the counts below are exact enough to assert.
RATE, RESERVE = 6, 2


@pytest.fixture
def world(tmp_path):
    settings = Settings(
        orders=OrdersSettings(rate_limit_per_min=RATE, emergency_reserve=RESERVE, protect_reserve=0),
        emergency=EmergencySettings(attempts=5, retry_interval_s=0.2, flat_timeout_s=10.0),
    )
    with venue_services(tmp_path / "data", settings, seed=7) as svc:
        yield svc, svc.broker.trading_client()  # the test's own client, outside the budget


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
    ref = start_actor(router, EmergencyStop, "emergency_stop", {"services": svc})
    try:
        hold(client, "AAPL", 5)
        hold(client, "SPY", 2)
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
    hold(client, "AAPL", 3)
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
