"""When each symbol's next quote is due: the market simulator's arrival schedule.

- "lockstep": every symbol quotes at the same instant, `rate_hz` times a
  second (the simulator's original schedule, kept by `MarketSimulator.run`
  itself). It is the worst case of a synchronised open: a daemon receives
  every symbol's quote in one burst and evaluates them all at once.
- "staggered": each symbol quotes `rate_hz` times a second, symbol i offset
  by i/n of the interval, so quotes arrive evenly spread, one at a time.
- "poisson": each symbol's quotes are a Poisson process of rate `rate_hz`
  (exponential gaps from one random stream seeded by `seed`), independent of
  each other, as a real SIP's per-symbol quotes are.

Only *when* a symbol ticks changes: its n-th tick's prices stay a pure
function of (seed, symbol, n, rate_hz) (see venue/market.py). Pure: the
caller gives the time, nothing here sleeps.
"""

from __future__ import annotations

import heapq
import random

QUOTE_ARRIVALS = ("lockstep", "staggered", "poisson")


class ArrivalSchedule:
    """Due times (seconds on the caller's clock) of each of `n` symbols' next tick, "staggered" or "poisson"."""

    def __init__(self, arrivals: str, n: int, rate_hz: float, seed: int, origin_s: float) -> None:
        if arrivals not in ("staggered", "poisson"):
            raise ValueError(f"arrivals must be staggered or poisson here, got {arrivals!r}")
        if n < 1 or rate_hz <= 0:
            raise ValueError(f"need n >= 1 and rate_hz > 0, got {n} and {rate_hz}")
        self.arrivals = arrivals
        self.interval = 1.0 / rate_hz
        self.rate_hz = rate_hz
        # Its own stream: the prices' streams (per symbol) are not touched.
        self._rng = random.Random(f"arrivals:{seed}:{n}:{rate_hz}")
        self._heap = [(origin_s + self._first_gap(i, n), i) for i in range(n)]
        heapq.heapify(self._heap)

    def _first_gap(self, i: int, n: int) -> float:
        if self.arrivals == "staggered":
            return self.interval * (i + 1) / n
        return self._rng.expovariate(self.rate_hz)

    def _gap(self) -> float:
        return self.interval if self.arrivals == "staggered" else self._rng.expovariate(self.rate_hz)

    def next_due(self) -> float:
        """When the earliest next tick is due."""
        return self._heap[0][0]

    def pop_due(self, now_s: float) -> int | None:
        """The index of a symbol whose tick is due by `now_s` (earliest first), rescheduled; None if none is.

        A symbol more than one interval behind (the loop was starved) is
        rescheduled from `now_s`: a backlog is dropped, not chased, as the
        lockstep loop does.
        """
        due, i = self._heap[0]
        if due > now_s:
            return None
        nxt = due + self._gap()
        if nxt < now_s - self.interval:
            nxt = now_s + self._gap()
        heapq.heapreplace(self._heap, (nxt, i))
        return i
