"""The trade-updates websocket at /stream (and /stream/), in Alpaca's trading-stream protocol.

    client: {"action":"authenticate","data":{"key_id":K,"secret_key":S}}
    server: {"stream":"authorization","data":{"action":"authenticate","status":"authorized"}}
    client: {"action":"listen","data":{"streams":["trade_updates"]}}
    server: {"stream":"listening","data":{"streams":["trade_updates"]}}
    server: {"stream":"trade_updates","data":{"event":"fill","order":{...},...}}

Like Alpaca's paper endpoint, the server sends binary frames (JSON text in
them); it reads both text and binary frames. A bad key gets the "unauthorized"
reply and the socket is closed; no authentication within
`config.auth_timeout_s` closes it too. The stream_silent fault stops trade
updates while control replies still flow.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from stockade.venue.alpaca_json import trade_update_json
from stockade.venue.context import VenueContext
from stockade.venue.exchange import TradeEvent

log = logging.getLogger(__name__)

KIND = "trading"
# Alpaca's own URL has no trailing slash; alpaca-trade-api (Python) asks for "/stream/".
PATHS = ("/stream", "/stream/")
AVAILABLE_STREAMS = ("trade_updates",)
_OUTBOX_LIMIT = 10_000  # frames queued for one slow client before it is dropped


class TradeStreamSession:
    """One /stream connection: its auth state, its listened streams and its outbox."""

    def __init__(self, ws: web.WebSocketResponse, ctx: VenueContext) -> None:
        self.ws = ws
        self.ctx = ctx
        self.authorized = False
        self.streams: set[str] = set()
        self.outbox: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_OUTBOX_LIMIT)

    def send(self, message: dict[str, Any], *, data: bool = False) -> None:
        """Queue one frame; a full outbox drops the client.

        The stream_silent fault swallows data frames only: control replies still
        flow, so the socket looks alive while updates stall (what silence
        detection must catch).
        """
        if data and self.ctx.faults.stream_silent:
            return
        try:
            self.outbox.put_nowait(json.dumps(message, separators=(",", ":")).encode())
        except asyncio.QueueFull:
            log.warning("trade stream client too slow, dropping it")
            self.outbox = asyncio.Queue(maxsize=1)
            self.outbox.put_nowait(None)

    async def writer(self) -> None:
        while True:
            frame = await self.outbox.get()
            if frame is None or self.ws.closed:
                await self.ws.close()
                return
            await self.ws.send_bytes(frame)


def publish(ctx: VenueContext, event: TradeEvent) -> None:
    """Send one trade update to every session listening to trade_updates (on the loop thread)."""
    sessions = [s for s in ctx.trade_sessions if s.authorized and "trade_updates" in s.streams]
    if not sessions or ctx.exchange is None:
        return
    message = {"stream": "trade_updates", "data": trade_update_json(event, ctx.exchange)}
    for s in sessions:
        s.send(message, data=True)


def _auth_reply(status: str, action: str) -> dict[str, Any]:
    return {"stream": "authorization", "data": {"action": action, "status": status}}


async def handle(request: web.Request, ctx: VenueContext) -> web.StreamResponse:
    """GET /stream (websocket upgrade)."""
    ws = web.WebSocketResponse(heartbeat=None, max_msg_size=64 * 1024)
    await ws.prepare(request)
    session = TradeStreamSession(ws, ctx)
    ctx.trade_sessions.add(session)
    ctx.websockets[KIND].add(ws)
    writer = asyncio.create_task(session.writer())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.config.auth_timeout_s
        while not ws.closed:
            timeout = None if session.authorized else max(0.0, deadline - loop.time())
            try:
                msg = await asyncio.wait_for(ws.receive(), timeout)
            except TimeoutError:
                session.send(_auth_reply("unauthorized", "authenticate"))
                session.outbox.put_nowait(None)
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            if not _handle_frame(session, msg.data):
                break
    except Exception:  # a broken client must never take the venue down
        log.exception("trade stream session failed")
    finally:
        ctx.trade_sessions.discard(session)
        ctx.websockets[KIND].discard(ws)
        try:  # let the writer finish what is queued, then end
            session.outbox.put_nowait(None)
        except asyncio.QueueFull:
            writer.cancel()
        try:
            await asyncio.wait_for(writer, 1.0)
        except (TimeoutError, asyncio.CancelledError, Exception):
            writer.cancel()
        if not ws.closed:
            await ws.close()
    return ws


def _handle_frame(session: TradeStreamSession, data: str | bytes) -> bool:
    """Act on one client frame; False when the connection must end."""
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        msg = None
    if not isinstance(msg, dict) or not isinstance(msg.get("action"), str):
        # Alpaca answers garbage with an error on the listening stream and keeps the socket.
        session.send({"stream": "listening", "data": {"error": "invalid data provided"}})
        return True
    action = msg["action"]
    given = msg.get("data")
    data_obj = given if isinstance(given, dict) else {}
    if action in ("authenticate", "auth"):
        key = data_obj.get("key_id") or msg.get("key")
        secret = data_obj.get("secret_key") or msg.get("secret")
        ok = session.ctx.check_keys(key if isinstance(key, str) else None, secret if isinstance(secret, str) else None)
        if not ok:
            session.send(_auth_reply("unauthorized", "authenticate"))
            session.outbox.put_nowait(None)  # close after the reply is out
            return True
        session.authorized = True
        session.send(_auth_reply("authorized", "authenticate"))
        return True
    if not session.authorized:
        session.send(_auth_reply("unauthorized", action))
        return True
    if action == "listen":
        streams = data_obj.get("streams")
        if not isinstance(streams, list):
            session.send({"stream": "listening", "data": {"error": "invalid data provided"}})
            return True
        session.streams = {s for s in streams if s in AVAILABLE_STREAMS}
        session.send({"stream": "listening", "data": {"streams": sorted(session.streams)}})
        return True
    session.send({"stream": "listening", "data": {"error": f"unrecognized action {action!r}"}})
    return True


def abort_websocket(ws: Any) -> None:
    """Drop a connection the way a network failure does: no close frame, just gone."""
    transport = getattr(getattr(ws, "_req", None), "transport", None)
    if transport is not None:
        transport.abort()
    else:
        asyncio.ensure_future(ws.close(code=1011, message=b"dropped"))


def add_routes(app: web.Application, ctx: VenueContext) -> None:
    """Register /stream on `app`."""

    async def stream(request: web.Request) -> web.StreamResponse:
        return await handle(request, ctx)

    for path in PATHS:
        app.router.add_get(path, stream)
