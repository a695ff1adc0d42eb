"""Protective stops, the pure part: how many shares are bare, how many of them the
broker still holds, where the stop goes, when to ask, when to say it is overdue.
Pure: given the ledger's records, the broker's answer and `now`
(actors/order_protection.py does the asking).

The order manager keeps one `ProtectionWatch`. Each time the ledger shows a
long position with shares no stop covers (a fill, a stop that ended, a
periodic check), it asks `due(symbol, now)`: the first time at once, then
after an exponentially growing, fully jittered delay, so a broker refusing
with 429s is not hammered yet is asked again well within the bound.
`overdue(now)` names, once per episode, the symbols bare for longer than
`bound_s` (alerted CRITICAL `unprotected:SYMBOL`); `covered(symbol)` ends
the episode.
"""

from __future__ import annotations

import random
from typing import Protocol

import msgspec

from stockade.codecs.records import OrderRecord
from stockade.trading.brackets import round_price
from stockade.trading.ledger import ledger_uncovered
from stockade.trading.order_states import PENDING


class _Order(Protocol):
    @property
    def reduce_only(self) -> bool: ...
    @property
    def side(self) -> str: ...
    @property
    def order_type(self) -> str: ...


def is_protective(order: _Order) -> bool:
    """A sell stop that only reduces: a protective stop (paid from the protection reserve)."""
    return order.reduce_only and order.side == "sell" and order.order_type == "stop"


class Coverage(msgspec.Struct, frozen=True):
    """How a long position's shares stand against the ledger's stops."""

    bare: int  # not covered, counting stops on their way (intent, submitted, in doubt)
    exposed: int  # not covered, counting only acknowledged stops
    pending: tuple[OrderRecord, ...]  # the sell stops on their way


def coverage(position_qty: int, orders: list[OrderRecord]) -> Coverage:
    """The coverage of a position of `position_qty` shares by `orders`, the symbol's open ledger orders."""
    if position_qty <= 0:
        return Coverage(0, 0, ())
    pending = tuple(o for o in orders if o.state in PENDING and o.side == "sell" and o.order_type == "stop")
    acknowledged = [o for o in orders if o.state not in PENDING]
    return Coverage(ledger_uncovered(position_qty, orders), ledger_uncovered(position_qty, acknowledged), pending)


def broker_bounded(bare: int, ledger_qty: int, broker_qty: int) -> int:
    """`bare` (the ledger's uncovered shares of `ledger_qty`) bounded by the broker's position:
    never a stop for shares the broker no longer holds (a ledger ahead of it), which could open a short."""
    return max(0, min(bare, broker_qty - (ledger_qty - bare)))


def protective_stop_price(reference: float, stop_pct: float) -> float:
    """The protective stop `stop_pct` percent under `reference`, rounded down to a valid price."""
    return round_price(reference * (1.0 - stop_pct / 100.0), "down")


class _Bare(msgspec.Struct):
    since: float  # first seen bare in this episode
    next_try: float  # no new request before this
    tries: int = 0
    alerted: bool = False


class ProtectionWatch:
    """Per symbol: bare since when, next request when, alerted yet. Not thread-safe."""

    def __init__(self, bound_s: float, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        if bound_s <= 0 or base_s <= 0 or cap_s < base_s:
            raise ValueError(f"bad protection watch: bound_s={bound_s} base_s={base_s} cap_s={cap_s}")
        self.bound_s = bound_s
        self.base_s = base_s
        self.cap_s = cap_s
        self.rng = rng or random.Random()
        self._bare: dict[str, _Bare] = {}

    def due(self, symbol: str, now: float) -> bool:
        """`symbol` has bare shares now: whether a stop should be requested now."""
        entry = self._bare.setdefault(symbol, _Bare(since=now, next_try=now))
        return now >= entry.next_try

    def requested(self, symbol: str, now: float) -> None:
        """A stop was requested now: the next request waits for the backoff (if still bare then)."""
        entry = self._bare.setdefault(symbol, _Bare(since=now, next_try=now))
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(entry.tries, 32))
        entry.tries += 1
        # Full jitter, but never sooner than a tenth of the base: a refusal is not retried in a busy loop.
        entry.next_try = now + max(self.base_s / 10.0, self.rng.uniform(0.0, ceiling))

    def covered(self, symbol: str) -> None:
        """No bare shares (any more): the episode ends."""
        self._bare.pop(symbol, None)

    def bare_for(self, symbol: str, now: float) -> float:
        """Seconds `symbol` has been bare (0 when it is not)."""
        entry = self._bare.get(symbol)
        return now - entry.since if entry else 0.0

    def symbols(self) -> list[str]:
        return sorted(self._bare)

    def overdue(self, now: float) -> list[str]:
        """Symbols bare for longer than the bound and not yet reported this episode (now they are)."""
        out = []
        for symbol, entry in sorted(self._bare.items()):
            if not entry.alerted and now - entry.since > self.bound_s:
                entry.alerted = True
                out.append(symbol)
        return out
