"""Alpaca market-data v2 stream client (quotes, optionally trades and bars).

Protocol per connection: ``[{"T":"success","msg":"connected"}]`` greeting,
``auth`` -> ``authenticated``, ``subscribe`` -> ``subscription`` ack, then
data. Errors arrive as ``{"T":"error","code":N,"msg":...}``; how each code is
handled is in `_on_error`.

Threading: everything runs in the stream's own thread (an asyncio loop);
`on_quote`, `on_trade`, `on_bar` and `on_event` are called from that thread,
one call per item, in arrival order. Keep them cheap (hand the item to a
mailbox or a conflating slot): while a callback runs no frame is read, and
Alpaca disconnects slow clients (error 407).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable

from websockets.asyncio.client import ClientConnection

from stockade.broker.backoff import Backoff
from stockade.broker.rest import redact, register_secret
from stockade.broker.stream_runner import Disconnect, ReconnectingStream, StreamEvent
from stockade.codecs.alpaca_wire import (
    ERROR_CODES,
    DecodedFrame,
    Encoding,
    ErrorFrame,
    MarketDecoder,
    Subscription,
    Success,
    WireError,
    encode_auth,
    encode_subscribe,
    encode_unsubscribe,
)
from stockade.codecs.messages import Bar, Quote, Trade

log = logging.getLogger(__name__)

# With silence detection off, recv still wakes this often so that a later
# `set_silence_timeout` takes effect without waiting for a frame.
_IDLE_SLICE_S = 1.0


class MarketDataStream(ReconnectingStream):
    """Streams quotes (and optionally trades/bars) for `symbols` into callbacks.

    `silence_timeout_s`: reconnect when no market data arrives for this long
    while subscribed; None or 0 disables it (outside market hours the feed is
    legitimately quiet; see `set_silence_timeout`). Keepalive pings run in any
    case, so a dead TCP peer is found even with silence detection off.
    `auth_failure_delay_s` is waited (plus backoff) after a 402 or an
    entitlement/limit error (405, 409, 410): retrying fast cannot fix keys.
    `limit_delay_s` is waited (plus backoff) after a 406: Alpaca allows one
    connection per feed and needs time to reap the previous one.
    """

    stream_name = "market-data"

    def __init__(
        self,
        url: str,
        key: str,
        secret: str,
        symbols: Iterable[str],
        on_quote: Callable[[Quote], None],
        on_event: Callable[[StreamEvent], None] | None = None,
        *,
        on_trade: Callable[[Trade], None] | None = None,
        on_bar: Callable[[Bar], None] | None = None,
        encoding: Encoding = "json",
        silence_timeout_s: float | None = 10.0,
        connect_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        ping_interval_s: float | None = 10.0,
        ping_timeout_s: float | None = 20.0,
        max_message_bytes: int = 4 * 1024 * 1024,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        auth_failure_delay_s: float = 60.0,
        limit_delay_s: float = 5.0,
    ) -> None:
        register_secret(key, secret)
        headers = {"Content-Type": "application/msgpack"} if encoding == "msgpack" else {}
        super().__init__(
            url,
            on_event=on_event,
            connect_timeout_s=connect_timeout_s,
            close_timeout_s=close_timeout_s,
            ping_interval_s=ping_interval_s,
            ping_timeout_s=ping_timeout_s,
            max_message_bytes=max_message_bytes,
            backoff=backoff,
            rng=rng,
            auth_failure_delay_s=auth_failure_delay_s,
            limit_delay_s=limit_delay_s,
            additional_headers=headers,
            logger=log,
        )
        self._key = key
        self._secret = secret
        self._decoder = MarketDecoder(encoding)
        self._on_quote = on_quote
        self._on_trade = on_trade
        self._on_bar = on_bar
        self._symbols: tuple[str, ...] = _unique(symbols)
        self._silence_s: float | None = silence_timeout_s or None
        self._silence_epoch = 0
        self._sent_symbols: tuple[str, ...] = ()  # what this connection asked for
        # Serializes every (re-)subscribe: each reads `_sent_symbols` before
        # its sends and writes it after, so two interleaved ones (quick
        # `set_symbols` calls) would leave it stale. Made in the stream's loop.
        self._sub_lock: asyncio.Lock | None = None
        self.subscription: Subscription | None = None  # the server's last ack
        self._authenticated = False
        self.quotes = 0
        self.trades = 0
        self.bars = 0

    # ---- run-time changes (any thread) ----------------------------------------------

    def set_silence_timeout(self, seconds: float | None) -> None:
        """Enable (seconds > 0) or disable (None/0) silent-socket detection.

        The quiet period starts counting afresh, so enabling it at the open
        does not fire on the overnight silence.
        """
        self._silence_s = seconds or None
        self._silence_epoch += 1

    def set_symbols(self, symbols: Iterable[str]) -> None:
        """Change the symbol set; a live connection is re-subscribed at once."""
        self._symbols = _unique(symbols)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._sync_subscription()))
            except RuntimeError:
                pass  # loop closing; the next connection subscribes the new set

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    @property
    def encoding(self) -> Encoding:
        return self._decoder.encoding

    def stats(self) -> dict:
        out = super().stats()
        d = self._decoder
        out.update(
            quotes=self.quotes,
            trades=self.trades,
            bars=self.bars,
            dropped=dict(d.dropped),
            malformed_items=d.malformed_items,
            ignored_items=d.ignored_items,
        )
        return out

    # ---- protocol (stream thread) ---------------------------------------------------

    async def _session(self, ws: ClientConnection) -> None:
        if self._sub_lock is None:
            self._sub_lock = asyncio.Lock()
        self.subscription = None
        self._sent_symbols = ()
        self._authenticated = False
        deadline = time.monotonic() + self.connect_timeout_s
        await self._until_success(ws, "connected", deadline)
        self._emit("connected", redact(self.url))
        await ws.send(encode_auth(self._key, self._secret, self.encoding))
        await self._until_success(ws, "authenticated", deadline)
        self._emit("authenticated")
        self._authenticated = True
        await self._send_subscribe(ws, self._symbols)
        await self._stream(ws)

    async def _until_success(self, ws: ClientConnection, want: str, deadline: float) -> None:
        while True:
            decoded = self._decode(await self._recv_before(ws, deadline, want))
            if decoded is None:
                continue
            done = False
            for c in decoded.controls:
                if type(c) is ErrorFrame:
                    self._on_error(c, handshake=True)
                elif type(c) is Success and c.msg == want:
                    done = True
            self._deliver(decoded)
            if done:
                return

    def _channels(self, symbols: tuple[str, ...]) -> dict:
        """The per-channel symbol lists of a (un)subscribe for `symbols`."""
        return {
            "quotes": symbols,
            "trades": symbols if self._on_trade else (),
            "bars": symbols if self._on_bar else (),
        }

    async def _send_subscribe(self, ws: ClientConnection, symbols: tuple[str, ...]) -> None:
        if not symbols:
            return
        assert self._sub_lock is not None
        async with self._sub_lock:
            await ws.send(encode_subscribe(**self._channels(symbols), encoding=self.encoding))
            self._sent_symbols = symbols

    async def _sync_subscription(self) -> None:
        lock = self._sub_lock
        if lock is None:
            return  # never connected: the first session subscribes self._symbols
        async with lock:
            ws = self._ws
            if ws is None or not self._authenticated:
                return  # not connected: the next session subscribes self._symbols
            want, have = self._symbols, self._sent_symbols
            want_set, have_set = set(want), set(have)
            gone = tuple(s for s in have if s not in want_set)
            new = tuple(s for s in want if s not in have_set)
            try:
                if gone:
                    await ws.send(encode_unsubscribe(**self._channels(gone), encoding=self.encoding))
                if new:
                    await ws.send(encode_subscribe(**self._channels(new), encoding=self.encoding))
                if new and not have:
                    self._silence_epoch += 1  # the quiet period starts with the first symbols
                self._sent_symbols = want
            except Exception as exc:  # the read loop will see the broken socket
                self.log.warning("re-subscribe failed: %s", redact(exc))

    async def _stream(self, ws: ClientConnection) -> None:
        last_data = time.monotonic()  # the quiet period counts from the subscribe
        epoch = self._silence_epoch
        while True:
            # Nothing subscribed (empty symbol set): silence is expected.
            silence = self._silence_s if self._sent_symbols else None
            if epoch != self._silence_epoch:
                epoch = self._silence_epoch
                last_data = time.monotonic()
            if silence is None:
                wait = _IDLE_SLICE_S
            else:
                remaining = last_data + silence - time.monotonic()
                if remaining <= 0:
                    raise Disconnect(f"silent socket: no market data for {silence:g}s")
                wait = min(remaining, _IDLE_SLICE_S)
            try:
                frame = await self._recv(ws, wait, "market data")
            except TimeoutError:
                continue
            decoded = self._decode(frame)
            if decoded is None:
                continue
            if decoded.has_data:
                last_data = time.monotonic()
            for c in decoded.controls:
                if type(c) is ErrorFrame:
                    self._on_error(c, handshake=False)
                elif type(c) is Subscription:
                    self._on_subscription(c)
            self._deliver(decoded)

    def _decode(self, frame: str | bytes) -> DecodedFrame | None:
        try:
            # The receive stamp `_recv` just took: one clock read per frame.
            return self._decoder.decode(frame, self.last_message_ns)
        except WireError as exc:
            self._note_malformed(frame, exc, _excerpt)
            return None

    def _deliver(self, decoded: DecodedFrame) -> None:
        # Counted as received, whatever the callbacks do with them.
        quotes = decoded.quotes
        if quotes:
            self.quotes += len(quotes)
            call, on_quote = self._call, self._on_quote
            for q in quotes:
                call("on_quote", on_quote, q)
        if decoded.trades and self._on_trade is not None:
            self.trades += len(decoded.trades)
            for t in decoded.trades:
                self._call("on_trade", self._on_trade, t)
        if decoded.bars and self._on_bar is not None:
            self.bars += len(decoded.bars)
            for b in decoded.bars:
                self._call("on_bar", self._on_bar, b)

    def _on_subscription(self, sub: Subscription) -> None:
        self.subscription = sub
        got = set(sub.quotes)
        missing = [] if "*" in got else [s for s in self._sent_symbols if s not in got]
        if missing:
            # An ack without some symbols means the server refused them (e.g.
            # an unknown symbol); the rest still stream.
            self._emit("subscribed", f"{len(sub.quotes)} quote symbols; missing {missing[:10]}")
            self.log.warning("subscription ack lacks %d symbol(s): %s", len(missing), missing[:10])
        else:
            self._emit("subscribed", f"{len(sub.quotes)} quote symbols")
        self.backoff.mark_up()

    def _on_error(self, err: ErrorFrame, *, handshake: bool) -> None:
        """Decide what an error frame means; raises `Disconnect` to end the session."""
        code, msg = err.code, err.msg or ERROR_CODES.get(err.code, "")
        detail = f"{code} {msg}"
        self.last_error_code = code
        if code == 402:  # auth failed: keys are wrong or revoked
            self._emit("auth_failed", detail, code=code, fatal=True)
            raise Disconnect(f"auth failed ({detail})", code=code, extra_delay_s=self.auth_failure_delay_s, fatal=True)
        if code in (405, 409, 410):
            # symbol limit / feed not in the plan / action not allowed on this
            # feed: configuration, not transient. Alert a human either way.
            self._emit("error", detail, code=code, fatal=True)
            if not handshake and code != 409 and self.subscription is not None and self.subscription.quotes:
                # A refused *extra* subscribe (set_symbols): the server keeps
                # the symbols it already streams, so keep the connection.
                self.log.error("subscription change refused: %s", detail)
                return
            # Nothing streams on this connection: retry rarely.
            raise Disconnect(
                f"subscription refused ({detail})", code=code, extra_delay_s=self.auth_failure_delay_s, fatal=True
            )
        if code == 406:  # connection limit: another session holds the slot
            self._emit("error", detail, code=code)
            raise Disconnect(f"connection limit exceeded ({detail})", code=code, extra_delay_s=self.limit_delay_s)
        if code == 403:  # already authenticated: harmless
            self.log.info("server says: %s", detail)
            return
        if code == 400 and not handshake:
            # our (re-)subscribe was malformed; the connection itself is fine
            self._emit("error", detail, code=code)
            self.log.error("server rejected a request: %s", detail)
            return
        # 401 not authenticated, 404 auth timeout, 407 slow client, 500
        # internal error, 400 during the handshake, and anything unknown:
        # start over on a fresh connection after the usual backoff.
        self._emit("error", detail, code=code)
        raise Disconnect(f"server error ({detail})", code=code)


def _unique(symbols: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.strip().upper() for s in symbols if s and s.strip()))


def _excerpt(frame: str | bytes) -> str:
    """The start of a bad frame, as logged (text, or bytes as hex)."""
    return frame[:120] if isinstance(frame, str) else bytes(frame[:60]).hex()
