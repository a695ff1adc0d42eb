"""The default run: no keys, embedded venue, shipped settings. Trades within 60 s,
answers status, speaks sd_notify, and stops cleanly on SIGTERM."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

from daemon_harness import RUN_PY, DaemonProcess, _child_env
from waiting import wait_for

ACTORS = {"quote_streamer", "ensemble_voter", "risk_guard", "order_manager", "reconciler", "emergency_stop", "alerter"}
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")


def test_shipped_settings_trade_within_60s_with_sd_notify_and_clean_stop(short_dir):
    notify_path = short_dir / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    messages: list[str] = []
    done = threading.Event()

    def drain() -> None:
        # Keep the datagram queue empty (it holds only ~10 messages), as systemd does.
        while not done.is_set():
            try:
                messages.append(notify.recv(4096).decode())
            except (TimeoutError, OSError):
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()

    def received(what: str) -> bool:
        return any(what in m for m in list(messages))

    # An empty settings file: every key takes the shipped default.
    daemon = DaemonProcess(short_dir / "data", "", env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000"})
    try:
        wait_for(lambda: received("READY=1"), 60, what="READY=1")
        status = daemon.status()
        assert status["trading_state"] == "ACTIVE"
        assert status["venue"] == "embedded"
        names = {a["name"] for a in status["actors"]}
        assert ACTORS | {f"analyzer:{s}" for s in SYMBOLS} <= names
        assert all(a["alive"] and a["restarts"] == 0 for a in status["actors"])

        # Orders placed and positions held within 60 s of start, with the
        # shipped settings (the clock started before READY).
        held = wait_for(lambda: daemon.status()["positions"], 60, 0.25, "a position")
        assert held[0]["qty"] > 0
        assert daemon.status()["orders_placed"] >= 1
        wait_for(lambda: received("WATCHDOG=1"), 10, what="WATCHDOG=1")
        assert "order filled: bought" in daemon.log()
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
    wait_for(lambda: received("STOPPING=1"), 5, what="STOPPING=1")
    assert "stockade stopped" in daemon.log()
    done.set()
    reader.join(timeout=5)
    notify.close()


def test_bad_settings_exit_2_with_one_line_naming_key_and_value(short_dir):
    bad = short_dir / "bad.toml"
    bad.write_text("[risk]\nmax_position_pct = -5\n")
    proc = subprocess.run(
        [sys.executable, RUN_PY, "--settings", str(bad), "--data-dir", str(short_dir / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        env=_child_env(),
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "risk.max_position_pct" in lines[0] and "-5" in lines[0]

    bad.write_text("[risk]\nmax_postion_pct = 5\n")  # a typo must not pass silently
    proc = subprocess.run(
        [sys.executable, RUN_PY, "check", "--settings", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_child_env(),
    )
    assert proc.returncode == 2
    assert "max_postion_pct" in proc.stderr


def test_unknown_command_is_usage_error():
    proc = subprocess.run([sys.executable, RUN_PY, "frobnicate"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown command" in proc.stderr
