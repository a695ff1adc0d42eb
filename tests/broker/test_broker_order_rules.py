"""The REST budget, rejection reasons, stop coverage and gap classes."""

from __future__ import annotations

import pytest

from stockade.broker.orders import (
    REJECTION_REASONS,
    build_request,
    client_order_id,
    is_not_taken,
    is_retryable,
    rejection_reason,
    replacement_id,
)
from stockade.broker.token_bucket import BudgetSpent, TokenBucket, forget_shared, limit_client, shared_bucket
from stockade.codecs.messages import OrderIntent
from stockade.trading.gap_risk import gap_class, gap_pct
from stockade.trading.ledger import uncovered_qty


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_ordinary_calls_never_spend_the_reserve_emergency_ones_may():
    clock = FakeClock()
    bucket = TokenBucket(60, reserve=3, capacity=5, clock=clock)
    assert [bucket.take() for _ in range(3)] == [True, True, False]  # 5 - 2 = 3 left: the reserve
    assert bucket.available(1, emergency=True) and not bucket.available(1)
    assert [bucket.take(emergency=True) for _ in range(4)] == [True, True, True, False]
    clock.t += 4.0  # 1 token a second
    assert bucket.take(emergency=True) and not bucket.take()
    assert bucket.refused == 3 and bucket.taken == 6


def test_protective_stops_may_spend_the_protection_reserve_entries_may_not():
    """Three floors: entries stop at emergency + protection reserve, protective
    stops at the emergency reserve, the kill switch at nothing."""
    clock = FakeClock()
    bucket = TokenBucket(60, reserve=2, capacity=7, clock=clock, protect_reserve=3)
    assert [bucket.take() for _ in range(3)] == [True, True, False]  # 7 - 2 = 5 left: both reserves
    assert not bucket.available(1) and bucket.available(1, protect=True)
    assert bucket.wait_s() == pytest.approx(1.0) and bucket.wait_s(protect=True) == 0.0
    assert [bucket.take(protect=True) for _ in range(4)] == [True, True, True, False]  # down to the emergency reserve
    assert bucket.available(1, emergency=True) and not bucket.available(1, protect=True)
    assert bucket.take(emergency=True) and bucket.take(emergency=True) and not bucket.take(emergency=True)
    clock.t += 1.0
    assert bucket.take(emergency=True) and not bucket.take(protect=True)
    # A protective acquire waits for its own floor, not the entries' one.
    clock.t += 3.0  # 3 tokens: the emergency reserve (2) plus one
    assert bucket.acquire(0.0, sleep=clock.sleep, protect=True) and not bucket.acquire(0.0, sleep=clock.sleep)


@pytest.mark.parametrize(
    "kw", [{"rate_per_min": 10, "reserve": 2, "protect_reserve": 8}, {"rate_per_min": 10, "protect_reserve": -1}]
)
def test_bucket_rejects_a_bad_protection_reserve(kw):
    with pytest.raises(ValueError, match="protect_reserve"):
        TokenBucket(**kw)


def test_acquire_waits_for_the_refill_up_to_its_limit():
    clock = FakeClock()
    bucket = TokenBucket(60, reserve=0, capacity=1, clock=clock)
    assert bucket.acquire(0.0, sleep=clock.sleep)
    assert not bucket.acquire(0.5, sleep=clock.sleep)  # the next token is 1 s away
    assert clock.t == 1000.0  # and it did not wait for nothing
    assert bucket.acquire(1.0, sleep=clock.sleep)
    assert clock.t == pytest.approx(1001.0)


@pytest.mark.parametrize(
    "kw", [{"rate_per_min": 0}, {"rate_per_min": 10, "reserve": 10}, {"rate_per_min": 10, "reserve": -1}]
)
def test_bucket_rejects_bad_parameters(kw):
    with pytest.raises(ValueError):
        TokenBucket(**kw)


def test_shared_bucket_is_one_per_process_and_key():
    forget_shared()
    assert shared_bucket("k1", 160, 20) is shared_bucket("k1", 160, 20)
    assert shared_bucket("k1", 160, 20) is not shared_bucket("k2", 160, 20)  # Alpaca's budget is per key
    assert shared_bucket("k1", 160, 20) is shared_bucket("k1", 150, 20, protect_reserve=5)
    forget_shared()


def test_shared_bucket_other_settings_keep_what_the_key_spent():
    """Alpaca counts per key: a client of the same key with other limits spends the same budget."""
    forget_shared()
    first = shared_bucket("k1", 60, 5)
    for _ in range(50):
        assert first.take()
    second = shared_bucket("k1", 120, 10, protect_reserve=5)
    assert (second.rate_per_min, second.reserve, second.protect_reserve) == (120.0, 10, 5)
    assert second.tokens < 20  # the 50 spent through `first` are gone for `second` too (a new one: 120)
    assert not second.take()  # ordinary calls leave reserve + protect_reserve (15)
    forget_shared()


def test_limited_client_sends_nothing_once_the_budget_is_spent():
    """Against the real venue: the third submit raises BudgetSpent and the venue never sees it."""
    from stockade.broker.rest import make_trading_client
    from stockade.venue.config import VenueConfig
    from stockade.venue.server import start_venue

    key, secret = "PKBUDGETTEST01", "budget-test-secret-01"
    venue = start_venue(VenueConfig(api_key=key, api_secret=secret, symbols=("AAPL",)))
    try:
        limited = limit_client(
            make_trading_client(key, secret, venue.base_url, timeout_s=5),
            TokenBucket(1, reserve=0, capacity=2),
            max_wait_s=0.0,
        )
        requests = [
            build_request(
                OrderIntent(
                    intent_id=f"b{i}",
                    symbol="AAPL",
                    side="buy",
                    qty=1,
                    order_type="limit",
                    limit_price=1.0,
                    take_profit=None,
                    stop_loss=None,
                    reason="t",
                    proposal_id="",
                    quote_recv_ns=0,
                ),
                client_order_id(f"b{i}"),
            )
            for i in range(3)
        ]
        limited.submit_order(requests[0])
        limited.submit_order(requests[1])
        with pytest.raises(BudgetSpent):
            limited.submit_order(requests[2])
        seen = venue.call(lambda: sorted(o.client_order_id for o in venue.ctx.exchange.orders.values()))
        assert seen == ["stk-b0", "stk-b1"]
        assert limited._retry == 0  # the SDK's in-thread 429 sleeps are off
        # The emergency client is never held back, and what it spends is gone for the others.
        bucket = TokenBucket(60, reserve=1, capacity=2)
        ordinary = limit_client(make_trading_client(key, secret, venue.base_url, timeout_s=5), bucket, 0.0)
        urgent = limit_client(
            make_trading_client(key, secret, venue.base_url, timeout_s=5), bucket, 0.0, emergency=True
        )
        for _ in range(3):
            urgent.get_account()
        with pytest.raises(BudgetSpent):
            ordinary.get_account()
    finally:
        venue.stop()


def test_a_protective_client_is_sent_where_an_ordinary_one_is_refused():
    """Against the real venue: with the bucket down to its reserves, a new
    entry is refused locally (never sent) and a protective stop goes out."""
    from stockade.broker.rest import make_trading_client
    from stockade.venue.config import VenueConfig
    from stockade.venue.server import start_venue

    key, secret = "PKPROTECTTEST1", "protect-test-secret-01"
    venue = start_venue(VenueConfig(api_key=key, api_secret=secret, symbols=("AAPL",)))
    try:
        bucket = TokenBucket(1, reserve=1, capacity=4, protect_reserve=2)  # 1 a minute: no refill to speak of
        entries = limit_client(make_trading_client(key, secret, venue.base_url, timeout_s=5), bucket, 0.0)
        stops = limit_client(make_trading_client(key, secret, venue.base_url, timeout_s=5), bucket, 0.0, protect=True)
        entries.get_account()  # 4 -> 3: the reserves (1 + 2) are all that is left
        entry = build_request(
            OrderIntent(
                intent_id="e1",
                symbol="AAPL",
                side="buy",
                qty=1,
                order_type="limit",
                limit_price=1.0,
                take_profit=None,
                stop_loss=None,
                reason="t",
                proposal_id="",
                quote_recv_ns=0,
            ),
            client_order_id("e1"),
        )
        with pytest.raises(BudgetSpent):
            entries.submit_order(entry)
        stop = build_request(
            OrderIntent(
                intent_id="p1",
                symbol="AAPL",
                side="buy",
                qty=1,
                order_type="stop",
                limit_price=None,
                take_profit=None,
                stop_loss=None,
                reason="t",
                proposal_id="",
                quote_recv_ns=0,
                stop_price=1e6,
            ),
            client_order_id("p1"),
        )
        stops.submit_order(stop)
        stops.get_order_by_client_id("stk-p1")
        with pytest.raises(BudgetSpent):  # the emergency reserve is not the protective stops' to spend
            stops.get_account()
        seen = venue.call(lambda: sorted(o.client_order_id for o in venue.ctx.exchange.orders.values()))
        assert seen == ["stk-p1"]
    finally:
        venue.stop()


@pytest.mark.parametrize(
    ("code", "message", "reason"),
    [
        # Alpaca no longer refuses day trades (FINRA retired the PDT rule): an old code is just "other"
        (40310100, "trade denied due to pattern day trading protection", "other"),
        (40310000, "potential wash trade detected. use complex orders", "wash_trade"),
        (40310000, "insufficient buying power", "buying_power"),
        (40310000, "insufficient qty available for order (requested: 10, available: 0)", "insufficient_qty"),
        (42210000, "order is not cancelable", "other"),
        (None, "", "other"),
    ],
)
def test_rejection_reasons(code, message, reason):
    assert rejection_reason(code, message) == reason
    assert reason in REJECTION_REASONS
    assert "pdt" not in REJECTION_REASONS


def test_real_venue_rejection_is_read_back_as_its_reason():
    from alpaca.common.exceptions import APIError

    from stockade.broker.orders import api_error_code, api_message
    from stockade.broker.rest import make_trading_client
    from stockade.venue.config import VenueConfig
    from stockade.venue.server import start_venue

    key, secret = "PKREJECTTEST01", "reject-test-secret-01"
    venue = start_venue(VenueConfig(api_key=key, api_secret=secret, symbols=("AAPL",)))
    try:
        venue.set_faults(reject_next={"status": 403, "code": 40310000, "message": "insufficient buying power"})
        client = make_trading_client(key, secret, venue.base_url, timeout_s=5)
        with pytest.raises(APIError) as info:
            client.submit_order(
                build_request(
                    OrderIntent(
                        intent_id="r1",
                        symbol="AAPL",
                        side="buy",
                        qty=1,
                        order_type="market",
                        limit_price=None,
                        take_profit=None,
                        stop_loss=None,
                        reason="t",
                        proposal_id="",
                        quote_recv_ns=0,
                    ),
                    "stk-r1",
                )
            )
        exc = info.value
        assert rejection_reason(api_error_code(exc), api_message(exc)) == "buying_power"
        assert not is_retryable(exc.status_code)
    finally:
        venue.stop()


def test_retryable_statuses():
    assert is_retryable(None) and is_retryable(429) and is_retryable(500) and is_retryable(503)
    assert not any(is_retryable(s) for s in (400, 403, 404, 422))
    # Of the retryable ones only a 429 says the broker did not take the request.
    assert is_not_taken(429) and not any(is_not_taken(s) for s in (None, 500, 502, 503, 504, 403))


def test_replacement_ids_are_deterministic_and_short():
    a = replacement_id("stk-abc", 101.5)
    assert a == replacement_id("stk-abc", 101.5) and a.startswith("stk-") and len(a) <= 48
    assert a != replacement_id("stk-abc", 101.6)
    assert a != replacement_id("stk-abd", 101.5)


def test_uncovered_qty_counts_stops_only():
    assert uncovered_qty(10, []) == 10
    assert uncovered_qty(10, [("limit", 10)]) == 10  # a take-profit is not protection
    assert uncovered_qty(10, [("stop", 4), ("limit", 10)]) == 6
    assert uncovered_qty(10, [("stop", 6), ("stop_limit", 4)]) == 0
    assert uncovered_qty(10, [("trailing_stop", 12)]) == 0


@pytest.mark.parametrize(
    ("prev", "first", "kind"),
    [
        (100.0, 100.5, "LOW"),
        (100.0, 99.0, "MODERATE"),
        (100.0, 101.9, "MODERATE"),
        (100.0, 102.5, "HIGH"),
        (100.0, 95.0, "HIGH"),
        (100.0, 94.9, "EXTREME"),
        (100.0, 110.0, "EXTREME"),
    ],
)
def test_gap_classes(prev, first, kind):
    assert gap_class(gap_pct(prev, first), 1.0, 2.0, 5.0) == kind


def test_gap_pct_sign_and_bad_close():
    assert gap_pct(50.0, 49.0) == pytest.approx(-2.0)
    with pytest.raises(ValueError):
        gap_pct(0.0, 10.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[orders]\npoll_interval_s = 0\n", "settings: orders.poll_interval_s = 0: must be > 0"),
        ("[orders]\ntrailing_stop_pct = 150\n", "settings: orders.trailing_stop_pct = 150: must be > 0 and <= 100"),
        (
            "[reconciler]\ninterval_s = 20\nmax_unprotected_s = 39\n",
            "settings: reconciler.max_unprotected_s = 39: must be >= 2 x reconciler.interval_s (20)",
        ),
        (
            "[reconciler]\ngap_high_pct = 6\n",
            "settings: reconciler.gap_high_pct = 6: must satisfy gap_moderate_pct < gap_high_pct < gap_extreme_pct",
        ),
        ("[reconciler]\nfills_lookback_s = -1\n", "settings: reconciler.fills_lookback_s = -1: must be > 0"),
        (
            "[orders]\nrate_limit_per_min = 40\nemergency_reserve = 20\nprotect_reserve = 20\n",
            "settings: orders.protect_reserve = 20: must be < orders.rate_limit_per_min - orders.emergency_reserve (20)",
        ),
        ("[orders]\nprotect_reserve = -1\n", "settings: orders.protect_reserve = -1: must be >= 0"),
    ],
)
def test_order_and_reconciler_settings_name_the_bad_value(tmp_path, text, expected):
    from stockade.config.settings import SettingsError, load_settings

    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(str(path))
    assert str(info.value) == expected
