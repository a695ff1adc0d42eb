"""The dashboard's server: aiohttp on a thread and an event loop of its own.

Nothing of it runs on an actor's thread, and the actors never wait for it:
it reads the storage and the published counters, and hands control actions
to the control server. Its bounds (guard.py, events.py, the read pools) keep
a hostile client's cost on this thread. Start-up order in the daemon: after
the control server (whose commands it calls); stopped before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from stockade.config.settings import LOOPBACK_HOSTS, DashboardSettings
from stockade.ops.dashboard import tokens
from stockade.ops.dashboard.api import Api, Pools
from stockade.ops.dashboard.guard import Guard, loopback_hosts
from stockade.ops.dashboard.metrics import Metrics
from stockade.ops.dashboard.views import Views

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0


class DashboardError(RuntimeError):
    """The dashboard cannot start (bad bind, token problem); the message says why."""


class DashboardServer:
    """`start()` binds and serves on a thread; `url` and `login_url` tell where; `stop()` ends it."""

    def __init__(self, settings: DashboardSettings, svc: Any, tree: Any, control: Any, data_dir: Path) -> None:
        self.settings = settings
        self.svc = svc
        self.tree = tree
        self.control = control
        self.data_dir = data_dir
        self.token = ""
        self.url = ""
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._pools = Pools()
        self.api: Api | None = None

    @property
    def login_url(self) -> str:
        return f"{self.url}login?token={self.token}"

    def start(self) -> None:
        s = self.settings
        if s.host not in LOOPBACK_HOSTS and not s.tls_cert and not s.behind_proxy:
            # Settings validation refuses this too; a server built by hand must not slip past.
            raise DashboardError(f"dashboard.host = {s.host!r} is not loopback: needs TLS or behind_proxy")
        try:
            self.token, _where = tokens.load_or_create(tokens.token_path(s.token_file, self.data_dir))
        except tokens.TokenError as exc:
            raise DashboardError(str(exc)) from None
        self._thread = threading.Thread(target=self._main, name="dashboard", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise DashboardError(f"dashboard did not start within {START_TIMEOUT_S:.0f}s")
        if self._error is not None:
            raise DashboardError(f"dashboard cannot serve on {s.host}:{s.port}: {self._error}")

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # never let the thread die silently
            self._error = exc
            try:  # what did start (the runner, the live feed) ends; the loop is closed
                loop.run_until_complete(self._cleanup())
            except Exception as cleanup_exc:
                log.warning("dashboard clean-up after a failed start: %s", cleanup_exc)
            finally:
                loop.close()
                self._started.set()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._cleanup())
            loop.close()

    def _app(self) -> web.Application:
        s = self.settings
        tls = bool(s.tls_cert)
        loopback = s.host in LOOPBACK_HOSTS and not s.behind_proxy
        guard = Guard(
            self.token,
            allowed_hosts=None,
            public_origin=s.public_origin,
            max_body_bytes=s.max_body_bytes,
            max_concurrent=s.max_concurrent_requests,
            requests_per_s=s.requests_per_s,
        )
        metrics = Metrics(self.svc, self.tree)
        views = Views(self.svc, self.tree, metrics.tail)
        self.api = Api(
            views,
            metrics,
            self.control,
            guard,
            self._pools,
            control_enabled=s.control,
            interval_s=s.update_interval_s,
            max_streams=s.max_event_streams,
            secure_cookie=tls or s.behind_proxy,
        )  # behind a TLS proxy the browser sees https
        self._guard, self._loopback = guard, loopback
        app = web.Application(middlewares=[guard.middleware], client_max_size=s.max_body_bytes)
        self.api.routes(app)
        return app

    async def _serve(self) -> None:
        s = self.settings
        app = self._app()
        context = None
        if s.tls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(s.tls_cert, s.tls_key)
        # access_log None: the login URL carries the token in its query string.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port, ssl_context=context, backlog=128)
        await site.start()
        addresses = self._runner.addresses  # the bound sockets: port 0 asks the OS for a free one
        self.port = addresses[0][1] if addresses else s.port
        if self._loopback:
            self._guard.allowed_hosts = loopback_hosts(s.host, self.port)
        host = f"[{s.host}]" if ":" in s.host else s.host
        self.url = f"{'https' if context else 'http'}://{host}:{self.port}/"
        assert self.api is not None
        self.api.live.start()

    async def _cleanup(self) -> None:
        if self.api is not None:
            await self.api.live.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        # Streams still open (a client that never reads): end them rather than abandon them.
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:
            t.cancel()
        await asyncio.wait_for(asyncio.gather(*rest, return_exceptions=True), 2.0) if rest else None

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop serving; True if the thread ended in time."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return True
        # Scheduled even when the loop is not running yet (a stop just after
        # start): run_forever then stops at its first turn instead of serving on.
        with contextlib.suppress(RuntimeError):  # closed: the thread is ending already
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._pools.shutdown()
        return not thread.is_alive()
