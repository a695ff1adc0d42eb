"""The venue's access log: one INFO line per request, for bot authors debugging against it.

Method, path, status and latency only. The query string and every header stay
out: keys travel in headers (APCA-API-KEY-ID / APCA-API-SECRET-KEY), and a
query is the client's to fill. A websocket's line is written when it closes,
its latency being the connection's lifetime.

The path is the client's text, percent-decoded by aiohttp: `%0A`, `%1B` and
the like become real newlines and escape bytes. They are escaped
(Python-style, `\\n`, `\\x1b`) so a request can neither forge a log line nor
drive the terminal of whoever reads the log; the standalone venue logs with
a plain `logging.basicConfig` format that escapes nothing itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("stockade.venue.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def printable_path(path: str) -> str:
    """`path` with every unprintable character escaped: one printable line whatever the client sent."""
    if path.isprintable():
        return path
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in path)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: time the request and log its outcome (also when it fails)."""
    started = time.perf_counter()
    status: int | str = "-"  # nothing was answered (the client went away, the venue stopped)
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        log.info("%s %s %s %.1fms", request.method, printable_path(request.path), status, elapsed_ms)
