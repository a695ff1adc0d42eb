"""Live updates by server-sent events, conflated: a slow reader skips, never queues.

One producer task on the web loop builds the live snapshot every
`interval_s` (on the read pool, only while someone listens) and keeps only
the newest, numbered. Each stream waits for a newer number and writes that:
a client that reads slowly sees fewer updates, and one that never reads
fills its socket buffer, hits the write timeout and is dropped. Memory per
client is one reference to a shared bytes object; streams are capped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

WRITE_TIMEOUT_S = 10.0
KEEPALIVE_S = 15.0


class Broadcaster:
    """The newest live snapshot, and the event streams that follow it."""

    def __init__(
        self,
        build: Callable[[], bytes],
        tick: Callable[[], None],
        *,
        interval_s: float,
        max_streams: int,
        run_blocking: Callable[[Callable[[], Any]], Any],
    ) -> None:
        self._build = build  # blocking: run on the read pool
        self._tick = tick  # blocking, every interval even with nobody listening (metrics tails)
        self.interval_s = interval_s
        self.max_streams = max_streams
        self._run = run_blocking
        self.version = 0
        self.data = b""
        self.streams = 0
        self.dropped = 0
        # Replaced at each version; the old one is set. (An Event binds to the loop at first use.)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._produce(), name="dashboard-live")

    def refresh_soon(self) -> None:
        """A refresh without waiting for it (after a control action: show its effect at once)."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self.refresh())

    async def stop(self) -> None:
        for task in (self._task, self._refresh):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass

    async def _produce(self) -> None:
        while True:
            try:
                await self._run(self._tick)
                if self.streams:
                    await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dashboard: live update failed")
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> None:
        """Build a new snapshot now and wake the streams."""
        data = await self._run(self._build)
        self.data = data
        self.version += 1
        woken, self._changed = self._changed, asyncio.Event()
        woken.set()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """GET /api/v1/events: `event: update` with the live snapshot as JSON, newest only."""
        if self.streams >= self.max_streams:
            return web.json_response(
                {"ok": False, "error": f"too many event streams (max {self.max_streams})"}, status=503
            )
        self.streams += 1
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
            )
            from stockade.ops.dashboard.guard import SECURITY_HEADERS

            response.headers.update(SECURITY_HEADERS)
            response.headers["Content-Type"] = "text/event-stream"
            await response.prepare(request)
            if self.version == 0:
                await self.refresh()
            seen = 0
            while True:
                if self.version == seen:
                    try:
                        await asyncio.wait_for(self._changed.wait(), KEEPALIVE_S)
                    except TimeoutError:
                        pass
                version, data = self.version, self.data
                if request.transport is None or request.transport.is_closing():
                    break  # the client went away
                chunk = b": keep-alive\n\n" if version == seen else b"event: update\ndata: " + data + b"\n\n"
                seen = version
                try:
                    await asyncio.wait_for(response.write(chunk), WRITE_TIMEOUT_S)
                except (TimeoutError, ConnectionError):
                    self.dropped += 1
                    log.info("dashboard: dropped an event stream that stopped reading")
                    break
        finally:
            self.streams -= 1
        if request.transport is not None:
            request.transport.close()
        return response
