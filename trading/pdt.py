"""Day-trade accounting for the optional, self-imposed day-trade budget (pure).

A day trade is opening and closing the same symbol on the same exchange
day. FINRA's pattern-day-trader rule (four in five business days under
$25,000) was retired in 2026 for intraday margin standards (amended Rule
4210); Alpaca no longer counts day trades, flags accounts or refuses an
order as one (its account lost `daytrade_count` and `pattern_day_trader` on
2026-07-06). What remains here is a speed bump an operator may choose:
`[risk] day_trade_budget` (off by default), judged on stockade's own fills
only. The module keeps its historical name.

One closing order counts once, however many fills it takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date

import msgspec


class DayTradeStatus(msgspec.Struct, frozen=True):
    """What the day-trade budget rule needs: the count and the same-day exposure."""

    count: int  # day trades in the budget's window of sessions
    opened_today: frozenset[str]  # symbols with shares opened today still held


class DayTradeCounter:
    """Day trades per exchange day, and shares opened today per symbol."""

    def __init__(self, day_trades: Mapping[date, int] | None = None) -> None:
        self.day_trades: dict[date, int] = dict(day_trades or {})
        self._opened: dict[str, tuple[date, float]] = {}  # symbol -> (day, |qty| opened that day, still held)
        self._counted_orders: dict[str, date] = {}  # closing order id -> its day

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

    def count(self, window: Iterable[date]) -> int:
        return sum(self.day_trades.get(d, 0) for d in window)

    def opened_today(self, day: date) -> frozenset[str]:
        return frozenset(s for s, (d, q) in self._opened.items() if d == day and q > 0)

    def status(self, today: date, window: Iterable[date]) -> DayTradeStatus:
        return DayTradeStatus(self.count(window), self.opened_today(today))

    def prune(self, window: Iterable[date]) -> None:
        """Forget days older than the window (and the orders counted on them)."""
        days = tuple(window)
        if not days:
            return
        oldest = min(days)
        self.day_trades = {d: n for d, n in self.day_trades.items() if d >= oldest}
        self._counted_orders = {o: d for o, d in self._counted_orders.items() if d >= oldest}
