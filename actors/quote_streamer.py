"""QuoteStreamer: owns the market-data connection and feeds the analyzers.

The websocket client (`MarketDataStream`) runs on its own thread: it decodes
frames straight into `Quote`s, drops bad ones, reconnects with backoff and
jitter, and notices a connected-but-silent socket. Quotes are conflated per
symbol: an analyzer gets a new quote only while fewer than
`max_inflight_per_analyzer` sit in its mailbox; otherwise the newest quote
waits in a one-slot-per-symbol buffer. A lagging analyzer therefore sees the
latest price, never a growing backlog.

A `FeedWatch` turns the connection's state into alerts: disconnected for
longer than `alerts.stream_down_alert_s` (WARNING, CRITICAL at ten times
that), back again (INFO), and symbols without a quote for
`alerts.stale_quote_s` while connected (WARNING). Only while the market is
open: overnight silence is normal.
"""

from __future__ import annotations

import logging
import threading

from stockade.actors import names, ticks
from stockade.actors.services import Services
from stockade.broker.backoff import Backoff
from stockade.broker.conflation import ConflatingBuffer
from stockade.broker.market_stream import MarketDataStream
from stockade.broker.stream_runner import StreamEvent
from stockade.codecs.messages import Alert, AlertLevel, ClockSnapshot, FlushQuotes, Quote, StreamStatus, Tick, Trade
from stockade.supervisors.base import StockadeActor, handles
from stockade.supervisors.router import mailbox_size

log = logging.getLogger(__name__)

NAME = names.QUOTE_STREAMER
FLUSH_INTERVAL_S = 0.05
STATS_INTERVAL_S = 1.0


def analyzer_name(symbol: str) -> str:
    return f"analyzer:{symbol}"


# Down this many times `down_after_s`: the WARNING becomes CRITICAL.
CRITICAL_FACTOR = 10


class FeedWatch:
    """Market-data health -> alerts (level, key, text). Pure: the caller passes monotonic `now`.

    `quote()` may be called from the stream thread (one dict store per call).
    """

    def __init__(self, symbols: tuple[str, ...], down_after_s: float, stale_after_s: float, now: float) -> None:
        self.symbols = symbols
        self.down_after_s = down_after_s
        self.stale_after_s = stale_after_s
        self.market_open = True
        self.connected = False
        self.down_since: float | None = now  # not connected yet counts as down
        self.down_level = ""  # the level last alerted for this outage
        self.last_detail = "not connected yet"
        self._baseline = now
        self._last_quote: dict[str, float] = {}
        self.received: dict[str, int] = {}  # quotes per symbol (dashboard metrics)
        self.stale: set[str] = set()

    def quote(self, symbol: str, now: float) -> None:
        self._last_quote[symbol] = now
        self.received[symbol] = self.received.get(symbol, 0) + 1

    def ages(self, now: float) -> dict[str, float | None]:
        """Seconds since each symbol's last quote (None: none yet)."""
        last = self._last_quote
        return {s: (round(now - last[s], 3) if s in last else None) for s in self.symbols}

    def set_market_open(self, is_open: bool, now: float) -> None:
        if is_open and not self.market_open:
            # Only time with the market open counts, for outages as for quiet symbols.
            self._restart_clocks(now)
            if self.down_since is not None:
                self.down_since, self.down_level = now, ""
        self.market_open = is_open

    def status(self, connected: bool, detail: str, now: float) -> list[tuple[AlertLevel, str, str]]:
        """A connection state change; returns the alerts it causes."""
        out: list[tuple[AlertLevel, str, str]] = []
        if connected and not self.connected:
            if self.down_level and self.down_since is not None:
                out.append(
                    (
                        "INFO",
                        "market-data:reconnected",
                        f"market data reconnected after {now - self.down_since:.0f}s down",
                    )
                )
            # Quiet time is not reset here: a socket that reconnects every
            # silence timeout without ever delivering a quote must still alert.
            self.down_since, self.down_level = None, ""
        elif not connected and self.connected:
            self.down_since = now
        if not connected:
            self.last_detail = detail
        self.connected = connected
        return out

    def check(self, now: float) -> list[tuple[AlertLevel, str, str]]:
        """Periodic check; returns the alerts due now."""
        if not self.market_open:
            return []
        out: list[tuple[AlertLevel, str, str]] = []
        if not self.connected and self.down_since is not None:
            down = now - self.down_since
            level: AlertLevel | None = (
                "CRITICAL"
                if down >= self.down_after_s * CRITICAL_FACTOR
                else "WARNING"
                if down >= self.down_after_s
                else None
            )
            if level is not None and level != self.down_level:
                self.down_level = level
                out.append(
                    (
                        level,
                        "market-data:disconnected",
                        f"no market-data connection for {down:.0f}s while the market is open "
                        f"(last: {self.last_detail})",
                    )
                )
            return out
        since = self._baseline
        stale = {s for s in self.symbols if now - max(self._last_quote.get(s, 0.0), since) >= self.stale_after_s}
        new = sorted(stale - self.stale)
        fresh = sorted(self.stale - stale)
        self.stale = stale
        if new:
            out.append(
                (
                    "WARNING",
                    "market-data:stale",
                    f"no quote for {self.stale_after_s:g}s or more while connected: {', '.join(new[:20])}"
                    + (f" and {len(new) - 20} more" if len(new) > 20 else ""),
                )
            )
        if fresh:
            out.append(("INFO", "market-data:fresh", f"quotes flowing again: {', '.join(fresh[:20])}"))
        return out

    def _restart_clocks(self, now: float) -> None:
        # A symbol's quiet time counts from when quotes could arrive at all.
        self._baseline = now
        self.stale = set()


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
        self.watch = FeedWatch(
            self.symbols, s.alerts.stream_down_alert_s, s.alerts.stale_quote_s, self.clock.monotonic()
        )
        broker = self.svc.broker
        self.stream = MarketDataStream(
            broker.endpoints.stream_url,
            broker.key,
            broker.secret,
            self.symbols,
            on_quote=self._on_quote,
            on_event=self._on_event,
            # Traded size gives live bars the same volume unit as history bars
            # (shares); without it the volume ratio restarts after every start.
            on_trade=self._on_trade,
            encoding="msgpack",  # what alpaca-py uses: smaller and cheaper to decode
            silence_timeout_s=s.stream.silence_timeout_s or None,
            connect_timeout_s=s.stream.connect_timeout_s,
            backoff=Backoff(s.stream.backoff_initial_s, s.stream.backoff_max_s),
        )
        self.stream.start()
        # Raw (unenveloped) periodic flushes: no span of their own, so quote
        # traces start at the quote and are sampled like quotes.
        self.every(FLUSH_INTERVAL_S, ticks.FLUSH, message=FlushQuotes())
        self.every(STATS_INTERVAL_S, ticks.STATS)
        self._publish_stats()  # `status` shows the counters from the start, not after the first tick

    def teardown(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.stop(timeout=5.0)

    # ---- stream thread -------------------------------------------------------------

    def _on_quote(self, quote: Quote) -> None:
        self.watch.quote(quote.symbol, self.clock.monotonic())
        self.buffer.offer(quote)
        # One wake-up message at a time, however fast quotes arrive.
        if not self._wake_pending.is_set():
            self._wake_pending.set()
            self.router.tell(NAME, FlushQuotes(), "market_stream")

    def _on_trade(self, trade: Trade) -> None:
        if self.buffer.offer_trade(trade) and not self._wake_pending.is_set():
            self._wake_pending.set()
            self.router.tell(NAME, FlushQuotes(), "market_stream")

    def _on_event(self, event: StreamEvent) -> None:
        self.router.tell(NAME, event.to_status(), "market_stream")
        if event.fatal:
            # Bad keys, no entitlement, symbol limit: reconnecting will not fix these.
            code = f" (code {event.code})" if event.code is not None else ""
            self.router.tell(
                names.ALERTER,
                Alert(
                    "CRITICAL",
                    f"market-data:{event.kind}",
                    f"market data: {event.kind} {event.detail}{code}",
                    NAME,
                    self.clock.now_ns(),
                ),
                NAME,
            )

    # ---- actor thread --------------------------------------------------------------

    @handles(FlushQuotes)
    def on_flush(self, _flush: FlushQuotes) -> None:
        self._wake_pending.clear()
        for item in self.buffer.take(self._has_room):
            self.tell(analyzer_name(item.symbol), item)
            if type(item) is Quote:
                self.delivered += 1

    def _has_room(self, symbol: str) -> bool:
        ref = self.router.lookup(analyzer_name(symbol))
        if ref is None:
            return True  # restarting: the router holds a bounded buffer for it
        return mailbox_size(ref) < self.max_inflight

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what == ticks.STATS:
            alerts = self.watch.check(self.clock.monotonic())
            self._publish_stats()
            self._raise(alerts)

    def _publish_stats(self) -> None:
        self.svc.stats["market_data"] = {
            **self.stream.stats(),
            "delivered": self.delivered,
            "conflated": self.buffer.conflated,
            "stale_symbols": sorted(self.watch.stale),
            "quotes_by_symbol": dict(self.watch.received),
            "quote_age_s": self.watch.ages(self.clock.monotonic()),
        }

    def _raise(self, alerts: list[tuple[AlertLevel, str, str]]) -> None:
        for level, key, text in alerts:
            self.tell(names.ALERTER, Alert(level, key, text, NAME, self.clock.now_ns()))

    @handles(ClockSnapshot)
    def on_clock(self, clock: ClockSnapshot) -> None:
        self.watch.set_market_open(clock.is_open, self.clock.monotonic())
        if clock.is_open != self.market_open:
            self.market_open = clock.is_open
            silence = self.svc.settings.stream.silence_timeout_s if clock.is_open else None
            self.stream.set_silence_timeout(silence)
            log.info(
                "market %s: silent-socket detection %s",
                "open" if clock.is_open else "closed",
                "on" if silence else "off",
            )

    @handles(StreamStatus)
    def on_status(self, status: StreamStatus) -> None:
        if status.connected != self.connected:
            log.info("market data %s: %s", "connected" if status.connected else "disconnected", status.detail)
        self.connected = status.connected
        self._raise(self.watch.status(status.connected, status.detail, self.clock.monotonic()))
