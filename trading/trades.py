"""The performance ledger: round-trip trades rebuilt from the stored fills.

Nothing here is stored twice: a trade is derived, when asked, from the
`fills` table (what happened), the `orders` table (which proposal an order
came from; a bracket leg through its parent) and the ensemble voter's
`voter_decisions` (which members voted on the proposal's side).

Matching is FIFO per symbol: a fill against the open lots' direction closes
the oldest lots first, any rest opens a new lot. A trade is one entry order:
its realised P&L is the sum over the lots it opened and that were closed, its
unrealised P&L is what is still open, marked at the symbol's latest known
price (the newest fill or voter decision price; the report shows the mark).
Fills of positions opened before the ledger began (adopted) open lots like
any other fill, so such a close shows as a trade of the opposite direction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec

from stockade.codecs.records import FillRecord, OrderRecord, VoterDecisionRecord

UNATTRIBUTED = "(none)"


class Trade(msgspec.Struct, kw_only=True):
    """One entry order and what became of it."""

    symbol: str
    direction: Literal["long", "short"]
    entry_order_id: str
    proposal_id: str = ""
    members: tuple[str, ...] = ()
    qty: int = 0  # shares opened
    closed_qty: int = 0
    entry_value: float = 0.0  # sum of qty * price over the opening fills
    exit_value: float = 0.0  # sum of qty * price over the closing matches
    entry_ns: int = 0
    exit_ns: int = 0
    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    mark: float | None = None

    @property
    def entry_price(self) -> float:
        return self.entry_value / self.qty if self.qty else 0.0

    @property
    def exit_price(self) -> float | None:
        return self.exit_value / self.closed_qty if self.closed_qty else None

    @property
    def closed(self) -> bool:
        return self.qty > 0 and self.closed_qty >= self.qty

    @property
    def open_qty(self) -> int:
        return self.qty - self.closed_qty

    @property
    def ret(self) -> float:
        """Realised return on the closed part's entry value."""
        basis = self.entry_price * self.closed_qty
        return self.realized_pnl / basis if basis > 0 else 0.0


@dataclass(slots=True)
class _Lot:
    """An open lot: the trade that opened it, its signed shares left, its price."""

    trade: Trade
    qty: int
    price: float


def proposal_of_order(order_id: str, orders: Mapping[str, OrderRecord]) -> str:
    """The proposal behind an order; a bracket leg's is its parent's."""
    order = orders.get(order_id)
    if order is None:
        return ""
    if not order.proposal_id and order.parent_id:
        parent = orders.get(order.parent_id)
        return parent.proposal_id if parent else ""
    return order.proposal_id


def build_trades(
    fills: Iterable[FillRecord],
    orders: Mapping[str, OrderRecord],
    members: Mapping[str, tuple[str, ...]],
    marks: Mapping[str, float] | None = None,
) -> list[Trade]:
    """Trades in order of entry. `members`: proposal id -> the members on its side;
    `marks`: symbol -> price for the unrealised part (fills' last price when absent)."""
    trades: dict[str, Trade] = {}
    lots: dict[str, deque[_Lot]] = {}  # symbol -> its open lots, oldest first
    last_price: dict[str, float] = {}
    for f in sorted(fills, key=lambda f: (f.ts_ns, f.exec_id)):
        if f.qty <= 0:
            continue
        last_price[f.symbol] = f.price
        sign = 1 if f.side == "buy" else -1
        left = f.qty
        book = lots.setdefault(f.symbol, deque())
        while left and book and (book[0].qty > 0) != (sign > 0):
            lot = book[0]
            m = min(left, abs(lot.qty))
            trade = lot.trade
            lot_sign = 1 if lot.qty > 0 else -1
            trade.realized_pnl += (f.price - lot.price) * m * lot_sign
            trade.closed_qty += m
            trade.exit_value += f.price * m
            trade.exit_ns = f.ts_ns
            lot.qty -= lot_sign * m
            left -= m
            if lot.qty == 0:
                book.popleft()
        if left:
            opened = trades.get(f.client_order_id)
            if opened is None or opened.symbol != f.symbol:
                pid = proposal_of_order(f.client_order_id, orders)
                opened = Trade(
                    symbol=f.symbol,
                    direction="long" if sign > 0 else "short",
                    entry_order_id=f.client_order_id,
                    proposal_id=pid,
                    members=members.get(pid, ()) if pid else (),
                    entry_ns=f.ts_ns,
                )
                trades[f.client_order_id] = opened
            opened.qty += left
            opened.entry_value += f.price * left
            book.append(_Lot(opened, sign * left, f.price))
    prices = {**last_price, **(marks or {})}
    for symbol, book in lots.items():
        mark = prices.get(symbol)
        for lot in book:
            if mark is not None:
                lot.trade.unrealized_pnl += (mark - lot.price) * lot.qty
                lot.trade.mark = mark
    return sorted(trades.values(), key=lambda t: (t.entry_ns, t.entry_order_id))


def members_by_proposal(records: Iterable[VoterDecisionRecord]) -> dict[str, tuple[str, ...]]:
    """Proposal id -> the members that voted on its side (from any step's record)."""
    return {r.proposal_id: r.models for r in records}


def group(trades: Iterable[Trade], key: str) -> dict[str, list[Trade]]:
    """Trades by "symbol" or by "member" (a trade counts once for each of its members)."""
    out: dict[str, list[Trade]] = {}
    for t in trades:
        names = (t.symbol,) if key == "symbol" else (t.members or (UNATTRIBUTED,))
        for name in names:
            out.setdefault(name, []).append(t)
    return dict(sorted(out.items()))
