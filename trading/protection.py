"""When to ask for a protective stop, and when to say it is overdue. Pure: given `now`.

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

import msgspec


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
