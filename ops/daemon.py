"""`python run.py [run]`: the daemon.

Start-up order: settings (exit 2 if bad) -> data dir and storage (one daemon
per data dir) -> broker (the embedded venue when there are no Alpaca keys) ->
telemetry -> the supervision tree -> control socket -> READY=1 once the first
reconciliation is done. Then: WATCHDOG=1 while the supervisors report
healthy heartbeats. SIGTERM/SIGINT: STOPPING=1, control socket closed, the
tree stopped children-first, venue and storage closed, exit 0.

A daemon that died without an orderly stop (kill -9, OOM, power) comes back
HALTED: a marker file written at start and removed at a clean stop says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets as pysecrets
import signal
import sys
import threading
import time
from typing import Any

from stockade.config import paths
from stockade.config import secrets as ops_secrets
from stockade.config.settings import Settings, SettingsError, load_settings, resolve_venue_mode
from stockade.ops import sdnotify
from stockade.ops.affinity import apply_cpu_affinity
from stockade.ops.live_guard import check_trading_mode

log = logging.getLogger("stockade")

RUNNING_MARKER = "daemon.running"
READY_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 30.0
# The orderly stop's budget, step by step; deploy/stockade.service's
# TimeoutStopSec must cover the sum (a test holds it).
CONTROL_STOP_S = 5.0
TREE_STOP_S = 60.0
VENUE_STOP_S = 10.0
DASHBOARD_STOP_S = 3.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python run.py run", description="Run the stockade daemon.")
    parser.add_argument("--settings", help="settings TOML file (partial files allowed)")
    parser.add_argument("--data-dir", help="data directory (default: $STATE_DIRECTORY or ./var)")
    parser.add_argument("--duration", type=float, help="stop cleanly after this many seconds")
    return parser.parse_args(argv)


class RedactingFilter(logging.Filter):
    """Last line of defence: every log record leaves with known secrets replaced by ***.

    Call sites redact already; this catches the one that forgot (an exception
    text quoting a URL with a token, a library's debug line).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from stockade.broker.rest import redact

        message = record.getMessage()
        clean = redact(message)
        exc_text = None
        if record.exc_info and not record.exc_text:
            exc_text = logging.Formatter().formatException(record.exc_info)
        elif record.exc_text:
            exc_text = record.exc_text
        if clean != message:
            record.msg, record.args = clean, None
        if exc_text is not None:
            record.exc_text = redact(exc_text)
            record.exc_info = None  # the formatter would render the raw traceback again
        return True


def setup_logging(logging_settings: Any) -> str:
    """The log handler per `[logging]` (text, json or the journal: ops/logs/setup.py),
    every record redacted; returns where logs go."""
    from stockade.ops.logs import setup as log_setup

    return log_setup.install(logging_settings, [RedactingFilter()])


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: usage error
        return 2 if exc.code else 0
    try:
        settings = load_settings(args.settings)
        if args.duration is not None and not args.duration > 0:
            raise SettingsError(f"--duration = {args.duration}: must be > 0 seconds")
        mode = resolve_venue_mode(settings)
        keys = ops_secrets.alpaca_keys()
        money = check_trading_mode(settings, mode)
        # Before any thread exists: threads inherit the mask of their creator.
        pinned = apply_cpu_affinity(settings.runtime.cpu_affinity)
    except (SettingsError, OSError) as exc:
        print(f"stockade: {exc}", file=sys.stderr)
        return 2
    from stockade.broker.rest import register_secret

    # Before the first log line: from here on, no configured secret reaches any log.
    register_secret(*ops_secrets.known_secret_values())
    log_target = setup_logging(settings.logging)
    log.info("logging to %s", log_target)
    if pinned is not None:
        log.info("pinned to CPU %s (runtime.cpu_affinity)", ",".join(map(str, sorted(pinned))))
    if money == "live":
        log.warning("LIVE TRADING: real money (alpaca.paper = false, alpaca.allow_live = true)")
    try:
        return Daemon(settings, mode, keys, args).run()
    except StartupError as exc:
        log.error("%s", exc)
        return 1


class StartupError(Exception):
    """Start-up cannot go on; the message says why in one line."""


class Daemon:
    def __init__(self, settings: Settings, mode: str, keys: tuple[str, str] | None, args: argparse.Namespace) -> None:
        self.settings = settings
        self.mode = mode
        self.keys = keys
        self.duration = args.duration
        self.data = paths.ensure_private_dir(paths.data_dir(args.data_dir))
        self.stop_event = threading.Event()
        self.venue: Any = None
        self.store: Any = None
        self.tree: Any = None
        self.control: Any = None
        self.dashboard: Any = None
        self.telemetry_shutdown: Any = None

    # ---- lifecycle --------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        try:
            self._start()
            self._loop()
        finally:
            self._stop()
        return 0

    def _install_signals(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            log.info("%s received: stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _start(self) -> None:
        from stockade.actors.services import BrokerAccess, Services
        from stockade.actors.tree import start_stockade_tree
        from stockade.ops import telemetry
        from stockade.ops.alerts.machinery import Alerting
        from stockade.ops.commands import register_commands
        from stockade.ops.control import ControlError, ControlServer
        from stockade.ops.preload import preload
        from stockade.storage.environment import DataDirLocked
        from stockade.storage.store import Store
        from stockade.supervisors.faults import FaultInjector

        try:
            self.store = Store.open(self.data, sync_mode=self.settings.storage.sync_mode)
        except DataDirLocked as exc:
            raise StartupError(f"stockade: data dir {self.data} is in use by another process ({exc})") from None
        broker = self._broker(BrokerAccess)
        faults = FaultInjector(enabled=self.settings.debug.fault_injection)
        svc = Services(settings=self.settings, store=self.store, broker=broker, faults=faults, alerting=Alerting())
        self.svc = svc
        self._check_previous_run(svc)
        self.telemetry_shutdown = telemetry.setup(self.settings.telemetry)
        log.info(
            "starting stockade: venue %s (%s), symbols %s, data dir %s, trading state %s",
            broker.venue,
            broker.endpoints.trading_url,
            ",".join(self.settings.trading.symbols),
            self.data,
            svc.trading_state().state,
        )
        # Before any actor thread: concurrent first imports can fail (ops/preload.py).
        preload(self.settings, self.data)
        self.tree = start_stockade_tree(svc, self._on_exhausted, str(self.data))
        socket_path = paths.control_socket_path(self.settings, self.data)
        self.control = ControlServer.from_settings(self.settings.control, socket_path, audit=self._store_audit)
        register_commands(self.control, svc, self.tree)
        try:
            self.control.start()
        except ControlError as exc:
            raise StartupError(f"stockade: control socket: {exc}") from None
        log.info("control socket: %s", socket_path)
        self.dashboard = self._start_dashboard(svc)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not svc.first_reconcile.wait(0.2):
            if self.stop_event.is_set():
                return
            if time.monotonic() > deadline:
                # Not ready is not fatal: the reconciler keeps trying; systemd's
                # start timeout decides.
                log.error("first reconciliation not done after %.0fs; still trying", READY_TIMEOUT_S)
                deadline = float("inf")
        sdnotify.ready(f"trading state {svc.trading_state().state}")
        log.info("stockade ready: tree up and reconciled; trading state %s", svc.trading_state().state)

    def _start_dashboard(self, svc: Any) -> Any:
        """The web dashboard (ops/dashboard/); trading goes on without it if it cannot start."""
        if not self.settings.dashboard.enabled:
            return None
        from stockade.broker.rest import register_secret
        from stockade.ops.dashboard import DashboardError, DashboardServer

        server = DashboardServer(self.settings.dashboard, svc, self.tree, self.control, self.data)
        try:
            server.start()
        except DashboardError as exc:
            log.error("dashboard not started: %s", exc)
            server.stop()
            return None
        mode = "control enabled" if self.settings.dashboard.control else "read-only"
        # Shown once, then a secret like any other: no later log line, alert or answer carries it.
        log.warning("dashboard on %s (%s); log in with %s", server.url, mode, server.login_url)
        register_secret(server.token)
        return server

    def _store_audit(self, record: Any) -> None:
        from stockade.ops.control import READ_ONLY

        # Reads skip the sync (a dashboard polling status must not fsync each time).
        self.store.audit.add(record, durable=record.cmd not in READ_ONLY)

    def _broker(self, BrokerAccess: Any) -> Any:
        from stockade.broker.rest import BrokerEndpoints, endpoints_for

        s = self.settings
        if self.mode == "embedded":
            from stockade.venue.config import VenueConfig
            from stockade.venue.server import start_venue

            # A fresh key pair per run: the embedded venue accepts only it.
            key, secret = "PK" + pysecrets.token_hex(9).upper(), pysecrets.token_urlsafe(30)
            try:
                self.venue = start_venue(
                    VenueConfig(
                        host=s.venue.host,
                        port=s.venue.port,
                        seed=s.venue.seed,
                        data_dir=str(self.data / "venue"),
                        api_key=key,
                        api_secret=secret,
                        symbols=tuple(s.trading.symbols),
                        quote_rate_hz=s.venue.quote_rate_hz,
                        quote_arrivals=s.venue.quote_arrivals,
                        clock=s.venue.clock,
                        initial_cash=s.venue.initial_cash,
                    )
                )
            except (OSError, RuntimeError) as exc:
                raise StartupError(
                    f"stockade: the embedded venue could not start on {s.venue.host}:{s.venue.port}: {exc}"
                ) from None
            endpoints = BrokerEndpoints(
                self.venue.base_url,
                self.venue.base_url,
                self.venue.data_stream_url(s.alpaca.feed),
                self.venue.trading_stream_url,
            )
            log.info("embedded paper venue on %s", self.venue.base_url)
            return BrokerAccess("embedded", endpoints, key, secret, True, s.orders.request_timeout_s)
        assert self.keys is not None
        try:
            endpoints = endpoints_for(s.alpaca)
        except ValueError as exc:
            raise StartupError(f"stockade: {exc}") from None
        venue = "alpaca-live" if s.alpaca.live else "alpaca-paper"
        return BrokerAccess(venue, endpoints, self.keys[0], self.keys[1], not s.alpaca.live, s.orders.request_timeout_s)

    def _check_previous_run(self, svc: Any) -> None:
        marker = self.data / RUNNING_MARKER
        if marker.exists():
            previous = marker.read_text().strip() or "?"
            svc.set_trading_state("HALTED", f"previous run (pid {previous}) did not stop cleanly", "startup")
            log.warning("previous run (pid %s) did not stop cleanly: trading HALTED until `ctl resume`", previous)
        elif svc.trading_state().state == "HALTED":
            log.warning("trading state is HALTED (%s): no new orders until `ctl resume`", svc.trading_state().reason)
        marker.write_text(str(os.getpid()))

    def _on_exhausted(self, reason: str) -> None:
        from stockade.actors.emergency_stop import emergency_liquidation

        log.critical("supervision gave up (%s): full liquidation", reason)
        emergency_liquidation(self.svc, reason, "supervision")  # logs its outcome

    def _loop(self) -> None:
        interval = sdnotify.watchdog_interval_s()
        tick = min(1.0, interval / 2) if interval else 1.0
        started = time.monotonic()
        last_progress = started
        shown = None
        while not self.stop_event.wait(tick):
            healthy = self.tree.healthy()
            if healthy:
                sdnotify.watchdog()
            if sdnotify.enabled():
                # `systemctl status` shows this line: keep it current.
                state: str
                try:
                    state = self.svc.trading_state().state
                except Exception:  # a status line is not worth stopping the watchdog loop for
                    state = "unknown"
                line = f"trading state {state}" + ("" if healthy else "; NOT healthy")
                if line != shown:
                    shown = line if sdnotify.status(line) else None
            now = time.monotonic()
            if now - last_progress >= PROGRESS_EVERY_S:
                last_progress = now
                self._log_progress()
            if self.duration is not None and now - started >= self.duration:
                log.info("--duration %.0fs reached: stopping", self.duration)
                break

    def _log_progress(self) -> None:
        from stockade.ops.commands import status

        st = status(self.svc, self.tree)
        orders = st["orders_placed"]
        held = ", ".join(f"{p['qty']} {p['symbol']}" for p in st["positions"]) or "nothing"
        log.info(
            "progress: state %s, %d orders placed so far, holding %s, equity %s, healthy %s",
            st["trading_state"],
            orders,
            held,
            st["equity"],
            st["healthy"],
        )

    def _stop(self) -> None:
        sdnotify.stopping()
        clean = True
        if self.dashboard is not None:
            self.dashboard.stop(timeout=DASHBOARD_STOP_S)
        if self.control is not None:
            self.control.stop(timeout=CONTROL_STOP_S)
        if self.tree is not None:
            clean = self.tree.stop(timeout=TREE_STOP_S) and clean
        if self.venue is not None:
            try:
                self.venue.stop(timeout=VENUE_STOP_S)
            except Exception:
                log.exception("venue did not stop cleanly")
                clean = False
        if self.telemetry_shutdown is not None:
            self.telemetry_shutdown()
        if self.store is not None:
            if clean:
                (self.data / RUNNING_MARKER).unlink(missing_ok=True)
            self.store.close()
        log.info("stockade stopped%s", "" if clean else " (not everything stopped in time)")
