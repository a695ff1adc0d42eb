"""Per-symbol conflation: the newest quote per symbol waits; older ones are dropped.

The stream thread `offer`s every quote; the dispatcher `take`s the symbols it
may deliver now. However fast quotes arrive, at most one quote per symbol is
ever held, so a lagging analyzer costs memory O(symbols), never a backlog.

Trades are merged rather than dropped: volume must add up, so a pending
trade per symbol accumulates the sizes of every trade since the last
delivery and keeps the newest price and times.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from stockade.codecs.messages import Quote, Trade


class ConflatingBuffer:
    """Latest quote per symbol, in arrival order of first pending. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Quote] = {}
        self._trades: dict[str, Trade] = {}
        self.offered = 0
        self.conflated = 0  # quotes replaced before delivery
        self.trades_merged = 0

    def offer(self, quote: Quote) -> bool:
        """Hold `quote`; True when the symbol had nothing pending (a wake-up is due)."""
        with self._lock:
            self.offered += 1
            fresh = quote.symbol not in self._pending
            if not fresh:
                self.conflated += 1
            self._pending[quote.symbol] = quote
            return fresh

    def offer_trade(self, trade: Trade) -> bool:
        """Hold `trade`, merged with any pending one; True when none was pending."""
        with self._lock:
            prev = self._trades.get(trade.symbol)
            if prev is None:
                self._trades[trade.symbol] = trade
                return True
            self.trades_merged += 1
            self._trades[trade.symbol] = Trade(
                trade.symbol, trade.price, prev.size + trade.size, trade.ts_ns, trade.recv_ns
            )
            return False

    def take(self, may_send: Callable[[str], bool]) -> list[Quote | Trade]:
        """Remove and return the pending trades and quotes whose symbol `may_send` allows.

        A symbol's trade comes before its quote, so the volume lands in the
        bar the quote may close.
        """
        with self._lock:
            symbols = [s for s in {**self._trades, **self._pending} if may_send(s)]
            ready: list[Quote | Trade] = []
            for s in symbols:
                t = self._trades.pop(s, None)
                if t is not None:
                    ready.append(t)
                q = self._pending.pop(s, None)
                if q is not None:
                    ready.append(q)
            return ready

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)
