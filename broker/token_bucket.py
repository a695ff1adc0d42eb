"""Order rate limiting: a token bucket with a reserve kept for emergencies.

Pure (injectable clock). Alpaca allows 200 REST requests a minute; ordinary
orders may only spend tokens above `reserve`, so protective and
exposure-reducing orders still go out when the strategy has been busy.
"""

from __future__ import annotations

import time
from typing import Callable


class TokenBucket:
    """`rate_per_min` tokens a minute, at most `capacity`; `reserve` kept for emergencies."""

    def __init__(
        self,
        rate_per_min: float,
        reserve: int = 0,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_min <= 0:
            raise ValueError(f"rate_per_min must be > 0, got {rate_per_min!r}")
        self.rate_per_s = rate_per_min / 60.0
        self.capacity = float(capacity if capacity is not None else rate_per_min)
        if not 0 <= reserve < self.capacity:
            raise ValueError(f"reserve must be in [0, capacity), got {reserve!r}")
        self.reserve = reserve
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def take(self, emergency: bool = False) -> bool:
        """Spend one token; ordinary requests may not dip into the reserve."""
        self._refill()
        floor = 0.0 if emergency else float(self.reserve)
        if self._tokens - 1.0 >= floor:
            self._tokens -= 1.0
            return True
        return False
