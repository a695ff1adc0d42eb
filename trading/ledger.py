"""Ledger arithmetic: what a fill does to a position. Pure functions."""

from __future__ import annotations

from stockade.codecs.records import OrderRecord, PositionRecord


def apply_fill(
    position: PositionRecord | None, symbol: str, side: str, qty: int, price: float, now_ns: int
) -> PositionRecord:
    """The position after a fill of `qty` at `price` (average price on adds,
    unchanged average on reductions, reset when the position flips)."""
    signed = qty if side == "buy" else -qty
    old_qty = position.qty if position else 0
    old_avg = position.avg_entry_price if position else 0.0
    new_qty = old_qty + signed
    if new_qty == 0:
        avg = 0.0
    elif old_qty == 0 or (old_qty > 0) == (signed > 0):
        avg = (old_avg * abs(old_qty) + price * abs(signed)) / abs(new_qty)
    elif (old_qty > 0) != (new_qty > 0):
        avg = price  # flipped through zero: the remainder opened at this price
    else:
        avg = old_avg
    stop_id = position.protective_stop_order_id if position and new_qty != 0 else None
    return PositionRecord(
        symbol=symbol, qty=new_qty, avg_entry_price=avg, updated_ns=now_ns, protective_stop_order_id=stop_id
    )


def fill_increment(
    record: OrderRecord, filled_qty: int, filled_avg_price: float | None, fill_price: float | None
) -> tuple[int, float] | None:
    """The new execution implied by a cumulative update: (qty, price), or None if nothing new.

    Trade updates carry the cumulative filled qty and average price; the
    difference from what the ledger has is the fill, so a replayed or
    re-synced update adds nothing twice.
    """
    delta = filled_qty - record.filled_qty
    if delta <= 0:
        return None
    if fill_price is not None and fill_price > 0:
        return delta, fill_price
    if filled_avg_price is None:
        return None
    old_value = (record.filled_avg_price or 0.0) * record.filled_qty
    price = (filled_avg_price * filled_qty - old_value) / delta
    return delta, price if price > 0 else filled_avg_price


def disagreements_to_adopt(
    ledger: dict[str, int],
    broker: dict[str, int],
    suspects: dict[str, tuple[int, int]],
    first_pass: bool,
    stale: frozenset[str] | set[str] = frozenset(),
) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """Which symbols' broker quantity to adopt now, and what to re-check next pass.

    A fill races a broker snapshot (either side may count it first), so a
    disagreement is adopted only when the next pass sees the very same one,
    or at once on the first pass after start, before any trading. A `stale`
    symbol (the ledger recorded a fill of it after the snapshot was asked
    for, see `snapshot_stale`) is neither adopted nor remembered: the
    snapshot may predate that fill.
    """
    adopt: list[str] = []
    again: dict[str, tuple[int, int]] = {}
    for symbol in sorted(set(ledger) | set(broker)):
        pair = (ledger.get(symbol, 0), broker.get(symbol, 0))
        if pair[0] == pair[1] or symbol in stale:
            continue
        if first_pass or suspects.get(symbol) == pair:
            adopt.append(symbol)
        else:
            again[symbol] = pair
    return adopt, again


def snapshot_stale(before: dict[str, int], after: dict[str, int]) -> set[str]:
    """Symbols with a fill recorded between `before` (fill sequences read just
    before the broker was asked) and `after` (read when its answer is used):
    for them the answer may be older than the ledger."""
    return {symbol for symbol in set(before) | set(after) if after.get(symbol, 0) != before.get(symbol, 0)}


STOP_TYPES = frozenset(("stop", "stop_limit", "trailing_stop"))


def uncovered_qty(position_qty: int, sell_orders: list[tuple[str, int]]) -> int:
    """Shares of a long position no resting sell stop covers (0: fully protected).

    `sell_orders` are (order type, remaining qty) of the symbol's open sell
    orders, bracket stop legs still held for their working entry included:
    they arm when the entry completes. A take-profit limit is not protection.
    """
    covered = sum(remaining for kind, remaining in sell_orders if kind in STOP_TYPES)
    return max(0, position_qty - covered)


def ledger_uncovered(position_qty: int, orders: list[OrderRecord]) -> int:
    """Shares of a long ledger position that no sell stop in the ledger covers (0: protected).

    `orders` are the symbol's open ledger orders, pending ones included: a
    stop on its way (intent, submitted, outcome unknown) counts, so it is
    never asked for twice. A bracket entry whose legs are not known yet
    covers what it filled: its stop leg exists at the broker.
    """
    covered = 0
    for o in orders:
        if o.side == "sell" and o.order_type in STOP_TYPES:
            covered += max(0, o.qty - o.filled_qty)
        elif o.side == "buy" and o.order_class == "bracket" and not o.legs:
            covered += o.filled_qty
    return max(0, position_qty - covered)
