"""Real processes for end-to-end tests: a standalone venue and the daemon.

Both run as `python run.py ...` subprocesses, talk over real sockets, and are
stopped by real signals. The venue is separate from the daemon so a test can
`kill -9` the daemon and still ask the venue what really happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from waiting import wait_for

from stockade.venue import launcher
from stockade.venue.launcher import RUN_PY, child_env

REPO = Path(__file__).resolve().parents[2]


_child_env = child_env  # the daemon's processes get the venue's clean environment too


class VenueProcess(launcher.VenueProcess):
    """`python run.py venue` on a free port with its own key pair and data dir (venue/launcher.py),
    with the reads the tests make through the real alpaca-py client."""

    def __init__(
        self,
        data_dir: Path,
        symbols: str = "AAPL,MSFT,NVDA,AMZN,SPY",
        quote_rate: float = 20.0,
        seed: int = 11,
        key: str | None = None,
        secret: str | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            data_dir,
            symbols=symbols.split(","),
            quote_rate=quote_rate,
            log_path=data_dir.parent / f"{data_dir.name}.log",
            seed=seed,
            key=key,
            secret=secret,
            args=args,
        )

    def client(self) -> Any:
        from stockade.broker.rest import make_trading_client

        return make_trading_client(self.key, self.secret, self.base_url, timeout_s=10)

    def orders(self) -> list[Any]:
        from stockade.broker.order_pages import list_all_orders

        return list_all_orders(self.client(), "all")

    def positions(self) -> dict[str, int]:
        return {p.symbol: int(float(p.qty)) for p in self.client().get_all_positions() if float(p.qty) != 0}


def settings_text(venue: VenueProcess | None, **sections: dict[str, Any]) -> str:
    """A settings file for a fast, test-sized market; `sections` override keys."""
    base: dict[str, dict[str, Any]] = {
        "analyzer": {"evaluate_every_s": 0.2},
        "voter": {"threshold": 0.05, "cooldown_s": 1.0, "in_flight_timeout_s": 5.0},
        # Small orders, room for many: orders keep flowing for minutes.
        "risk": {
            "max_positions": 5,
            "max_position_pct": 50.0,
            "risk_per_trade_pct": 0.1,
            "max_orders_per_min": 200,
            "circuit_breaker_failures": 50,
        },
        "reconciler": {"interval_s": 2.0},
        "supervision": {
            "max_restarts": 5,
            "period_s": 30.0,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.5,
            "heartbeat_interval_s": 0.3,
            "heartbeat_timeout_s": 1.5,
        },
        "emergency": {"retry_interval_s": 0.3, "flat_timeout_s": 20.0},
        "stream": {"backoff_initial_s": 0.1, "backoff_max_s": 1.0},
        "debug": {"fault_injection": True},
        # Daemons of parallel tests must not race for the default port.
        "dashboard": {"port": 0},
    }
    if venue is not None:
        base["venue"] = {"mode": "alpaca"}
        base["alpaca"] = {
            "trading_url": venue.base_url,
            "data_url": venue.base_url,
            "stream_url": venue.data_stream_url,
            "trading_stream_url": venue.trading_stream_url,
        }
    else:
        base["venue"] = {"quote_rate_hz": 20.0}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    out = []
    for name, values in base.items():
        out.append(f"[{name}]")
        for key, value in values.items():
            out.append(f"{key} = {_toml(value)}")
        out.append("")
    return "\n".join(out)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


class DaemonProcess:
    """`python run.py` with a settings file and data dir; stdout+stderr to a log file."""

    def __init__(
        self,
        data_dir: Path,
        settings: str,
        venue: VenueProcess | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.settings_path = data_dir.parent / f"{data_dir.name}.toml"
        self.settings_path.write_text(settings)
        self.log_path = data_dir.parent / f"{data_dir.name}-daemon.log"
        self.socket = data_dir / "control.sock"
        extra = dict(env or {})
        if venue is not None:
            extra.update({"APCA_API_KEY_ID": venue.key, "APCA_API_SECRET_KEY": venue.secret})
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, RUN_PY, "run", "--settings", str(self.settings_path), "--data-dir", str(data_dir), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=_child_env(extra),
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def dashboard_login_url(self, timeout: float = 60.0) -> str:
        """The dashboard's login URL, from the one log line that shows it."""
        import re

        def find() -> str | None:
            # The log may be text or json lines: the URL ends at a space or a quote.
            m = re.search(r"dashboard on \S+ \([^)]*\); log in with (http[^\s\"\\]+)", self.log())
            return m.group(1) if m else None

        return wait_for(find, timeout, 0.1, "the dashboard's login URL in the log")

    def ctl(self, cmd: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        from stockade.ops.ctl import request

        return request(self.socket, cmd, args, timeout)

    def ok(self, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
        reply = self.ctl(cmd, timeout, **args)
        assert reply["ok"], f"{cmd} failed: {reply}\n--- daemon log tail ---\n{self.log()[-4000:]}"
        return reply["result"]

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        def ready() -> Any:
            assert self.proc.poll() is None, f"daemon exited {self.proc.returncode}:\n{self.log()[-4000:]}"
            return "stockade ready" in self.log() and self.ok("status")

        return wait_for(ready, timeout, 0.1, "daemon ready")

    def status(self) -> dict[str, Any]:
        return self.ok("status")

    def actor(self, name: str) -> dict[str, Any]:
        return next(a for a in self.status()["actors"] if a["name"] == name)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                raise AssertionError(
                    f"daemon did not stop on SIGTERM within {timeout}s:\n{self.log()[-4000:]}"
                ) from None
        self._log.close()
        return self.proc.returncode

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()


def ledger_orders(data_dir: Path) -> dict[str, Any]:
    """The daemon's order ledger, read from its lmdb files (daemon stopped)."""
    from stockade.storage.store import Store

    store = Store.open(data_dir, readonly=True)
    try:
        return {k: v for k, v in store.orders.items()}
    finally:
        store.close()


def wait_orders(daemon: DaemonProcess, at_least: int, timeout: float = 60.0) -> dict[str, Any]:
    """Until the daemon has placed at least `at_least` orders; returns that status."""

    def enough() -> Any:
        st = daemon.status()
        return st if st["orders_placed"] >= at_least else None

    return wait_for(enough, timeout, 0.2, f"{at_least} orders placed")


class JournalDaemon(DaemonProcess):
    """The daemon as systemd runs it with its stderr on the journal: `$JOURNAL_STREAM`
    names the log file its stderr goes to, so it logs to `journal` (a
    `journal_receiver.JournalReceiver`; the settings must point
    `logging.journal_socket` at it). `log()` is the entries' messages, then stderr."""

    def __init__(
        self,
        data_dir: Path,
        settings: str,
        journal: Any,
        venue: VenueProcess | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.journal = journal
        log_path = data_dir.parent / f"{data_dir.name}-daemon.log"
        log_path.touch()
        st = os.stat(log_path)  # the harness appends to this very file (same inode)
        super().__init__(data_dir, settings, venue, env={**(env or {}), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})

    def stderr(self) -> str:
        return super().log()

    def log(self) -> str:
        return self.journal.messages() + "\n" + self.stderr()
