"""Crash the daemon with SIGKILL mid-trading, restart it on the same data dir:
no order twice at the venue, ledger equal to the venue, HALTED until resume.
And: `ctl kill` leaves the venue flat; HALTED survives a clean restart."""

from __future__ import annotations

from daemon_harness import DaemonProcess, ledger_orders, settings_text, wait_orders
from waiting import wait_for

OPEN = ("new", "accepted", "held", "partially_filled", "pending_new", "accepted_for_bidding")


def _status(order) -> str:
    return str(getattr(order.status, "value", order.status))


def _ledger_matches_venue(daemon: DaemonProcess, venue) -> bool:
    """Positions and open orders: the daemon's view equals the venue's."""
    st = daemon.status()
    mine = {p["symbol"]: p["qty"] for p in st["positions"]}
    open_at_venue = {o.client_order_id for o in venue.orders() if _status(o) in OPEN}
    open_mine = {o["client_order_id"] for o in st["open_orders"]}
    return mine == venue.positions() and open_mine == open_at_venue


def test_kill9_mid_trading_then_restart_no_duplicates_ledger_equals_venue_halted(short_dir, venue):
    data = short_dir / "data"
    first = DaemonProcess(data, settings_text(venue), venue)
    first.wait_ready()
    wait_orders(first, 5)
    first.kill9()  # mid-trading: quotes flowing, orders in flight

    ledger = ledger_orders(data)
    ours_at_venue = [o for o in venue.orders() if o.client_order_id.startswith("stk-")]
    ids = [o.client_order_id for o in ours_at_venue]
    assert len(ids) == len(set(ids))
    # Every order of ours at the venue was journaled before it was sent.
    assert set(ids) <= set(ledger), set(ids) - set(ledger)

    second = DaemonProcess(data, settings_text(venue), venue)
    try:
        second.wait_ready()
        status = second.status()
        assert status["trading_state"] == "HALTED"
        assert "did not stop cleanly" in status["trading_state_reason"]
        # After the restart's resolution and reconciliation: ledger == venue.
        wait_for(lambda: _ledger_matches_venue(second, venue), 30, 1.0, "ledger equal to venue")
        halted_orders = status["orders_placed"]
        # HALTED: proposals keep being judged, none becomes an order.
        wait_for(lambda: second.status()["decisions"] > status["decisions"] + 5, 60, 0.2, "decisions while halted")
        assert second.status()["orders_placed"] == halted_orders

        second.ok("resume", reason="test")
        assert second.status()["trading_state"] == "ACTIVE"
        wait_orders(second, halted_orders + 1)
        ids = [o.client_order_id for o in venue.orders() if o.client_order_id.startswith("stk-")]
        assert len(ids) == len(set(ids))
    finally:
        assert second.stop() == 0
    # Every intent in the ledger was resolved: none is left unacknowledged.
    unresolved = [o for o in ledger_orders(data).values() if o.state in ("intent", "submitted", "unknown")]
    assert not unresolved, unresolved


def test_ctl_kill_leaves_the_venue_flat_and_halted_survives_restart(short_dir, venue):
    data = short_dir / "data"
    daemon = DaemonProcess(data, settings_text(venue), venue)
    try:
        daemon.wait_ready()
        # Positions held and their bracket legs resting at the venue.
        wait_for(
            lambda: venue.positions() and any(_status(o) in OPEN for o in venue.orders()),
            60,
            1.0,
            "positions and open orders at the venue",
        )
        report = daemon.ok("kill", timeout=60, reason="test kill")
        assert report["flat"] is True
        assert venue.positions() == {}
        assert not [o for o in venue.orders() if _status(o) in OPEN]
        assert daemon.status()["trading_state"] == "HALTED"
        kinds = [a["key"] for a in daemon.ok("alerts", n=50)["alerts"]]
        assert "kill" in kinds
    finally:
        assert daemon.stop() == 0

    # A clean restart keeps HALTED until an operator resumes.
    again = DaemonProcess(data, settings_text(venue), venue)
    try:
        again.wait_ready()
        assert again.status()["trading_state"] == "HALTED"
        again.ok("resume")
        assert again.status()["trading_state"] == "ACTIVE"
    finally:
        assert again.stop() == 0


def _set_faults(venue, **knobs) -> None:
    import json
    import urllib.request

    request = urllib.request.Request(
        venue.base_url + "/admin/faults",
        data=json.dumps(knobs).encode(),
        method="POST",
        headers={"APCA-API-KEY-ID": venue.key, "APCA-API-SECRET-KEY": venue.secret, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


def test_lost_responses_and_server_errors_neither_duplicate_nor_lose_an_order(short_dir, venue):
    data = short_dir / "data"
    daemon = DaemonProcess(data, settings_text(venue), venue)
    try:
        daemon.wait_ready()
        # Half the placed orders lose their response (504 after the venue took
        # them); a tenth of all REST calls fail outright with a 500.
        _set_faults(venue, lose_response_rate=0.5, http_error_rate=0.1, seed=3)
        placed = daemon.status()["orders_placed"]
        wait_orders(daemon, placed + 8, timeout=90)
        _set_faults(venue, lose_response_rate=0.0, http_error_rate=0.0)
        # The ambiguous failures really happened, and were resolved by lookup.
        assert "outcome unknown" in daemon.log() and "adopted, not resent" in daemon.log()
        wait_for(
            lambda: not [o for o in daemon.status()["open_orders"] if o["state"] in ("intent", "submitted", "unknown")],
            30,
            0.5,
            "no pending intents",
        )
        wait_for(lambda: _ledger_matches_venue(daemon, venue), 30, 1.0, "ledger equal to venue")
    finally:
        assert daemon.stop() == 0
    ledger = ledger_orders(data)
    at_venue = {o.client_order_id: o for o in venue.orders() if o.client_order_id.startswith("stk-")}
    for coid, order in at_venue.items():
        # Every order the venue holds is ours, known under its broker id.
        assert coid in ledger and ledger[coid].broker_order_id == str(order.id), coid
    for coid, record in ledger.items():
        if record.intent_id and not record.broker_order_id:
            # Never acknowledged: then the venue must not have it either.
            assert coid not in at_venue, record


def test_dropped_and_silent_streams_are_recovered_and_nothing_is_missed(short_dir, venue):
    data = short_dir / "data"
    settings = settings_text(venue, stream={"silence_timeout_s": 2.0})
    daemon = DaemonProcess(data, settings, venue)
    try:
        daemon.wait_ready()
        wait_orders(daemon, 2)
        before = daemon.status()["market_data"]
        # Both websockets cut: market data and trade updates.
        _set_faults(venue, drop_streams=True)
        wait_for(
            lambda: daemon.status()["market_data"]["reconnects"] > before["reconnects"],
            30,
            0.2,
            "market data reconnected",
        )
        # Connected but silent: the daemon must notice and reconnect by itself.
        _set_faults(venue, stream_silent=True)
        silent = daemon.status()["market_data"]
        wait_for(
            lambda: daemon.status()["market_data"]["reconnects"] > silent["reconnects"],
            30,
            0.2,
            "silent socket detected",
        )
        _set_faults(venue, stream_silent=False)
        flowing = daemon.status()["market_data"]["quotes"]
        wait_for(lambda: daemon.status()["market_data"]["quotes"] > flowing + 20, 30, 0.2, "quotes again")
        # Fills that happened while trade updates were down are not missed.
        placed = daemon.status()["orders_placed"]
        wait_orders(daemon, placed + 1)
        wait_for(lambda: _ledger_matches_venue(daemon, venue), 30, 1.0, "ledger equal to venue")
        assert all(a["restarts"] == 0 for a in daemon.status()["actors"])
    finally:
        assert daemon.stop() == 0
