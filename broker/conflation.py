"""Per-symbol conflation: the newest quote per symbol waits; older ones are dropped.

The stream thread `offer`s every quote; the dispatcher `take`s the symbols it
may deliver now. However fast quotes arrive, at most one quote per symbol is
ever held, so a lagging analyzer costs memory O(symbols), never a backlog.
"""

from __future__ import annotations

import threading
from typing import Callable

from stockade.codecs.messages import Quote


class ConflatingBuffer:
    """Latest quote per symbol, in arrival order of first pending. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Quote] = {}
        self.offered = 0
        self.conflated = 0  # quotes replaced before delivery

    def offer(self, quote: Quote) -> bool:
        """Hold `quote`; True when the symbol had nothing pending (a wake-up is due)."""
        with self._lock:
            self.offered += 1
            fresh = quote.symbol not in self._pending
            if not fresh:
                self.conflated += 1
            self._pending[quote.symbol] = quote
            return fresh

    def take(self, may_send: Callable[[str], bool]) -> list[Quote]:
        """Remove and return the pending quotes whose symbol `may_send` allows."""
        with self._lock:
            ready = [q for s, q in self._pending.items() if may_send(s)]
            for q in ready:
                del self._pending[q.symbol]
            return ready

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)
