"""QuoteStreamer: owns the market-data connection and feeds the analyzers.

The websocket client (`MarketDataStream`) runs on its own thread: it decodes
frames straight into `Quote`s, drops bad ones, reconnects with backoff and
jitter, and notices a connected-but-silent socket. Quotes are conflated per
symbol: an analyzer gets a new quote only while fewer than
`max_inflight_per_analyzer` sit in its mailbox; otherwise the newest quote
waits in a one-slot-per-symbol buffer. A lagging analyzer therefore sees the
latest price, never a growing backlog.
"""

from __future__ import annotations

import logging
import threading
import time

from stockade.actors.base import StockadeActor, handles
from stockade.actors.services import Services
from stockade.broker.backoff import Backoff
from stockade.broker.conflation import ConflatingBuffer
from stockade.broker.market_stream import MarketDataStream
from stockade.broker.stream_runner import StreamEvent
from stockade.codecs.messages import Alert, ClockSnapshot, FlushQuotes, Quote, StreamStatus, Tick

log = logging.getLogger(__name__)

NAME = "quote_streamer"
FLUSH_INTERVAL_S = 0.05
STATS_INTERVAL_S = 1.0


def analyzer_name(symbol: str) -> str:
    return f"analyzer:{symbol}"


class QuoteStreamer(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        s = self.svc.settings
        self.symbols = tuple(s.trading.symbols)
        self.max_inflight = s.stream.max_inflight_per_analyzer
        self.buffer = ConflatingBuffer()
        self._wake_pending = threading.Event()
        self.connected = False
        self.market_open = True  # until the reconciler's clock says otherwise
        self.delivered = 0
        broker = self.svc.broker
        self.stream = MarketDataStream(
            broker.endpoints.stream_url,
            broker.key,
            broker.secret,
            self.symbols,
            on_quote=self._on_quote,
            on_event=self._on_event,
            encoding="msgpack",  # what alpaca-py uses: smaller and cheaper to decode
            silence_timeout_s=s.stream.silence_timeout_s or None,
            connect_timeout_s=s.stream.connect_timeout_s,
            backoff=Backoff(s.stream.backoff_initial_s, s.stream.backoff_max_s),
        )
        self.stream.start()
        # Raw (unenveloped) periodic flushes: no span of their own, so quote
        # traces start at the quote and are sampled like quotes.
        self.every(FLUSH_INTERVAL_S, "flush", message=FlushQuotes())
        self.every(STATS_INTERVAL_S, "stats")

    def teardown(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.stop(timeout=5.0)

    # ---- stream thread -------------------------------------------------------------

    def _on_quote(self, quote: Quote) -> None:
        self.buffer.offer(quote)
        # One wake-up message at a time, however fast quotes arrive.
        if not self._wake_pending.is_set():
            self._wake_pending.set()
            self.router.tell(NAME, FlushQuotes(), "market_stream")

    def _on_event(self, event: StreamEvent) -> None:
        self.router.tell(NAME, event.to_status(), "market_stream")
        if event.fatal:
            self.router.tell("alerter", Alert("CRITICAL", f"market-data:{event.code}",
                                              f"market data: {event.kind} {event.detail}", NAME, time.time_ns()), NAME)

    # ---- actor thread --------------------------------------------------------------

    @handles(FlushQuotes)
    def on_flush(self, _flush: FlushQuotes) -> None:
        self._wake_pending.clear()
        for quote in self.buffer.take(self._has_room):
            self.tell(analyzer_name(quote.symbol), quote)
            self.delivered += 1

    def _has_room(self, symbol: str) -> bool:
        ref = self.router.lookup(analyzer_name(symbol))
        if ref is None:
            return True  # restarting: the router holds a bounded buffer for it
        try:
            return ref.actor_inbox.qsize() < self.max_inflight
        except Exception:
            return True

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what == "stats":
            self.svc.stats["market_data"] = {
                **self.stream.stats(), "delivered": self.delivered, "conflated": self.buffer.conflated,
            }

    @handles(ClockSnapshot)
    def on_clock(self, clock: ClockSnapshot) -> None:
        if clock.is_open != self.market_open:
            self.market_open = clock.is_open
            silence = self.svc.settings.stream.silence_timeout_s if clock.is_open else None
            self.stream.set_silence_timeout(silence)
            log.info("market %s: silent-socket detection %s", "open" if clock.is_open else "closed",
                     "on" if silence else "off")

    @handles(StreamStatus)
    def on_status(self, status: StreamStatus) -> None:
        if status.connected != self.connected:
            log.info("market data %s: %s", "connected" if status.connected else "disconnected", status.detail)
        self.connected = status.connected
