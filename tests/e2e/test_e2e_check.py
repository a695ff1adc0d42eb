"""`python run.py check` as an operator runs it: a real venue, a real daemon, a broken endpoint."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from daemon_harness import RUN_PY, DaemonProcess, _child_env, settings_text

ROWS = ["settings", "broker", "clock", "data feed", "control socket"]


def check(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, RUN_PY, "check", *args], capture_output=True, text=True, timeout=120, env=_child_env(env)
    )


def table(stdout: str) -> dict[str, tuple[str, str]]:
    rows = [line.split(" | ", 2) for line in stdout.strip().splitlines()]
    assert [r[0].strip() for r in rows] == ROWS, stdout
    return {r[0].strip(): (r[1].strip(), r[2]) for r in rows}


def test_check_against_a_venue_then_a_running_daemon(short_dir, venue):
    keys = {"APCA_API_KEY_ID": venue.key, "APCA_API_SECRET_KEY": venue.secret}
    settings_path = short_dir / "check.toml"
    settings_path.write_text(settings_text(venue))
    data = short_dir / "data"
    proc = check("--settings", str(settings_path), "--data-dir", str(data), env=keys)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table(proc.stdout)
    assert all(status == "ok" for status, _ in rows.values()), proc.stdout
    assert rows["settings"][1].startswith("valid; venue alpaca, paper trading, 5 symbols")
    assert f"alpaca-paper at {venue.base_url}: account ACTIVE, equity 100000" in rows["broker"][1]
    assert "trading_blocked False" in rows["broker"][1]
    assert rows["clock"][1].startswith("market open; next open ")
    assert rows["data feed"][1].startswith("AAPL (iex): bid ")
    assert rows["control socket"][1] == f"daemon not running (no socket at {data / 'control.sock'})"
    assert venue.key not in proc.stdout + proc.stderr and venue.secret not in proc.stdout + proc.stderr

    daemon = DaemonProcess(data, settings_text(venue), venue)
    try:
        daemon.wait_ready()
        proc = check("--settings", str(settings_path), "--data-dir", str(data), "--json", env=keys)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["ok"] is True and [c["name"] for c in doc["checks"]] == ROWS
        control = doc["checks"][-1]
        assert control["ok"] and control["detail"].startswith(
            f"daemon running at {daemon.socket}: trading ACTIVE, venue alpaca-paper, healthy"
        ), control
        # The check's status request is in the daemon's audit trail.
        audit = daemon.ok("audit", n=5)
        assert any(a["cmd"] == "status" and a["ok"] for a in audit)
    finally:
        assert daemon.stop() == 0


def test_check_reports_broken_endpoint_and_wrong_keys(short_dir, venue):
    # Bound, never listening: connections are refused at once.
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    try:
        path = short_dir / "broken.toml"
        path.write_text(settings_text(venue, alpaca={"trading_url": dead_url, "data_url": dead_url}))
        keys = {"APCA_API_KEY_ID": venue.key, "APCA_API_SECRET_KEY": venue.secret}
        proc = check("--settings", str(path), "--data-dir", str(short_dir / "d"), "--timeout", "5", env=keys)
    finally:
        closed.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = table(proc.stdout)
    assert rows["settings"][0] == "ok" and rows["control socket"][0] == "ok"
    for name in ("broker", "clock", "data feed"):
        assert rows[name][0] == "FAIL" and "ConnectionError" in rows[name][1], proc.stdout

    # Right endpoint, wrong secret: the broker says no, and the secret is not echoed.
    wrong = "WrongSecretValue-not-accepted-123"
    path.write_text(settings_text(venue))
    proc = check(
        "--settings",
        str(path),
        "--data-dir",
        str(short_dir / "d"),
        "--timeout",
        "5",
        env={"APCA_API_KEY_ID": venue.key, "APCA_API_SECRET_KEY": wrong},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = table(proc.stdout)
    assert rows["broker"][0] == "FAIL" and rows["clock"][0] == "FAIL", proc.stdout
    assert wrong not in proc.stdout + proc.stderr and venue.key not in proc.stdout + proc.stderr


def test_check_without_keys_checks_an_embedded_venue(short_dir):
    proc = check("--data-dir", str(short_dir / "d"), env={})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table(proc.stdout)
    assert rows["settings"][1].startswith("valid; venue embedded, paper trading")
    assert rows["broker"][1].startswith("embedded (started on loopback for this check) at http://127.0.0.1:")
    assert all(status == "ok" for status, _ in rows.values())
    assert not (short_dir / "d").exists()  # the check's venue lived in its own temporary dir
