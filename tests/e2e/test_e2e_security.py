"""Secrets never leave: a whole session with recognisable fake credentials, then
every output and every byte of the data dir is searched for them.

The daemon runs against a standalone venue that accepts only the fake key
pair (so the keys are really used: orders get placed), with a fake SMTP
password and a fake webhook URL (token in the path) whose deliveries fail on
a closed port (the error path is where a URL tends to leak), tracing on to a
collector in this test, and the log at DEBUG, in each log format: text,
json, and the journal's native protocol (to a socket the test binds).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading

import pytest
from daemon_harness import RUN_PY, DaemonProcess, JournalDaemon, VenueProcess, _child_env, settings_text, wait_orders
from journal_receiver import JournalReceiver
from otlp_receivers import OtlpHttpReceiver
from test_e2e_control import _raw
from waiting import wait_for

TAG = secrets.token_hex(4).upper()
FAKE_KEY = f"PKLEAKCHECK{TAG}"
FAKE_SECRET = f"LeakCheckSecret-{TAG}-{secrets.token_urlsafe(12)}"
FAKE_SMTP_PASSWORD = f"LeakCheckSmtpPw-{TAG}"
FAKE_WEBHOOK_TOKEN = f"T0LEAK/B0CHECK/{TAG}leakchecktoken"


class RawCollector(OtlpHttpReceiver):
    """An OTLP/HTTP endpoint that keeps every request (headers and body) as received."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        super().__init__(self._keep)

    def _keep(self, headers: bytes, body: bytes) -> None:
        with self.lock:
            self.bodies.append(headers + body)


def run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, RUN_PY, *args], capture_output=True, timeout=timeout, env=env)


@pytest.mark.parametrize("log_format", ["text", "json", "journal"])
def test_no_secret_in_any_output_or_file(short_dir, log_format):
    needles = {
        "key id": FAKE_KEY,
        "secret key": FAKE_SECRET,
        "smtp password": FAKE_SMTP_PASSWORD,
        "webhook token": FAKE_WEBHOOK_TOKEN,
    }
    # Bound but not listening: every delivery to it is refused at once.
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    collector = RawCollector()
    venue = VenueProcess(short_dir / "venue", key=FAKE_KEY, secret=FAKE_SECRET)
    secret_env = {
        "STOCKADE_SMTP_PASSWORD": FAKE_SMTP_PASSWORD,
        "STOCKADE_WEBHOOK_URL": f"http://127.0.0.1:{closed_port}/hooks/{FAKE_WEBHOOK_TOKEN}",
    }
    settings = settings_text(
        venue,
        alerts={
            "smtp_host": "127.0.0.1",
            "smtp_port": closed_port,
            "smtp_user": "ops@example.com",
            "smtp_from": "stockade@example.com",
            "smtp_to": ["ops@example.com"],
            "min_level_smtp": "WARNING",
            "retry_attempts": 2,
            "retry_initial_s": 0.05,
            "retry_max_s": 0.1,
            "timeout_s": 2.0,
        },
        telemetry={
            "enabled": True,
            "otlp_endpoint": f"http://127.0.0.1:{collector.server_address[1]}/v1/traces",
            "quote_sample_ratio": 1.0,
        },
        logging={
            "level": "DEBUG",
            "format": "json" if log_format == "journal" else log_format,
            "journal_socket": str(short_dir / "journal.sock"),
        },
    )
    journal = JournalReceiver(short_dir / "journal.sock")
    if log_format == "journal":
        daemon = JournalDaemon(short_dir / "data", settings, journal, venue, env=secret_env)
    else:
        daemon = DaemonProcess(short_dir / "data", settings, venue, env=secret_env)
    outputs: dict[str, bytes] = {}
    ctl_stdout: dict[str, bytes] = {}
    try:
        daemon.wait_ready()
        # The fake key pair is really in use: orders go through the venue with it.
        wait_orders(daemon, 2)
        # A key pasted as a command by mistake: the audit line and record must not keep it.
        assert (
            _raw(daemon.socket, json.dumps({"cmd": FAKE_SECRET, "args": {"x": FAKE_KEY}}).encode() + b"\n")["ok"]
            is False
        )
        ctl_env = _child_env()
        sock = str(daemon.socket)
        for cmd in (
            ["status"],
            ["alerts", "50"],
            ["halt", "leak check"],
            ["resume"],
            ["kill", "leak check"],
            ["alerts", "50"],
            ["audit", "50"],
            ["status"],
        ):
            proc = run("ctl", *cmd, "--socket", sock, env=ctl_env)
            assert proc.returncode == 0, proc.stderr
            outputs[f"ctl {' '.join(cmd)}"] = proc.stdout + proc.stderr
            ctl_stdout[" ".join(cmd)] = proc.stdout
        check_env = _child_env({"APCA_API_KEY_ID": FAKE_KEY, "APCA_API_SECRET_KEY": FAKE_SECRET, **secret_env})
        proc = run("check", "--settings", str(daemon.settings_path), "--socket", sock, "--json", env=check_env)
        outputs["check"] = proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["ok"] is True, outputs["check"]
        # The remote alert channels have tried and failed (the error path ran).
        wait_for(
            lambda: "webhook" in daemon.log() and "smtp" in daemon.log().lower(),
            60,
            0.2,
            "webhook and SMTP delivery attempts in the log",
        )
    finally:
        code = daemon.stop()
        venue.stop()
        collector.stop()
        closed.close()
        journal.stop()
    assert code == 0

    outputs["daemon log (stdout+stderr)"] = daemon.log_path.read_bytes()
    outputs["journal"] = b"".join(journal.raw)
    # The search covered the format it claims to.
    if log_format == "journal":
        assert len(journal.entries()) > 50 and b"stockade ready" not in outputs["daemon log (stdout+stderr)"]
    else:
        assert journal.raw == []
        lines = outputs["daemon log (stdout+stderr)"].decode().splitlines()
        first = next(line for line in lines if "stockade ready" in line)
        assert first.startswith("{") == (log_format == "json"), first
        if log_format == "json":
            assert all(json.loads(line) for line in lines)
    outputs["venue log"] = venue.log_path.read_bytes()
    with collector.lock:
        outputs["trace export"] = b"".join(collector.bodies)
    files = [p for p in daemon.data_dir.rglob("*") if p.is_file()]
    for path in files:
        outputs[f"data dir: {path.relative_to(daemon.data_dir)}"] = path.read_bytes()

    # The search covered what it claims to: real traces, the lmdb files, the alert file, the audit trail.
    assert len(outputs["trace export"]) > 1000
    names = {p.name for p in files}
    assert {"data.mdb", "alerts.jsonl"} <= names, names
    assert "EMERGENCY" in (daemon.data_dir / "alerts.jsonl").read_text()
    audit = json.loads(ctl_stdout["audit 50"])["result"]
    assert {"halt", "resume", "kill"} <= {a["cmd"] for a in audit}
    assert all(a["uid"] == os.geteuid() and a["ok"] for a in audit if a["cmd"] != "***")
    assert [a["cmd"] for a in audit if not a["ok"]] == ["***"]

    leaks = [
        f"{what} in {where}"
        for where, data in outputs.items()
        for what, needle in needles.items()
        if needle.encode() in data
    ]
    assert leaks == [], leaks


def test_live_paper_mismatch_refuses_to_start_with_one_line(short_dir):
    keys = {"APCA_API_KEY_ID": FAKE_KEY, "APCA_API_SECRET_KEY": FAKE_SECRET}
    cases = [
        # live asked for with one switch only
        ("[alpaca]\npaper = false\n", {}, "alpaca.paper = false: live trading also needs alpaca.allow_live = true"),
        # live, but no keys: it would be the embedded paper venue
        ("[alpaca]\npaper = false\nallow_live = true\n", {}, "no Alpaca keys are configured"),
        # live settings against Alpaca's paper endpoint
        (
            "[alpaca]\npaper = false\nallow_live = true\n",
            {**keys, "APCA_API_BASE_URL": "https://paper-api.alpaca.markets"},
            "is Alpaca's paper endpoint",
        ),
        # paper settings against Alpaca's live endpoint
        (
            "[alpaca]\npaper = true\n",
            {**keys, "APCA_API_BASE_URL": "https://api.alpaca.markets"},
            "is Alpaca's live endpoint",
        ),
    ]
    for i, (text, env, expected) in enumerate(cases):
        path = short_dir / f"s{i}.toml"
        path.write_text(text)
        proc = subprocess.run(
            [sys.executable, RUN_PY, "--settings", str(path), "--data-dir", str(short_dir / f"d{i}")],
            capture_output=True,
            text=True,
            timeout=60,
            env=_child_env(env),
        )
        assert proc.returncode == 2, (text, env, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("stockade: settings: ") and expected in lines[0], proc.stderr
        assert FAKE_SECRET not in proc.stderr and FAKE_KEY not in proc.stderr
        assert not (short_dir / f"d{i}").exists()  # refused before touching anything
