"""`/metrics` of a real daemon, scraped and parsed with prometheus_client's
text parser: every metric the issue lists is there, and each moves when the
thing it counts happens (quotes, orders, a broker rejection, a risk refusal,
an actor restart, positions). No secret is in the text."""

from __future__ import annotations

import pytest
from daemon_harness import DaemonProcess, settings_text, wait_orders
from dashboard_client import DashboardClient, sample
from waiting import wait_for

pytestmark = pytest.mark.timeout(600)

FAMILIES = (
    "stockade_quotes_received",
    "stockade_feed_staleness_seconds",
    "stockade_tick_to_order_seconds",
    "stockade_orders",
    "stockade_order_rejections",
    "stockade_risk_refusals",
    "stockade_actor_restarts",
    "stockade_mailbox_depth",
    "stockade_rest_budget_tokens",
    "stockade_equity_dollars",
    "stockade_pnl_today_dollars",
    "stockade_unrealized_pnl_dollars",
    "stockade_positions",
    "stockade_position_qty",
    "stockade_trading_state",
)


def test_metrics_present_and_moving(short_dir, venue):
    daemon = DaemonProcess(short_dir / "data", settings_text(venue), venue)
    try:
        daemon.wait_ready()
        dash = DashboardClient(daemon.dashboard_login_url())
        status, _ = dash.request("GET", "/metrics", auth=False)
        assert status == 401  # the scrape needs the token (Prometheus: authorization.credentials_file)

        def scrape_until(check, what, timeout=60.0):
            def once():
                m = dash.metrics()
                return m if check(m) else None

            return wait_for(once, timeout, 0.3, what)

        first = scrape_until(
            lambda m: sample(m, "stockade_quotes_received", "stockade_quotes_received_total", symbol="AAPL"),
            "quote counts",
        )
        missing = [f for f in FAMILIES if f not in first]
        assert missing == [] or set(missing) <= {"stockade_pnl_today_dollars"}, missing
        assert sample(first, "stockade_feed_staleness_seconds", symbol="AAPL") is not None
        assert sample(first, "stockade_actor_up", actor="order_manager") == 1.0
        assert sample(first, "stockade_mailbox_depth", actor="risk_guard") is not None
        assert sample(first, "stockade_equity_dollars") > 0
        assert sample(first, "stockade_trading_state", state="ACTIVE") == 1.0

        # Orders flow: the tick-to-order histogram, orders by state, the REST budget and quotes all move.
        wait_orders(daemon, 3, timeout=120)

        def latencies(m):
            return sample(m, "stockade_tick_to_order_seconds", "stockade_tick_to_order_seconds_count") or 0

        scrape_until(lambda m: latencies(m) >= 2, "tick-to-order samples")
        quotes0 = sample(first, "stockade_quotes_received", "stockade_quotes_received_total", symbol="AAPL")
        scrape_until(
            lambda m: sample(m, "stockade_quotes_received", "stockade_quotes_received_total", symbol="AAPL") > quotes0,
            "the quote count moving",
        )  # published once a second
        scrape_until(
            lambda m: sample(m, "stockade_rest_budget_tokens") < 160,
            "REST tokens spent (orders.rate_limit_per_min is the bucket's capacity)",
        )
        scrape_until(
            lambda m: sum(m.get("stockade_orders", {}).values()) >= 2, "orders by state (counted every 10 s at most)"
        )
        wait_for(lambda: (sample(dash.metrics(), "stockade_positions") or 0) > 0, 60, 0.5, "a position held")
        assert "stockade_pnl_today_dollars" in dash.metrics()

        # A broker rejection, by reason.
        venue.set_faults(reject_next={"status": 403, "code": 40310000, "message": "insufficient buying power"})
        wait_for(
            lambda: (
                (
                    sample(
                        dash.metrics(),
                        "stockade_order_rejections",
                        "stockade_order_rejections_total",
                        reason="buying_power",
                    )
                    or 0
                )
                >= 1
            ),
            120,
            0.5,
            "the rejection counted by reason",
        )

        # A risk refusal, by rule: HALTED refuses every new proposal.
        daemon.ok("halt", reason="metrics test")
        wait_for(
            lambda: sum(dash.metrics().get("stockade_risk_refusals", {}).values()) >= 1,
            120,
            0.5,
            "a risk refusal counted by rule",
        )
        assert sample(dash.metrics(), "stockade_trading_state", state="HALTED") == 1.0

        # An actor restart.
        before = sample(dash.metrics(), "stockade_actor_restarts", "stockade_actor_restarts_total", actor="reconciler")
        daemon.ok("crash", name="reconciler")
        wait_for(
            lambda: (
                sample(dash.metrics(), "stockade_actor_restarts", "stockade_actor_restarts_total", actor="reconciler")
                > before
            ),
            60,
            0.3,
            "the restart counted",
        )

        text = dash.metrics_text()
        for secret in (venue.key, venue.secret, dash.token):
            assert secret not in text
    finally:
        daemon.stop()
