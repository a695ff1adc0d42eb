"""Alpaca's v2 market-data websocket at /v2/{iex,sip,test}, fed by the simulator.

Protocol (as stream.data.alpaca.markets):

    server: [{"T":"success","msg":"connected"}]
    client: {"action":"auth","key":K,"secret":S}      (or APCA-API-* headers on the upgrade)
    server: [{"T":"success","msg":"authenticated"}]  | [{"T":"error","code":402,"msg":"auth failed"}] + close
    client: {"action":"subscribe","trades":[..],"quotes":[..],"bars":["*"]}
    server: [{"T":"subscription","trades":[..],"quotes":[..],"bars":[..],...}]
    server: [{"T":"q","S":"AAPL","bx":..,"bp":..,"bs":..,"ax":..,"ap":..,"as":..,"c":[..],"z":..,"t":..}, ...]

Encoding: a client whose upgrade says `Content-Type: application/msgpack`
(alpaca-py does) gets binary msgpack frames with "t" as a msgpack Timestamp;
anyone else gets JSON text frames with RFC 3339 nanosecond times. Incoming
frames are read by their own type: binary as msgpack, text as JSON.

Errors: 400 invalid syntax, 401 not authenticated, 402 auth failed, 403
already authenticated, 404 auth timeout, 405 symbol limit exceeded, 406
connection limit exceeded, 407 slow client. Only 402, 404 and 406 close the
socket; the rest leave it usable, as Alpaca does.

Backpressure: each connection has a bounded queue of market events. When it
is full the oldest event is dropped (a stale quote is worth nothing, the next
one supersedes it); a consumer that has not taken a single frame for
`slow_client_timeout_s` while its queue overflows is cut off (Alpaca's "407
slow client"; the frame could not get through a full TCP window, so the
connection is just aborted). Memory per connection is therefore bounded.

`faults.stream_silent` drops market data at the source while control frames
(connect, auth, subscription) still flow: a feed that stalls behind a live
session, which is what a client's silence detection must catch.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from stockade.venue.context import VenueContext
from stockade.venue.market import MarketEvent, SimQuote, SimTrade
from stockade.venue.market_data_api import rfc3339_ns

log = logging.getLogger(__name__)

KIND = "market"
FEEDS = ("iex", "sip", "test")
# Channels a client may subscribe to, in the order Alpaca lists them; the
# simulator only ever emits trades, quotes and bars.
CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds")
# Alpaca subscribes these implicitly with trades and reports them back.
MIRRORS_OF_TRADES = ("corrections", "cancelErrors")
SYMBOL_LIMIT = 10_000  # per channel; a sanity bound, not a plan limit
SEND_QUEUE_MAX = 10_000  # market events queued per connection
CONTROL_QUEUE_MAX = 256  # control replies queued; more means the client only writes
SLOW_CLIENT_TIMEOUT_S = 10.0
MAX_BATCH = 500  # events per frame: well under clients' 1 MiB frame limits

ERRORS = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    409: "insufficient subscription",
    500: "internal error",
}

HUB_KEY = web.AppKey("market_stream_hub", object)

# ---- encoding -------------------------------------------------------------------


class _WireQuote(msgspec.Struct, rename={"as_": "as"}):
    T: str
    S: str
    bx: str
    bp: float
    bs: int
    ax: str
    ap: float
    as_: int
    c: tuple
    z: str
    t: Any


class _WireTrade(msgspec.Struct):
    T: str
    S: str
    i: int
    x: str
    p: float
    s: int
    c: tuple
    z: str
    t: Any


class _WireBar(msgspec.Struct):
    T: str
    S: str
    o: float
    h: float
    l: float
    c: float
    v: int
    n: int
    vw: float
    t: Any


_mp_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()


def msgpack_timestamp(ts_ns: int) -> msgspec.msgpack.Ext:
    """msgpack Timestamp extension (type -1) with full nanoseconds."""
    secs, nanos = divmod(ts_ns, 1_000_000_000)
    if 0 <= secs < (1 << 34):
        return msgspec.msgpack.Ext(-1, struct.pack(">Q", (nanos << 34) | secs))
    return msgspec.msgpack.Ext(-1, struct.pack(">Iq", nanos, secs))


def _wire(event: MarketEvent, t: Any) -> msgspec.Struct:
    if isinstance(event, SimQuote):
        return _WireQuote(
            "q",
            event.symbol,
            event.exchange,
            event.bid,
            event.bid_size,
            event.exchange,
            event.ask,
            event.ask_size,
            event.conditions,
            event.tape,
            t,
        )
    if isinstance(event, SimTrade):
        return _WireTrade(
            "t", event.symbol, event.id, event.exchange, event.price, event.size, event.conditions, event.tape, t
        )
    return _WireBar(
        "b",
        event.symbol,
        event.open,
        event.high,
        event.low,
        event.close,
        event.volume,
        event.trade_count,
        event.vwap,
        t,
    )


class _Outgoing:
    """One event on its way out, encoded at most once per wire format for all connections."""

    __slots__ = ("event", "_mp", "_js")

    def __init__(self, event: MarketEvent) -> None:
        self.event = event
        self._mp: bytes | None = None
        self._js: bytes | None = None

    def msgpack(self) -> bytes:
        if self._mp is None:
            self._mp = _mp_encoder.encode(_wire(self.event, msgpack_timestamp(self.event.ts_ns)))
        return self._mp

    def json(self) -> bytes:
        if self._js is None:
            self._js = _json_encoder.encode(_wire(self.event, rfc3339_ns(self.event.ts_ns)))
        return self._js


def _msgpack_array(items: list[bytes]) -> bytes:
    n = len(items)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(items)


def _channel_of(event: MarketEvent) -> str:
    if isinstance(event, SimQuote):
        return "quotes"
    if isinstance(event, SimTrade):
        return "trades"
    return "bars"


# ---- one connection ----------------------------------------------------------------------


class _Session:
    """One market-data websocket: auth state, subscriptions, bounded outbox and its writer."""

    def __init__(self, hub: MarketStreamHub, ws: web.WebSocketResponse, feed: str, binary: bool) -> None:
        self.hub = hub
        self.ws = ws
        self.feed = feed
        self.binary = binary
        self.authenticated = False
        self.key: str | None = None
        self.subs: dict[str, dict[str, None]] = {ch: {} for ch in CHANNELS}  # ordered sets
        self.data: deque[_Outgoing] = deque(maxlen=hub.send_queue_max)
        self.control: deque[tuple[bytes, bool]] = deque()
        self.wake = asyncio.Event()
        self.dropped = 0
        self.sending_since: float | None = None
        self.closing = False
        self.close_requested = False  # a closing reply (402/404/406) is queued or sent
        self.writer: asyncio.Task | None = None

    # -- outbox --

    def wants(self, channel: str, symbol: str) -> bool:
        subs = self.subs[channel]
        return symbol in subs or "*" in subs

    def offer(self, item: _Outgoing, loop_time: float) -> None:
        if len(self.data) == self.data.maxlen:
            self.dropped += 1
            if self.sending_since is not None and loop_time - self.sending_since > self.hub.slow_client_timeout_s:
                self.cut_off_slow()
                return
        self.data.append(item)
        self.wake.set()

    def reply(self, messages: list[dict[str, Any]], close_after: bool = False) -> None:
        """Queue a control frame; `close_after` closes the socket once it is sent."""
        if len(self.control) >= CONTROL_QUEUE_MAX:
            log.warning("market stream client sends but does not read; closing it")
            close_after, messages = True, [_error(400)]
            self.control.clear()
        frame = _mp_encoder.encode(messages) if self.binary else _json_encoder.encode(messages)
        self.close_requested |= close_after
        self.control.append((frame, close_after))
        self.wake.set()

    def cut_off_slow(self) -> None:
        if self.closing:
            return
        self.closing = True
        log.warning("market stream client on %s too slow (%d events dropped); cutting it off", self.feed, self.dropped)
        self.data.clear()
        transport = getattr(getattr(self.ws, "_req", None), "transport", None)
        if transport is not None:
            transport.abort()

    async def write_forever(self) -> None:
        opcode = WSMsgType.BINARY if self.binary else WSMsgType.TEXT
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while (self.control or self.data) and not self.ws.closed:
                if self.control:
                    frame, close_after = self.control.popleft()
                    await self._send(frame, opcode, loop)
                    if close_after:
                        await self.ws.close()
                        return
                    continue
                batch = [self.data.popleft() for _ in range(min(len(self.data), self.hub.max_batch))]
                if self.hub.ctx.faults.stream_silent:
                    continue  # queued before the fault began: never delivered
                if self.binary:
                    frame = _msgpack_array([item.msgpack() for item in batch])
                else:
                    frame = b"[" + b",".join(item.json() for item in batch) + b"]"
                await self._send(frame, opcode, loop)
            if self.ws.closed:
                return

    async def _send(self, frame: bytes, opcode: WSMsgType, loop: asyncio.AbstractEventLoop) -> None:
        self.sending_since = loop.time()
        try:
            await self.ws.send_frame(frame, opcode)
        finally:
            self.sending_since = None

    # -- requests --

    def handle(self, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("action"), str):
            self.reply([_error(400)])
            return
        action = payload["action"]
        if action == "auth":
            self._auth(payload.get("key"), payload.get("secret"))
        elif action in ("subscribe", "unsubscribe"):
            if not self.authenticated:
                self.reply([_error(401)])
            else:
                self._subscribe(payload, action == "subscribe")
        else:
            self.reply([_error(400)])

    def _auth(self, key: Any, secret: Any) -> None:
        if self.authenticated:
            self.reply([_error(403)])
            return
        if not isinstance(key, str) or not isinstance(secret, str) or not self.hub.ctx.check_keys(key, secret):
            self.reply([_error(402)], close_after=True)
            return
        if self.hub.connections_of(key, self.feed) >= self.hub.ctx.config.max_stream_connections:
            self.reply([_error(406)], close_after=True)
            return
        self.authenticated = True
        self.key = key
        self.hub.attach_market()
        self.reply([{"T": "success", "msg": "authenticated"}])

    def _subscribe(self, payload: dict[str, Any], add: bool) -> None:
        changes: dict[str, list[str]] = {}
        for channel in CHANNELS:
            symbols = payload.get(channel)
            if symbols is None:
                continue
            if not isinstance(symbols, list) or not all(isinstance(s, str) and s for s in symbols):
                self.reply([_error(400)])
                return
            changes[channel] = symbols
        if add and any(len(self.subs[ch].keys() | set(syms)) > SYMBOL_LIMIT for ch, syms in changes.items()):
            self.reply([_error(405)])
            return
        for channel, symbols in changes.items():
            subs = self.subs[channel]
            for s in symbols:
                if add:
                    subs[s] = None
                else:
                    subs.pop(s, None)
        self.reply([self.subscription()])

    def subscription(self) -> dict[str, Any]:
        message: dict[str, Any] = {"T": "subscription"}
        for channel in CHANNELS:
            message[channel] = list(self.subs[channel])
        for channel in MIRRORS_OF_TRADES:
            message[channel] = list(self.subs["trades"])
        return message


def _error(code: int) -> dict[str, Any]:
    return {"T": "error", "code": code, "msg": ERRORS[code]}


# ---- all connections -----------------------------------------------------------------------


class MarketStreamHub:
    """Every market-data connection of one venue, fed from the simulator."""

    def __init__(
        self,
        ctx: VenueContext,
        *,
        send_queue_max: int = SEND_QUEUE_MAX,
        slow_client_timeout_s: float = SLOW_CLIENT_TIMEOUT_S,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.ctx = ctx
        self.send_queue_max = send_queue_max
        self.slow_client_timeout_s = slow_client_timeout_s
        self.max_batch = max_batch
        self.sessions: set[_Session] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self.published = 0

    def attach_market(self) -> None:
        """Listen to the simulator (once; it exists only after the app is built)."""
        if self._unsubscribe is None and self.ctx.market is not None:
            self._unsubscribe = self.ctx.market.subscribe(self.on_event)

    def detach_market(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def send_garbage(self, n: int) -> int:
        """Fault: queue `n` undecodable frames to every authenticated client; returns frames queued."""
        sent = 0
        for session in list(self.sessions):
            if not session.authenticated or session.closing:
                continue
            for i in range(n):
                frame = b"\xc1\xff garbage" if session.binary else b'[{"T":"q","S":'  # invalid msgpack / JSON
                session.control.append((frame + str(i).encode(), False))
                sent += 1
            session.wake.set()
        return sent

    def connections_of(self, key: str, feed: str) -> int:
        return sum(1 for s in self.sessions if s.authenticated and s.key == key and s.feed == feed)

    def on_event(self, event: MarketEvent) -> None:
        if self.ctx.faults.stream_silent or not self.sessions:
            return
        channel = _channel_of(event)
        item = None
        now = 0.0
        for session in self.sessions:
            if session.authenticated and not session.closing and session.wants(channel, event.symbol):
                if item is None:
                    item = _Outgoing(event)
                    now = asyncio.get_running_loop().time()
                session.offer(item, now)
        if item is not None:
            self.published += 1

    async def handle(self, request: web.Request) -> web.StreamResponse:
        feed = request.match_info["feed"]
        binary = "msgpack" in request.headers.get("Content-Type", "").lower()
        # permessage-deflate is optional for the server to accept; declining it is
        # invisible to clients and makes publishing ~13x faster on loopback.
        ws = web.WebSocketResponse(autoping=True, compress=False)
        await ws.prepare(request)
        session = _Session(self, ws, feed, binary)
        self.sessions.add(session)
        self.ctx.websockets[KIND].add(ws)
        session.writer = asyncio.create_task(session.write_forever(), name=f"market-ws-writer-{feed}")
        try:
            session.reply([{"T": "success", "msg": "connected"}])
            key, secret = request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY")
            if key is not None or secret is not None:
                session._auth(key, secret)
            await self._read(session)
        finally:
            self.sessions.discard(session)
            self.ctx.websockets[KIND].discard(ws)
            await self._finish_writer(session)
            if not ws.closed:
                await ws.close()
        return ws

    async def _read(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ctx.config.auth_timeout_s
        ws = session.ws
        while not ws.closed and not (session.writer and session.writer.done()):
            timeout = None if session.authenticated else max(0.0, deadline - loop.time())
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                session.reply([_error(404)], close_after=True)
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            try:
                if msg.type == WSMsgType.BINARY:
                    payload = msgspec.msgpack.decode(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    payload = msgspec.json.decode(msg.data)
                else:
                    continue
            except msgspec.DecodeError:
                session.reply([_error(400)])
                continue
            if not session.close_requested:  # a refused client gets nothing more
                session.handle(payload)

    async def _finish_writer(self, session: _Session) -> None:
        """Let a pending closing reply (402/404/406) go out, then stop the writer."""
        writer = session.writer
        if writer is None:
            return
        if session.close_requested:
            try:
                await asyncio.wait_for(asyncio.shield(writer), 2.0)
            except (TimeoutError, Exception):
                pass
        writer.cancel()
        try:
            await writer
        except (asyncio.CancelledError, Exception):
            pass


def add_routes(app: web.Application, ctx: VenueContext) -> MarketStreamHub:
    """Serve the market-data websocket at /v2/iex, /v2/sip and /v2/test on `app`."""
    hub = MarketStreamHub(ctx)
    app[HUB_KEY] = hub
    ctx.market_hub = hub  # for the garbage-frames fault

    async def handler(request: web.Request) -> web.StreamResponse:
        return await hub.handle(request)

    async def on_cleanup(_app: web.Application) -> None:
        hub.detach_market()

    for feed in FEEDS:
        app.router.add_get(f"/v2/{{feed:{feed}}}", handler)
    app.on_cleanup.append(on_cleanup)
    return hub
