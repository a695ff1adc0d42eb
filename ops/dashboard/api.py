"""The HTTP routes: the page and its assets, the JSON API under /api/v1, the
event stream, the login URL and /metrics.

Reads run on a small pool of threads (`Pools.reads`), never on the event
loop, so a slow storage read does not stall the other clients. Control
actions go to the control server's `call`: the same handlers and the same
audit trail as `ctl`, nothing parallel. Every body leaves through `redact`,
a last line of defence against a secret in any answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.resources
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from stockade.broker.rest import redact
from stockade.ops.dashboard import tokens
from stockade.ops.dashboard.events import Broadcaster
from stockade.ops.dashboard.guard import SESSION_COOKIE, Guard, cookie_options
from stockade.ops.dashboard.metrics import CONTENT_TYPE, Metrics
from stockade.ops.dashboard.views import Views

log = logging.getLogger(__name__)

API = "/api/v1"
CONTROL_COMMANDS = ("halt", "reduce", "resume", "kill", "approve", "reject")
STATIC_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The shipped assets (package data), read once."""
    root = importlib.resources.files("stockade.ops.dashboard") / "static"
    out = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            out[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return out


class Pools:
    """Bounded threads for blocking work: storage reads, and control commands (a kill may take a while)."""

    def __init__(self) -> None:
        self.reads = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="dashboard-read")
        # Three threads, at most two for ordinary actions: a kill always finds one free.
        self.control = concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="dashboard-control")
        self.control_in_flight = 0

    def shutdown(self) -> None:
        self.reads.shutdown(wait=False, cancel_futures=True)
        self.control.shutdown(wait=False, cancel_futures=True)


def json_bytes(data: Any) -> bytes:
    return redact(msgspec.json.encode(data).decode()).encode()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json_bytes(data), status=status, content_type="application/json")


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a whole number, got {raw!r}") from None
    return max(low, min(high, value))


class Api:
    """The routes over the views, the metrics and the control server."""

    def __init__(
        self,
        views: Views,
        metrics: Metrics,
        control: Any,
        guard: Guard,
        pools: Pools,
        *,
        control_enabled: bool,
        interval_s: float,
        max_streams: int,
        secure_cookie: bool,
    ) -> None:
        self.views = views
        self.metrics = metrics
        self.control = control
        self.guard = guard
        self.pools = pools
        self.control_enabled = control_enabled
        self.secure_cookie = secure_cookie
        self.static = _static_files()
        self.live = Broadcaster(
            lambda: json_bytes(views.live()),
            metrics.poll,
            interval_s=interval_s,
            max_streams=max_streams,
            run_blocking=self._read,
        )

    async def _read(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pools.reads, fn)

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/login", self.login)
        r.add_get("/static/{name}", self.asset)
        r.add_get("/metrics", self.scrape)
        r.add_get(f"{API}/session", self.session)
        r.add_get(f"{API}/events", self.live.stream)
        for name, fn in (
            ("status", self.views.status),
            ("overview", self.views.overview),
            ("tree", self.views.tree_view),
            ("pending", self.views.pending),
            ("report", self.views.report),
        ):
            r.add_get(f"{API}/{name}", self._plain(fn))
        r.add_get(f"{API}/decisions", self.decisions)
        r.add_get(f"{API}/alerts", self.alerts)
        r.add_get(f"{API}/equity", self.equity)
        r.add_get(f"{API}/orders", self.orders)
        r.add_get(f"{API}/audit", self.audit)
        r.add_post(f"{API}/control/{{cmd}}", self.command)

    # ---- pages ----------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        body, kind = self.static["index.html"]
        return web.Response(body=body, content_type=kind, charset="utf-8")

    async def asset(self, request: web.Request) -> web.Response:
        found = self.static.get(request.match_info["name"])
        if found is None or request.match_info["name"] == "index.html":
            raise web.HTTPNotFound()
        return web.Response(
            body=found[0], content_type=found[1], charset="utf-8" if found[1].startswith("text/") else None
        )

    async def login(self, request: web.Request) -> web.Response:
        """GET /login?token=...: the once-logged URL; sets the session cookie and sends the browser on to /."""
        if not tokens.same(request.query.get("token"), self.guard.token):
            self.guard.refused["auth"] += 1
            return web.Response(status=401, text="401: bad or missing token\n", content_type="text/plain")
        response = web.HTTPSeeOther("/")
        response.set_cookie(SESSION_COOKIE, self.guard.session, **cookie_options(self.secure_cookie))
        raise response

    async def session(self, request: web.Request) -> web.Response:
        return _json({"csrf": self.guard.csrf, "control": self.control_enabled})

    async def scrape(self, request: web.Request) -> web.Response:
        body = await self._read(self.metrics.render)
        return web.Response(body=redact(body.decode()).encode(), headers={"Content-Type": CONTENT_TYPE})

    # ---- reads ----------------------------------------------------------------

    def _plain(self, fn: Callable[[], Any]) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            return _json(await self._read(fn))

        return handler

    async def decisions(self, request: web.Request) -> web.Response:
        limit = _int(request, "limit", 25, 1, 200)
        before = request.query.get("before", "")
        try:
            bytes.fromhex(before)
        except ValueError:
            raise web.HTTPBadRequest(text=f"before must be a cursor from a previous page, got {before!r}") from None
        return _json(await self._read(lambda: self.views.decisions(limit, before)))

    async def alerts(self, request: web.Request) -> web.Response:
        limit = _int(request, "limit", 50, 1, 200)
        level = request.query.get("level", "INFO").upper()
        try:
            return _json(await self._read(lambda: self.views.alerts(limit, level)))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None

    async def equity(self, request: web.Request) -> web.Response:
        hours = _int(request, "hours", 24, 1, 24 * 400)
        points = _int(request, "points", 500, 2, 2000)
        return _json(await self._read(lambda: self.views.equity(hours, points)))

    async def orders(self, request: web.Request) -> web.Response:
        limit = _int(request, "limit", 50, 1, 200)
        after = request.query.get("after", "")[:128]
        open_only = request.query.get("open", "") in ("1", "true")
        return _json(await self._read(lambda: self.views.orders(limit, after, open_only)))

    async def audit(self, request: web.Request) -> web.Response:
        limit = _int(request, "limit", 50, 1, 200)
        return _json(await self._read(lambda: self.views.audit(limit)))

    # ---- control --------------------------------------------------------------

    async def command(self, request: web.Request) -> web.Response:
        """POST /api/v1/control/{halt,reduce,resume,kill,approve,reject}, JSON body of the command's args."""
        cmd = request.match_info["cmd"]
        if cmd not in CONTROL_COMMANDS:
            return _json({"ok": False, "error": f"unknown control action {cmd!r}"}, 404)
        if not self.control_enabled:
            return _json({"ok": False, "error": "read-only dashboard (dashboard.control = false)"}, 403)
        try:
            raw = await request.read() if request.can_read_body else b""
            args = msgspec.json.decode(raw, type=dict[str, Any]) if raw.strip() else {}
        except web.HTTPRequestEntityTooLarge:
            raise
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _json({"ok": False, "error": f"body must be a JSON object: {exc}"}, 400)
        if cmd == "kill" and args.pop("confirm", None) != "kill":
            return _json({"ok": False, "error": 'kill needs {"confirm": "kill"}: it closes every position'}, 400)
        if self.pools.control_in_flight >= 2 and cmd != "kill":
            return _json({"ok": False, "error": "busy: control actions already running"}, 503)
        peer = request.remote or "?"
        self.pools.control_in_flight += 1
        try:
            reply = await asyncio.get_running_loop().run_in_executor(
                self.pools.control, lambda: self.control.call(cmd, args, via=f"dashboard {peer}")
            )
        finally:
            self.pools.control_in_flight -= 1
        if reply.get("ok"):
            self.live.refresh_soon()
        return _json(reply, 200 if reply.get("ok") else 409)
