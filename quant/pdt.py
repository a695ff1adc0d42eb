"""Pattern-day-trader accounting (pure).

A day trade is opening and closing the same symbol on the same exchange
day. FINRA flags an account under $25,000 that makes four of them within
five business days; Alpaca refuses the order that would be the fourth
(error 40310100). We count our own from fills, take the broker's
`daytrade_count` whenever it is higher (it sees everything, including
trades made outside stockade), and a 40310100 rejection locks out day
trades for the rest of that exchange day.

One closing order counts once, however many fills it takes (as Alpaca
counts).
"""

from __future__ import annotations

from datetime import date
from typing import Iterable, Mapping

import msgspec


class PdtStatus(msgspec.Struct, frozen=True):
    """What the PDT rule needs: the count and the same-day exposure."""

    ours: int
    broker: int
    locked_out: bool  # the broker refused a day trade today (40310100)
    opened_today: frozenset[str]  # symbols with shares opened today still held

    @property
    def count(self) -> int:
        """The reconciled count: the broker's wins when it is higher."""
        return max(self.ours, self.broker)


class DayTradeCounter:
    """Day trades per exchange day, and shares opened today per symbol."""

    def __init__(self, day_trades: Mapping[date, int] | None = None) -> None:
        self.day_trades: dict[date, int] = dict(day_trades or {})
        self._opened: dict[str, tuple[date, float]] = {}  # symbol -> (day, |qty| opened that day, still held)
        self._counted_orders: dict[str, date] = {}  # closing order id -> its day
        self._locked_day: date | None = None

    def opening_fill(self, symbol: str, qty: float, day: date) -> None:
        """A fill that grew the position (a buy into a long, a sell into a short)."""
        held_day, held = self._opened.get(symbol, (day, 0.0))
        self._opened[symbol] = (day, (held if held_day == day else 0.0) + abs(qty))

    def closing_fill(self, symbol: str, qty: float, day: date, order_id: str) -> bool:
        """A fill that shrank the position; True if it made (or continued) a day trade."""
        held_day, held = self._opened.get(symbol, (day, 0.0))
        if held_day != day or held <= 0:
            return False
        left = max(0.0, held - abs(qty))
        if left > 0:
            self._opened[symbol] = (day, left)
        else:
            self._opened.pop(symbol, None)
        if order_id not in self._counted_orders:
            self._counted_orders[order_id] = day
            self.day_trades[day] = self.day_trades.get(day, 0) + 1
        return True

    def position_gone(self, symbol: str) -> None:
        """The position is flat by other means (liquidation seen at reconcile)."""
        self._opened.pop(symbol, None)

    def broker_refused(self, day: date) -> None:
        """The broker answered 40310100: no day trade for the rest of `day`."""
        self._locked_day = day

    def count(self, window: Iterable[date]) -> int:
        return sum(self.day_trades.get(d, 0) for d in window)

    def opened_today(self, day: date) -> frozenset[str]:
        return frozenset(s for s, (d, q) in self._opened.items() if d == day and q > 0)

    def status(self, today: date, window: Iterable[date], broker_count: int) -> PdtStatus:
        return PdtStatus(self.count(window), broker_count, self._locked_day == today, self.opened_today(today))

    def prune(self, window: Iterable[date]) -> None:
        """Forget days older than the window (and the orders counted on them)."""
        days = tuple(window)
        if not days:
            return
        oldest = min(days)
        self.day_trades = {d: n for d, n in self.day_trades.items() if d >= oldest}
        self._counted_orders = {o: d for o, d in self._counted_orders.items() if d >= oldest}
