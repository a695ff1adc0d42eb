"""Alpaca trading stream client (``/stream``, ``trade_updates``).

Protocol per connection: ``authenticate`` (key_id/secret_key) ->
``{"stream":"authorization","data":{"status":"authorized"}}``, ``listen``
``trade_updates`` -> ``{"stream":"listening",...}``, then one
``{"stream":"trade_updates","data":{...}}`` per order event. Paper sends
these as binary frames holding JSON; both frame kinds are accepted.

Order updates can be hours apart, so silence here is normal: a dead peer is
found by websocket ping/pong keepalive (`ping_interval_s`/`ping_timeout_s`)
instead of a data timeout. Updates sent while we were disconnected are lost
for good, so after every successful (re)connect, once the server confirms
``listening``, `on_reconnect()` is called: the owner re-syncs its orders by
REST then (anything later arrives on the stream). It is also called after a
frame that could not be decoded, since that may have been an order event.

Threading: `on_update`, `on_reconnect` and `on_event` run in the stream's own
thread; keep them cheap (tell an actor, do not call REST inline).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection

from stockade.broker.backoff import Backoff
from stockade.broker.rest import redact, register_secret
from stockade.broker.stream_runner import Disconnect, ReconnectingStream, StreamEvent
from stockade.codecs.alpaca_wire import (
    AuthReply,
    ListeningReply,
    WireError,
    decode_trade_stream,
    encode_listen,
    encode_trade_auth,
)
from stockade.codecs.messages import OrderUpdate

log = logging.getLogger(__name__)


class TradeUpdatesStream(ReconnectingStream):
    """Streams `OrderUpdate`s for the account into `on_update`."""

    stream_name = "trade-updates"

    def __init__(
        self,
        url: str,
        key: str,
        secret: str,
        on_update: Callable[[OrderUpdate], None],
        on_event: Callable[[StreamEvent], None] | None = None,
        *,
        on_reconnect: Callable[[], None] | None = None,
        connect_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        ping_interval_s: float = 10.0,
        ping_timeout_s: float = 10.0,
        max_message_bytes: int = 1024 * 1024,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        auth_failure_delay_s: float = 60.0,
        limit_delay_s: float = 5.0,
    ) -> None:
        if not ping_interval_s or not ping_timeout_s:
            # Without keepalive a half-open socket would be silent forever and
            # fills would go unseen: refuse rather than allow it.
            raise ValueError("the trade updates stream needs ping_interval_s and ping_timeout_s > 0")
        register_secret(key, secret)
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
            logger=log,
        )
        self._key = key
        self._secret = secret
        self._on_update = on_update
        self._on_reconnect = on_reconnect
        self.updates = 0
        self.resyncs = 0  # on_reconnect calls

    def stats(self) -> dict:
        out = super().stats()
        out.update(updates=self.updates, resyncs=self.resyncs)
        return out

    async def _session(self, ws: ClientConnection) -> None:
        deadline = time.monotonic() + self.connect_timeout_s
        self._emit("connected", redact(self.url))
        await ws.send(encode_trade_auth(self._key, self._secret))
        reply = await self._until(ws, AuthReply, deadline, "authorization")
        if not reply.authorized:
            detail = f"{reply.status or 'unauthorized'} {reply.message}".strip()
            self._emit("auth_failed", detail, fatal=True)
            raise Disconnect(f"auth failed ({detail})", extra_delay_s=self.auth_failure_delay_s, fatal=True)
        self._emit("authenticated")
        await ws.send(encode_listen(("trade_updates",)))
        listening = await self._until(ws, ListeningReply, deadline, "listening")
        if "trade_updates" not in listening.streams:
            self._emit(
                "error", f"server did not grant trade_updates: {list(listening.streams)} {listening.error}", fatal=True
            )
            raise Disconnect("listen refused", extra_delay_s=self.auth_failure_delay_s, fatal=True)
        self._emit("listening")
        self.backoff.mark_up()
        self._resync()
        while True:
            msg = self._decode(await self._recv(ws, None, "trade updates"))
            if isinstance(msg, OrderUpdate):
                self._deliver(msg)
            elif msg is None:
                # The frame we could not read may have been an order event:
                # the owner must learn the truth from REST, as after a gap.
                self._resync()
            elif isinstance(msg, ListeningReply) and msg.error:
                self._log_limited("listen_error", "server reports: %s", msg.error)
            elif isinstance(msg, AuthReply) and not msg.authorized:
                raise Disconnect(f"authorization revoked ({msg.status} {msg.message})".strip())

    async def _until(self, ws: ClientConnection, kind: type, deadline: float, what: str):
        while True:
            msg = self._decode(await self._recv_before(ws, deadline, what))
            if isinstance(msg, kind):
                return msg
            if isinstance(msg, OrderUpdate):
                self._deliver(msg)  # never drop an order event, whatever the phase

    def _resync(self) -> None:
        self.resyncs += 1
        if self._on_reconnect is not None:
            self._call("on_reconnect", self._on_reconnect)

    def _decode(self, frame: str | bytes):
        try:
            return decode_trade_stream(frame)
        except WireError as exc:
            self._note_malformed(frame, exc, _excerpt)
            return None

    def _deliver(self, update: OrderUpdate) -> None:
        self.updates += 1
        self._call("on_update", self._on_update, update)


def _excerpt(frame: str | bytes) -> str | bytes:
    """The start of a bad frame, as logged (text or raw bytes)."""
    return frame[:200] if isinstance(frame, str) else bytes(frame[:200])
