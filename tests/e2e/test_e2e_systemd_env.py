"""The daemon as systemd starts it: no --data-dir, no keys in the environment;
$STATE_DIRECTORY, $RUNTIME_DIRECTORY and $CREDENTIALS_DIRECTORY say where things are."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

from daemon_harness import RUN_PY, _child_env, settings_text
from waiting import wait_for

from stockade.ops.ctl import request


def test_daemon_honours_systemd_directories_and_credentials(short_dir, venue):
    state, runtime, creds = short_dir / "state", short_dir / "run", short_dir / "creds"
    for d in (state, runtime, creds):
        d.mkdir(mode=0o700)
    (creds / "APCA_API_KEY_ID").write_text(venue.key + "\n")
    (creds / "APCA_API_SECRET_KEY").write_text(venue.secret + "\n")
    settings = short_dir / "settings.toml"
    settings.write_text(settings_text(venue))
    log_path = short_dir / "daemon.log"
    env = _child_env(
        {"STATE_DIRECTORY": str(state), "RUNTIME_DIRECTORY": str(runtime), "CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert not any(k.startswith("APCA_") for k in env)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, RUN_PY, "--settings", str(settings)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=short_dir,
        )
    sock = runtime / "control.sock"
    try:

        def ready():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            return "stockade ready" in log_path.read_text() and request(sock, "status", {}, 10)

        reply = wait_for(ready, 60, 0.1, "daemon ready on $RUNTIME_DIRECTORY/control.sock")
        st = reply["result"]
        # The keys came from the credentials: the daemon is on the venue, and its account was read.
        assert st["venue"] == "alpaca-paper" and st["trading_url"] == venue.base_url
        wait_for(lambda: request(sock, "status", {}, 10)["result"]["equity"], 30, 0.2, "equity read with the keys")
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert (state / "stockade.lmdb" / "data.mdb").exists() and (state / "daemon.running").exists()
        assert not (short_dir / "var").exists()  # not the ./var default
        # ctl, from a shell with the same environment, finds the same socket.
        ctl = subprocess.run(
            [sys.executable, RUN_PY, "ctl", "status"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=short_dir,
        )
        assert ctl.returncode == 0, ctl.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
    assert code == 0, log_path.read_text()[-3000:]
    assert not sock.exists() and not (state / "daemon.running").exists()  # a clean stop
    text = log_path.read_text()
    assert venue.key not in text and venue.secret not in text
