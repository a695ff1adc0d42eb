"""Actors crashed and hung on purpose while the system trades against a real
(standalone) venue; repeated crashes escalate to liquidation."""

from __future__ import annotations

from daemon_harness import DaemonProcess, settings_text, wait_orders
from waiting import wait_for

# One of each actor type (analyzers are one type). EmergencyStop is not here:
# its failure means full liquidation by design (test below).
ACTOR_TYPES = (
    "quote_streamer",
    "analyzer:AAPL",
    "ensemble_voter",
    "risk_guard",
    "order_manager",
    "reconciler",
    "alerter",
)


def _restarted(daemon: DaemonProcess, name: str, before: int) -> bool:
    actor = daemon.actor(name)
    return actor["alive"] and actor["restarts"] == before + 1 and actor["state"] == "up"


def test_each_actor_type_crashed_is_restarted_and_trading_goes_on(short_dir, venue):
    daemon = DaemonProcess(short_dir / "data", settings_text(venue), venue)
    try:
        daemon.wait_ready()
        wait_orders(daemon, 1)
        for name in ACTOR_TYPES:
            before = daemon.actor(name)["restarts"]
            assert daemon.ok("crash", name=name) == {"crash": name, "when": "now", "times": 1}
            wait_for(lambda name=name, before=before: _restarted(daemon, name, before), 30, 0.1, f"{name} restarted")
        # The armed mode is still there: the next message, a heartbeat at the latest.
        before = daemon.actor("risk_guard")["restarts"]
        assert daemon.ok("crash", name="risk_guard", on_next_message=True) == {
            "crash": "risk_guard",
            "when": "on its next message",
        }
        wait_for(lambda: _restarted(daemon, "risk_guard", before), 30, 0.1, "risk_guard restarted")
        status = daemon.status()
        # Nothing escalated: the whole tree is up, trading ACTIVE, no liquidation.
        assert status["trading_state"] == "ACTIVE", status
        assert all(a["alive"] for a in status["actors"]), status["actors"]
        assert "supervision gave up" not in daemon.log()

        # The system keeps trading through the restarted actors: new risk
        # decisions and new orders after the last crash.
        wait_for(lambda: daemon.status()["decisions"] > status["decisions"] + 3, 60, 0.2, "new decisions")
        wait_orders(daemon, status["orders_placed"] + 1)
        # What the crashed order manager's successor placed reached the venue once.
        ids = [o.client_order_id for o in venue.orders()]
        assert len(ids) == len(set(ids))
    finally:
        assert daemon.stop() == 0


def test_hung_actor_is_detected_and_replaced(short_dir, venue):
    daemon = DaemonProcess(short_dir / "data", settings_text(venue), venue)
    try:
        daemon.wait_ready()
        before = daemon.actor("risk_guard")["restarts"]
        daemon.ok("hang", name="risk_guard", seconds=60)
        # heartbeat_timeout_s is 1.5 s in the test settings.
        wait_for(lambda: _restarted(daemon, "risk_guard", before), 30, 0.1, "hung risk_guard replaced")
        assert "risk_guard" in daemon.log()
        status = daemon.status()
        # Refusals to replaced instances are shown per actor and in total (none so far: the zombie is still hung).
        assert daemon.actor("risk_guard")["refused"] == 0 and status["fenced_refusals"] == {}
        wait_for(lambda: daemon.status()["decisions"] > status["decisions"], 60, 0.2, "decisions after the hang")
    finally:
        assert daemon.stop() == 0


def test_a_hung_analyzer_is_replaced_and_the_others_keep_their_thread(short_dir, venue):
    # One analyzer thread for all five symbols: unless the pool replaces the
    # worker stuck in AAPL, every other analyzer stops with it.
    text = settings_text(venue, runtime={"analyzer_threads": 1})
    daemon = DaemonProcess(short_dir / "data", text, venue)
    try:
        daemon.wait_ready()
        before = daemon.actor("analyzer:AAPL")["restarts"]
        daemon.ok("hang", name="analyzer:AAPL", seconds=60)
        wait_for(lambda: _restarted(daemon, "analyzer:AAPL", before), 30, 0.1, "hung analyzer:AAPL replaced")
        wait_for(lambda: "replaced by a new worker" in daemon.log(), 30, 0.2, "the stuck worker replaced")
        status = daemon.status()
        wait_for(lambda: daemon.status()["decisions"] > status["decisions"], 60, 0.2, "decisions after the hang")
        assert all(daemon.actor(f"analyzer:{s}")["restarts"] == 0 for s in ("MSFT", "NVDA", "AMZN", "SPY"))
    finally:
        assert daemon.stop() == 0


def test_crash_restarts_an_idle_actor_at_once(short_dir, venue):
    # Nothing else reaches the reconciler for minutes: heartbeats every 120 s,
    # a pass every 600 s. A crash armed for its next message would sit there.
    settings = settings_text(
        venue,
        supervision={"heartbeat_interval_s": 120.0, "heartbeat_timeout_s": 120.0},
        reconciler={"interval_s": 600.0, "max_unprotected_s": 1200.0},
    )
    daemon = DaemonProcess(short_dir / "data", settings, venue)
    try:
        daemon.wait_ready()
        wait_for(lambda: daemon.actor("reconciler")["mailbox"] == 0, 30, 0.1, "reconciler idle")
        before = daemon.actor("reconciler")["restarts"]
        assert daemon.ok("crash", name="reconciler") == {"crash": "reconciler", "when": "now", "times": 1}
        wait_for(lambda: _restarted(daemon, "reconciler", before), 30, 0.1, "reconciler restarted")
        assert "injected crash in reconciler" in daemon.log()
    finally:
        assert daemon.stop() == 0


def test_a_crash_drill_past_intensity_escalates_to_liquidation_flat_and_halted(short_dir, venue):
    settings = settings_text(venue, supervision={"max_restarts": 1, "period_s": 120.0})
    daemon = DaemonProcess(short_dir / "data", settings, venue)
    try:
        daemon.wait_ready()
        wait_for(lambda: venue.positions(), 60, 1.0, "a position at the venue")
        # One command: the order manager crashes now and as each new instance
        # comes up. Two crashes exhaust execution (max 1 restart); the root
        # restarts it, two more exhaust it again, and that is more than the
        # root's own single restart: supervision gives up, full liquidation.
        assert daemon.ok("crash", name="order_manager", times=4) == {
            "crash": "order_manager",
            "when": "now",
            "times": 4,
        }
        wait_for(lambda: daemon.status()["trading_state"] == "HALTED", 60, 0.2, "HALTED")
        wait_for(lambda: not venue.positions() and not _open_orders(venue), 60, 1.0, "venue flat")
        assert "supervision gave up" in daemon.log()
        assert daemon.status()["crashes_on_start"] == {}  # every crash of the drill was taken
    finally:
        daemon.stop()


def test_emergency_stop_failure_means_full_liquidation(short_dir, venue):
    daemon = DaemonProcess(short_dir / "data", settings_text(venue), venue)
    try:
        daemon.wait_ready()
        wait_for(lambda: venue.positions(), 60, 1.0, "a position at the venue")
        before = daemon.actor("emergency_stop")["restarts"]
        daemon.ok("crash", name="emergency_stop")
        wait_for(lambda: _restarted(daemon, "emergency_stop", before), 30, 0.1, "emergency_stop restarted")
        wait_for(lambda: daemon.status()["trading_state"] == "HALTED", 30, 0.1, "HALTED")
        assert "critical child emergency_stop failed" in daemon.status()["trading_state_reason"]
        wait_for(lambda: not venue.positions() and not _open_orders(venue), 60, 1.0, "venue flat")
    finally:
        assert daemon.stop() == 0


def _open_orders(venue) -> list:
    return [
        o
        for o in venue.orders()
        if str(o.status.value) in ("new", "accepted", "held", "partially_filled", "pending_new")
    ]


def test_malformed_quote_frames_are_counted_and_the_daemon_carries_on(short_dir, venue):
    daemon = DaemonProcess(short_dir / "data", settings_text(venue), venue)
    try:
        daemon.wait_ready()
        wait_for(lambda: daemon.status()["market_data"].get("quotes", 0) > 0, 30, 0.2, "quotes flowing")
        venue.set_faults(garbage_frames=25)
        md = wait_for(
            lambda: (m := daemon.status()["market_data"])["malformed_frames"] >= 25 and m, 30, 0.2, "garbage counted"
        )
        # Nothing crashed, the connection was kept, and quotes keep coming.
        wait_for(lambda: daemon.status()["market_data"]["quotes"] > md["quotes"] + 20, 30, 0.2, "quotes after garbage")
        status = daemon.status()
        assert status["market_data"]["reconnects"] == md["reconnects"]
        assert all(a["alive"] and a["restarts"] == 0 for a in status["actors"]), status["actors"]
    finally:
        assert daemon.stop() == 0
