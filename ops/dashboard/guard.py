"""Who may do what: the middleware every dashboard request passes first.

In order: a request budget (token bucket, 429) and a cap on requests in
hand (503), so a flood costs a refusal each, not work (the kill switch is
exempt from both: no flood may keep the operator from going flat); the Host header
(loopback binds answer only to loopback names: a DNS-rebinding page cannot
reach the API); the body size (413, before it is read); authentication (the
bearer token, or the session cookie the login URL set; 401); and for any
state-changing method with a cookie, the CSRF token in X-CSRF-Token and a
same-origin Origin, or the configured `public_origin` a reverse proxy serves
the page from (403). Every answer carries headers that keep it out of
caches, frames and other sites' scripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from stockade.broker.token_bucket import TokenBucket
from stockade.ops.dashboard import tokens

SESSION_COOKIE = "stockade_session"
CSRF_HEADER = "X-CSRF-Token"
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = ("/login", "/favicon.ico")
UNCOUNTED = ("/api/v1/events",)  # long-lived: limited by max_event_streams instead
# The kill switch is never refused for load: a flood (anyone's, even unauthenticated)
# must not keep the operator from going flat. It still needs Host, size, auth and CSRF.
KILL_PATH = "/api/v1/control/kill"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _deny(request: web.Request, status: int, message: str) -> web.Response:
    if request.path.startswith("/api/") or request.path == "/metrics":
        return web.json_response({"ok": False, "error": message}, status=status)
    return web.Response(status=status, text=f"{status}: {message}\n", content_type="text/plain")


class Guard:
    """The checks, configured once; `middleware` is what the app installs."""

    def __init__(
        self,
        token: str,
        *,
        allowed_hosts: set[str] | None,
        public_origin: str = "",
        max_body_bytes: int,
        max_concurrent: int,
        requests_per_s: float,
    ) -> None:
        self.token = token
        self.session = tokens.session_for(token)
        self.csrf = tokens.csrf_for(token)
        self.allowed_hosts = allowed_hosts  # None: any (behind a proxy, or TLS on a real name)
        # The origin the browser sees when a reverse proxy in front rewrites Host.
        self.public_origin = origin_of(public_origin) if public_origin else ""
        self.max_body_bytes = max_body_bytes
        self.max_concurrent = max_concurrent
        self.bucket = TokenBucket(requests_per_s * 60.0, capacity=max(requests_per_s, 1.0))
        self.in_hand = 0
        self.refused: dict[str, int] = {"rate": 0, "busy": 0, "host": 0, "size": 0, "auth": 0, "csrf": 0}

    def authenticated(self, request: web.Request) -> str:
        """ "bearer", "cookie" or "" (not authenticated)."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and tokens.same(header[7:].strip(), self.token):
            return "bearer"
        if tokens.same(request.cookies.get(SESSION_COOKIE), self.session):
            return "cookie"
        return ""

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await self._checked(request, handler)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        kill = request.method == "POST" and request.path == KILL_PATH
        if not self.bucket.take() and not kill:
            self.refused["rate"] += 1
            return _deny(request, 429, "too many requests")
        counted = request.path not in UNCOUNTED
        if counted and self.in_hand >= self.max_concurrent and not kill:
            self.refused["busy"] += 1
            return _deny(request, 503, "busy")
        if self.allowed_hosts is not None and request.headers.get("Host", "").lower() not in self.allowed_hosts:
            self.refused["host"] += 1
            return _deny(request, 421, "unexpected Host header")
        length = request.content_length
        if (length is not None and length > self.max_body_bytes) or (
            length is None
            and request.method not in SAFE_METHODS
            and request.can_read_body
            and request.headers.get("Transfer-Encoding")
        ):
            # Chunked bodies have no length to check first: refused, the UI never sends them.
            self.refused["size"] += 1
            return _deny(request, 413, f"request body too large (max {self.max_body_bytes} bytes)")
        public = request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES)
        how = self.authenticated(request)
        if not public and not how:
            self.refused["auth"] += 1
            return _deny(
                request,
                401,
                "not authenticated: open the login URL from the daemon's log, or send Authorization: Bearer <token>",
            )
        if request.method not in SAFE_METHODS and how == "cookie" and not self._csrf_ok(request):
            self.refused["csrf"] += 1
            return _deny(request, 403, "CSRF check failed")
        if not counted:
            return await handler(request)
        self.in_hand += 1
        try:
            return await handler(request)
        except asyncio.CancelledError:
            raise
        finally:
            self.in_hand -= 1

    def _csrf_ok(self, request: web.Request) -> bool:
        if not tokens.same(request.headers.get(CSRF_HEADER), self.csrf):
            return False
        origin = request.headers.get("Origin")
        if origin is None or origin == "null":
            return origin is None
        if self.public_origin and origin_of(origin) == self.public_origin:
            return True
        host = request.headers.get("Host", "")
        return origin.split("://", 1)[-1].lower() == host.lower()


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str:
    """`url`'s origin as a browser writes it: scheme://host[:port], lower case,
    no default port, nothing after the authority ("" when it has no host)."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        return ""
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not scheme or not host:
        return ""
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS.get(scheme) else "")


def loopback_hosts(host: str, port: int) -> set[str]:
    """The Host headers a loopback bind answers to."""
    names = {"127.0.0.1", "localhost", "[::1]", host if ":" not in host else f"[{host}]"}
    return {f"{n}:{port}" for n in names} | ({n for n in names} if port in (80, 443) else set())


def cookie_options(secure: bool) -> dict[str, Any]:
    return {"httponly": True, "samesite": "Strict", "path": "/", "secure": secure}
