"""The venue as a child process (`python run.py venue`): start it on a free port,
set its fault knobs, stop it.

For the end-to-end tests and the benchmarks, which need the venue apart from
the daemon (a test can `kill -9` the daemon and still ask the venue what
really happened). Standard library only: the venue imports nothing of the
product.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RUN_PY = str(Path(__file__).resolve().parents[1] / "run.py")
# What a child must not inherit from the parent's environment: its broker
# keys, and systemd's hand-offs meant for the parent (notify socket, watchdog,
# directories, credentials, journal stream).
_PARENT_ONLY = (
    "APCA_",
    "NOTIFY_SOCKET",
    "WATCHDOG_",
    "STATE_DIRECTORY",
    "RUNTIME_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "OTEL_",
    "JOURNAL_STREAM",
    "INVOCATION_ID",
)
STOP_TIMEOUT_S = 15.0


class VenueStartError(RuntimeError):
    """The venue process did not announce its addresses in time; the message ends with its log."""


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child: without what belongs to the parent, unbuffered, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PARENT_ONLY)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class VenueProcess:
    """`python run.py venue` on a free port with its own key pair, data dir and log file.

    `args` go to `run.py venue` as they are (e.g. ``("--settings", path)``).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        symbols: Iterable[str],
        quote_rate: float,
        log_path: Path,
        seed: int = 11,
        key: str | None = None,
        secret: str | None = None,
        args: tuple[str, ...] = (),
        start_timeout_s: float = 30.0,
    ) -> None:
        self.key = key or "PKTEST" + secrets.token_hex(6).upper()
        self.secret = secret or secrets.token_urlsafe(24)
        self.data_dir = data_dir
        self.log_path = log_path
        data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            RUN_PY,
            "venue",
            *("--port", "0", "--data-dir", str(data_dir), "--seed", str(seed)),
            *("--symbols", ",".join(symbols), "--quote-rate", str(quote_rate)),
            *args,
        ]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=child_env({"APCA_API_KEY_ID": self.key, "APCA_API_SECRET_KEY": self.secret}),
            )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.proc.stdout

        def forward() -> None:  # stdout is read to its end, so the venue never blocks on a full pipe
            for line in stdout or ():
                lines.put(line)

        threading.Thread(target=forward, name="venue-stdout", daemon=True).start()
        try:
            first = lines.get(timeout=start_timeout_s)
        except queue.Empty:
            self.stop()
            raise VenueStartError(f"venue did not announce itself; log:\n{self.log_tail()}") from None
        # Its first line: "venue listening: rest=http://... trading_stream=ws://... data_stream=ws://..."
        fields = dict(part.split("=", 1) for part in first.split() if "=" in part)
        self.base_url = fields["rest"]
        self.trading_stream_url = fields["trading_stream"]
        self.data_stream_url = fields["data_stream"]

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(log unreadable: {exc})"

    def alpaca_settings(self) -> dict[str, str]:
        """The `[alpaca]` settings that point a daemon at this venue."""
        return {
            "trading_url": self.base_url,
            "data_url": self.base_url,
            "stream_url": self.data_stream_url,
            "trading_stream_url": self.trading_stream_url,
        }

    def set_faults(self, **knobs: Any) -> None:
        """Change the venue's fault knobs (`POST /admin/faults`), e.g. `stream_silent=True`."""
        request = urllib.request.Request(
            self.base_url + "/admin/faults",
            data=json.dumps(knobs).encode(),
            method="POST",
            headers={
                "APCA-API-KEY-ID": self.key,
                "APCA-API-SECRET-KEY": self.secret,
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            if reply.status != 200:
                raise RuntimeError(f"venue faults: HTTP {reply.status}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended within STOP_TIMEOUT_S."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
