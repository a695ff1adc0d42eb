"""The control socket against a live daemon: the `ctl` CLI, bad requests, manual
approval, and fault injection refused when it is off."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

from daemon_harness import RUN_PY, DaemonProcess, _child_env, settings_text
from waiting import wait_for


def _ctl(daemon: DaemonProcess, *words: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, RUN_PY, "ctl", *words, "--data-dir", str(daemon.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_child_env(),
    )


def _raw(path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(payload)
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


def test_ctl_cli_bad_requests_and_disabled_fault_injection(short_dir):
    # Embedded venue, fault injection off.
    daemon = DaemonProcess(short_dir / "data", settings_text(None, debug={"fault_injection": False}))
    try:
        daemon.wait_ready()
        assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600

        proc = _ctl(daemon, "status")
        assert proc.returncode == 0, proc.stderr
        status = json.loads(proc.stdout)
        assert status["ok"] and status["result"]["trading_state"] == "ACTIVE"
        assert {"trading_state", "venue", "actors", "positions", "open_orders", "equity"} <= set(status["result"])

        proc = _ctl(daemon, "crash", "risk_guard")
        assert proc.returncode == 1
        reply = json.loads(proc.stdout)
        assert reply["ok"] is False and "fault_injection" in reply["error"]

        for payload in (
            b"this is not json\n",
            b'{"cmd": 5}\n',
            b'{"cmd": "nope"}\n',
            b'{"cmd": "hang", "args": {"name": "risk_guard", "seconds": "soon"}}\n',
            b'{"cmd": "approve", "args": {}}\n',
            b"[1,2,3]\n",
        ):
            reply = _raw(daemon.socket, payload)
            assert reply["ok"] is False and reply["error"], (payload, reply)
        reply = _raw(daemon.socket, b"x" * 200_000 + b"\n")
        assert reply["ok"] is False
        # Still alive and answering, nothing restarted.
        status = daemon.status()
        assert all(a["restarts"] == 0 for a in status["actors"])

        proc = _ctl(daemon, "halt", "maintenance")
        assert proc.returncode == 0 and daemon.status()["trading_state"] == "HALTED"
        assert _ctl(daemon, "resume").returncode == 0
    finally:
        assert daemon.stop() == 0
    proc = _ctl(daemon, "status")
    assert proc.returncode == 1
    assert "not running" in proc.stderr


def test_manual_mode_parks_proposals_until_approved(short_dir):
    daemon = DaemonProcess(short_dir / "data", settings_text(None, voter={"mode": "manual", "cooldown_s": 0.5}))
    try:
        daemon.wait_ready()
        pending = wait_for(
            lambda: [p for p in daemon.ok("pending") if p["side"] == "buy"], 60, 0.2, "a parked buy proposal"
        )
        assert daemon.status()["orders_placed"] == 0
        reply = daemon.ctl("approve", id="does-not-exist")
        assert reply["ok"] is False and "no pending proposal" in reply["error"]
        before = daemon.status()["decisions"]
        daemon.ok("approve", id=pending[0]["proposal_id"])
        # The approved proposal reached the risk guard and was decided.
        wait_for(lambda: daemon.status()["decisions"] > before, 20, 0.1, "decision on the approved proposal")
        other = wait_for(lambda: daemon.ok("pending"), 60, 0.2, "another parked proposal")
        assert daemon.ok("reject", id=other[0]["proposal_id"], reason="test")["rejected"] == other[0]["proposal_id"]
        assert all(a["restarts"] == 0 for a in daemon.status()["actors"])
    finally:
        assert daemon.stop() == 0
