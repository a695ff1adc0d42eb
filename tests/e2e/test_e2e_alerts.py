"""Alerts from a real daemon process to a real webhook receiver and a real SMTP server.

The daemon (embedded venue) gets its webhook URL and SMTP password from the
environment, as under systemd; `ctl kill` raises an EMERGENCY alert that
must arrive as a Discord payload and as an e-mail over STARTTLS with AUTH,
and `ctl alerts` must show it with the counts. The secrets must appear in
none of the daemon log, the JSONL file or the ctl output.
"""

from __future__ import annotations

import json
import subprocess
import sys

from alert_servers import Receiver, SmtpServer, Tls
from daemon_harness import RUN_PY, DaemonProcess, _child_env, settings_text
from waiting import wait_for

PASSWORD = "Sm7pPassw0rd-E2E-FAKE-77"
TOKEN = "T0KEN-E2E-FAKE-1a2b3c4d5e"


def test_kill_alert_reaches_webhook_and_mail_and_ctl(short_dir):
    tls = Tls(short_dir)
    receiver = Receiver()
    smtp = SmtpServer(tls, "starttls", users={"alerts": PASSWORD})
    alerts = {
        "webhook_kind": "discord",
        "min_level_webhook": "WARNING",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_security": "starttls",
        "smtp_ca_file": str(tls.ca_file),
        "smtp_user": "alerts",
        "smtp_from": "stockade@example.org",
        "smtp_to": ["ops@example.org"],
        "min_level_smtp": "EMERGENCY",
        "retry_initial_s": 0.05,
        "retry_max_s": 0.2,
        "daily_summary": False,
    }
    env = {
        "STOCKADE_WEBHOOK_URL": f"{receiver.base}/hooks/{TOKEN}",
        "STOCKADE_SMTP_PASSWORD": PASSWORD,
        "no_proxy": "127.0.0.1,localhost",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    daemon = DaemonProcess(short_dir / "data", settings_text(None, alerts=alerts), env=env)
    try:
        daemon.wait_ready()
        report = daemon.ok("kill", timeout=60, reason="e2e alert test")
        assert report["flat"] is True

        wait_for(
            lambda: any(b["content"].startswith("[EMERGENCY] kill:") for b in receiver.bodies()),
            30,
            0.1,
            "the kill alert at the webhook",
        )
        wait_for(
            lambda: any(b"Subject: [stockade] EMERGENCY kill" in m.original_content for m in smtp.messages),
            30,
            0.1,
            "the kill alert by e-mail",
        )
        assert all(set(b) == {"content"} and len(b["content"]) <= 2000 for b in receiver.bodies())
        assert all(path == f"/hooks/{TOKEN}" for path, _, _ in receiver.posts)
        assert smtp.logins and all(ok and over_tls for _, ok, over_tls in smtp.logins)

        proc = subprocess.run(
            [sys.executable, RUN_PY, "ctl", "alerts", "20", "EMERGENCY", "--data-dir", str(daemon.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env=_child_env(),
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)["result"]
        assert [a["key"] for a in result["alerts"]] == ["kill"]
        assert result["counts"]["all"]["by_kind"]["kill"] == 1
        assert result["counts"]["all"]["by_level"]["EMERGENCY"] == 1
        wait_for(lambda: daemon.ok("alerts")["delivery"]["channels"]["smtp"]["sent"] >= 1, 10, 0.1, "delivery counters")
        delivery = daemon.ok("alerts")["delivery"]["channels"]
        assert delivery["webhook"]["sent"] >= 1 and delivery["webhook"]["failed"] == 0
    finally:
        code = daemon.stop()
        receiver.close()
        smtp.close()
    assert code == 0

    jsonl = (daemon.data_dir / "alerts.jsonl").read_text()
    assert '"key":"kill"' in jsonl
    for where, text in {"daemon log": daemon.log(), "jsonl": jsonl, "ctl": proc.stdout}.items():
        assert PASSWORD not in text, where
        assert TOKEN not in text, where


def test_stale_market_data_raises_and_clears_an_alert(short_dir, venue):
    # The socket stays up (silence detection far away) while the venue sends no quotes.
    settings = settings_text(
        venue, stream={"silence_timeout_s": 120.0}, alerts={"stale_quote_s": 1.5, "daily_summary": False}
    )
    daemon = DaemonProcess(short_dir / "data", settings, venue)
    try:
        daemon.wait_ready()
        wait_for(lambda: daemon.status()["market_data"].get("quotes", 0) > 20, 30, 0.2, "quotes flowing")

        def market_alerts():
            return [a["key"] for a in daemon.ok("alerts", n=50, kind="market-data")["alerts"]]

        assert "market-data:stale" not in market_alerts()
        venue.set_faults(stream_silent=True)
        wait_for(lambda: "market-data:stale" in market_alerts(), 30, 0.2, "the stale-data alert")
        stale = daemon.ok("alerts", n=50, kind="market-data")["alerts"][0]
        assert stale["level"] == "WARNING" and stale["source"] == "quote_streamer"
        assert set(stale["text"].rsplit(": ", 1)[1].split(", ")) == {"AAPL", "MSFT", "NVDA", "AMZN", "SPY"}
        assert daemon.status()["market_data"]["stale_symbols"] == ["AAPL", "AMZN", "MSFT", "NVDA", "SPY"]
        venue.set_faults(stream_silent=False)
        wait_for(lambda: "market-data:fresh" in market_alerts(), 30, 0.2, "the all-clear")
        counts = daemon.ok("alerts")["counts"]["all"]["by_kind"]
        assert counts["market-data"] >= 2
    finally:
        assert daemon.stop() == 0
