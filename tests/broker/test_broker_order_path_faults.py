"""The order manager and reconciler in a real daemon (in-process, embedded venue)
while the venue injects faults; intents go straight to the order manager, so
the test does not depend on the strategy producing signals.

What must hold: every intent is at the venue at most once, every venue fill is
in the ledger exactly once, the ledger ends equal to the venue, and rejections
carry their reason to the ledger and the alerts.
"""

from __future__ import annotations

import random
import time
from argparse import Namespace
from collections import defaultdict

import pytest
from waiting import wait_for

from stockade.codecs.messages import OrderIntent
from stockade.config.settings import settings_from_dict

SYMBOLS = ("AAPL", "MSFT", "SPY")


@pytest.fixture
def daemon(embedded_daemon):
    return embedded_daemon(
        SYMBOLS,
        # A trailing stop 1% under the high: the bracket stops (20% under) move up at once.
        orders={"retry_backoff_s": 0.05, "poll_interval_s": 0.5, "trailing_stop_pct": 1.0},
        reconciler={"interval_s": 2.0, "max_unprotected_s": 5.0},
    )


def _quote(daemon, symbol: str):
    return daemon.venue.call(lambda: daemon.venue.ctx.exchange.quotes[symbol])


def _intent(daemon, i: int, rng: random.Random) -> OrderIntent:
    symbol = SYMBOLS[i % len(SYMBOLS)]
    q = _quote(daemon, symbol)
    bracket = rng.random() < 0.7
    return OrderIntent(
        intent_id=f"t{i:03d}",
        symbol=symbol,
        side="buy",
        qty=rng.randint(2, 9),
        order_type="market",
        limit_price=None,
        take_profit=round(q.ask * 1.2, 2) if bracket else None,
        stop_loss=round(q.bid * 0.8, 2) if bracket else None,
        reason="test",
        proposal_id="",
        quote_recv_ns=time.time_ns(),
    )


def _venue_orders(daemon) -> list:
    def collect():
        return [(o.client_order_id, o.status, o.filled_qty) for o in daemon.venue.ctx.exchange.orders.values()]

    return daemon.venue.call(collect)


def _venue_positions(daemon) -> dict[str, int]:
    return daemon.venue.call(lambda: {s: p.qty for s, p in daemon.venue.ctx.exchange.positions.items() if p.qty})


def _agreement(daemon) -> list[str]:
    """Differences between the ledger and the venue (empty: equal)."""
    store = daemon.svc.store
    ledger = dict(store.orders.items())
    fills: dict[str, int] = defaultdict(int)
    for f in store.fills.values():
        fills[f.client_order_id] += f.qty
    out = []
    for coid, status, filled in _venue_orders(daemon):
        mine = ledger.get(coid)
        expected = {"replaced": "canceled", "new": "accepted", "held": "accepted", "pending_new": "accepted"}.get(
            status, status
        )
        if mine is None:
            out.append(f"{coid} missing")
        elif mine.state != expected or mine.filled_qty != filled or fills[coid] != filled:
            out.append(f"{coid}: ledger {mine.state}/{mine.filled_qty}/fills {fills[coid]}, venue {status}/{filled}")
    positions = {p.symbol: p.qty for p in store.positions.values() if p.qty}
    if positions != _venue_positions(daemon):
        out.append(f"positions: ledger {positions} venue {_venue_positions(daemon)}")
    return out


def test_faulty_venue_no_duplicates_fills_once_ledger_equals_venue(daemon):
    rng = random.Random(7)
    wait_for(lambda: daemon.svc.first_reconcile.is_set(), 30, 0.05, "first reconcile")
    wait_for(lambda: all(_quote(daemon, s) for s in SYMBOLS), 30, 0.05, "quotes")
    daemon.venue.set_faults(
        latency_ms=10.0,
        partial_fill_prob=0.4,
        http_error_rate=0.15,
        http_error_status=503,
        lose_response_rate=0.3,
        seed=3,
    )
    n = 30
    for i in range(n):
        if i == 10:
            daemon.venue.set_faults(burst_429=6)
        if i == 20:
            daemon.venue.set_faults(drop_streams="trading")
        daemon.tree.router.tell("order_manager", _intent(daemon, i, rng), "test")
    store = daemon.svc.store
    wait_for(
        lambda: all((r := store.orders.get(f"stk-t{i:03d}")) is not None and r.state != "intent" for i in range(n)),
        60,
        0.1,
        "every intent handled",
    )
    daemon.venue.set_faults(latency_ms=0.0, partial_fill_prob=0.0, http_error_rate=0.0, lose_response_rate=0.0)
    try:
        wait_for(lambda: not _agreement(daemon), 60, 0.2, "ledger equal to the venue")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_agreement(daemon)}") from None

    coids = [c for c, _, _ in _venue_orders(daemon)]
    assert len(coids) == len(set(coids))
    ours = {f"stk-t{i:03d}" for i in range(n)}
    placed = ours & set(coids)
    assert len(placed) >= n // 2, f"too few intents reached the venue: {len(placed)}"
    # An intent the venue never saw ended rejected/canceled with nothing filled.
    for coid in ours - placed:
        record = store.orders.get(coid)
        assert record.state in ("rejected", "canceled") and record.filled_qty == 0, record
    assert sum(f.qty for f in store.fills.values()) > 0
    # Every position rests on stops covering all its shares (brackets' stop legs,
    # the reconciler's protective stops for the plain buys), as the venue sees it.
    # A stop request the faults made fail is asked again on a backoff (and by the
    # reconciler's next pass), so allow two bounds here; the bound itself is held
    # in test_e2e_chaos and test_broker_reconciler.
    from stockade.venue.server import exposure

    def bare() -> dict:
        return {
            s: e
            for s, e in daemon.venue.call(lambda: exposure(daemon.venue.ctx)).items()
            if e["stop_covered"] < e["qty"]
        }

    try:
        wait_for(lambda: not bare(), 10.0, 0.1, "every position under a stop")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {bare()}") from None
    # The faults did bite: some submits needed more than one attempt.
    assert any(r.attempts > 1 for r in store.orders.values())


def test_rejections_carry_their_reason_to_the_ledger_and_a_warning(daemon):
    wait_for(lambda: daemon.svc.first_reconcile.is_set(), 30, 0.05, "first reconcile")
    wait_for(lambda: _quote(daemon, "AAPL"), 30, 0.05, "quotes")
    rng = random.Random(1)
    cases = {
        "insufficient_qty": {"status": 403, "code": 40310000, "message": "insufficient qty available for order"},
        "wash_trade": {"status": 403, "code": 40310000, "message": "potential wash trade detected. use complex orders"},
        "buying_power": {"status": 403, "code": 40310000, "message": "insufficient buying power"},
    }
    store = daemon.svc.store
    for i, (reason, spec) in enumerate(cases.items()):
        daemon.venue.set_faults(reject_next=spec)
        intent = _intent(daemon, 100 + i * len(SYMBOLS), rng)
        daemon.tree.router.tell("order_manager", intent, "test")
        record = wait_for(
            lambda c=intent.intent_id: (r := store.orders.get(f"stk-{c}")) and r.state == "rejected" and r,
            30,
            0.05,
            f"{reason} rejection",
        )
        assert record.last_error.startswith(f"{reason}:"), record.last_error
        alert = wait_for(
            lambda r=reason: [a for a in store.alerts.latest(50) if a.key.startswith(f"order-rejected:{r}:")],
            10,
            0.05,
            f"{reason} alert",
        )
        assert alert[0].level == "WARNING"
    # A rejected intent is never resent: the venue has no order under those ids.
    coids = {c for c, _, _ in _venue_orders(daemon)}
    assert not any(f"stk-t{100 + i * len(SYMBOLS):03d}" in coids for i in range(len(cases)))


def test_trailing_stop_moves_the_bracket_stop_up_by_replacing_it(daemon):
    wait_for(lambda: daemon.svc.first_reconcile.is_set(), 30, 0.05, "first reconcile")
    wait_for(lambda: _quote(daemon, "MSFT"), 30, 0.05, "quotes")
    q = _quote(daemon, "MSFT")
    daemon.tree.router.tell(
        "order_manager",
        OrderIntent(
            intent_id="trail1",
            symbol="MSFT",
            side="buy",
            qty=5,
            order_type="market",
            limit_price=None,
            take_profit=round(q.ask * 1.5, 2),
            stop_loss=round(q.bid * 0.8, 2),
            reason="test",
            proposal_id="",
            quote_recv_ns=time.time_ns(),
        ),
        "test",
    )
    store = daemon.svc.store
    entry = wait_for(
        lambda: (r := store.orders.get("stk-trail1")) and r.state == "filled" and r, 30, 0.05, "entry filled"
    )
    stop_leg = next(store.orders.get(c) for c in entry.legs if store.orders.get(c).order_type == "stop")
    moved = wait_for(
        lambda: [r for r in store.orders.values() if r.client_order_id.startswith("stk-mv-") and r.state == "accepted"],
        30,
        0.1,
        "a replacement stop",
    )
    new = moved[0]
    assert new.stop_price > stop_leg.stop_price * 1.2  # from 20% under to about 1% under
    assert new.parent_id == "stk-trail1" and new.qty == 5
    venue = {c: st for c, st, _ in _venue_orders(daemon)}
    assert venue[stop_leg.client_order_id] == "replaced" and venue[new.client_order_id] in ("new", "accepted")
    wait_for(lambda: store.orders.get(stop_leg.client_order_id).state == "canceled", 10, 0.05, "old stop ended")


def test_fills_are_polled_while_the_trade_stream_is_down(tmp_path):
    """The trade-updates stream points at a port that refuses connections: the
    order manager's open-order poll must still record the fill, long before the
    periodic resync (30 s) or the next reconcile pass (30 s) would."""
    import socket

    from stockade.ops.daemon import Daemon
    from stockade.venue.config import VenueConfig
    from stockade.venue.server import start_venue

    key, secret = "PKPOLLTEST0001", "poll-test-secret-0001"
    venue = start_venue(VenueConfig(api_key=key, api_secret=secret, symbols=("AAPL",), quote_rate_hz=20.0))
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    settings = settings_from_dict(
        {
            "trading": {"symbols": ["AAPL"]},
            "venue": {"mode": "alpaca"},
            "alpaca": {
                "trading_url": venue.base_url,
                "data_url": venue.base_url,
                "stream_url": venue.data_stream_url("iex"),
                "trading_stream_url": f"ws://127.0.0.1:{dead.getsockname()[1]}/stream",
            },
            "voter": {"mode": "manual"},
            "orders": {"poll_interval_s": 0.3},
            "reconciler": {"interval_s": 30.0, "max_unprotected_s": 61.0},
            "logging": {"level": "WARNING"},
            "dashboard": {"port": 0},  # any free port: tests run side by side
        }
    )
    daemon = Daemon(settings, "alpaca", (key, secret), Namespace(data_dir=str(tmp_path / "data"), duration=None))
    daemon._start()
    try:
        wait_for(lambda: daemon.svc.first_reconcile.is_set(), 30, 0.05, "first reconcile")
        wait_for(lambda: venue.call(lambda: venue.ctx.exchange.quotes.get("AAPL")), 30, 0.05, "quotes")
        daemon.tree.router.tell(
            "order_manager",
            OrderIntent(
                intent_id="poll1",
                symbol="AAPL",
                side="buy",
                qty=3,
                order_type="market",
                limit_price=None,
                take_profit=None,
                stop_loss=None,
                reason="test",
                proposal_id="",
                quote_recv_ns=time.time_ns(),
            ),
            "test",
        )
        store = daemon.svc.store
        # Placed and at once filled at the venue; the REST answer may predate the fill.
        wait_for(
            lambda: venue.call(lambda: venue.ctx.exchange.get_order_by_client_id("stk-poll1").status) == "filled",
            10,
            0.05,
            "filled at the venue",
        )
        record = wait_for(
            lambda: (r := store.orders.get("stk-poll1")) and r.state == "filled" and r,
            10,
            0.05,
            "fill recorded without the stream",
        )
        assert record.filled_qty == 3
        assert sum(f.qty for f in store.fills.values() if f.client_order_id == "stk-poll1") == 3
    finally:
        daemon._stop()
        venue.stop()
        dead.close()


def test_a_submit_refused_with_429_is_not_sent_not_unknown(daemon):
    """A 429 means the broker did not take the order: after its retries the
    intent is abandoned as "not sent" (WARNING), never a CRITICAL
    `order-unknown`, and the venue has nothing under its id."""
    wait_for(lambda: daemon.svc.first_reconcile.is_set(), 30, 0.05, "first reconcile")
    wait_for(lambda: _quote(daemon, "AAPL"), 30, 0.05, "quotes")
    store = daemon.svc.store
    attempts = daemon.svc.settings.orders.max_retries + 1
    # Every attempt meets a 429 (other callers may take some of the burst too).
    daemon.venue.set_faults(burst_429=attempts * 10)
    daemon.tree.router.tell(
        "order_manager",
        OrderIntent(
            intent_id="r429",
            symbol="AAPL",
            side="buy",
            qty=2,
            order_type="market",
            limit_price=None,
            take_profit=None,
            stop_loss=None,
            reason="test",
            proposal_id="",
            quote_recv_ns=time.time_ns(),
        ),
        "test",
    )
    alert = wait_for(
        lambda: [a for a in store.alerts.latest(50) if a.key.split(":", 1)[0] in ("order-not-sent", "order-unknown")],
        30,
        0.05,
        "the submit's outcome alerted",
    )
    daemon.venue.set_faults(burst_429=0)
    assert [(a.key, a.level) for a in alert] == [("order-not-sent:AAPL", "WARNING")]
    record = store.orders.get("stk-r429")
    assert record.state == "canceled" and record.filled_qty == 0, record
    assert "429" in record.last_error and record.attempts == attempts
    assert "stk-r429" not in {c for c, _, _ in _venue_orders(daemon)}
