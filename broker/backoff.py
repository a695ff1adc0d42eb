"""Exponential backoff with full jitter for reconnect loops.

Full jitter (a uniform draw in ``[0, min(cap, base * factor**n)]``) spreads
many clients that lost the same server apart, instead of having them return
in lock step. The attempt count resets only after a connection stayed up for
`stable_after_s`, so a server that accepts and at once drops us keeps
pushing the delay up rather than being hammered.
"""

from __future__ import annotations

import random
import time


class Backoff:
    """Delay calculator for one reconnecting client. Not thread-safe."""

    def __init__(
        self,
        base_s: float = 0.5,
        cap_s: float = 30.0,
        *,
        factor: float = 2.0,
        stable_after_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if base_s <= 0 or cap_s < base_s or factor < 1.0 or stable_after_s < 0:
            raise ValueError(
                f"bad backoff: base_s={base_s} cap_s={cap_s} factor={factor} stable_after_s={stable_after_s}"
            )
        self.base_s = base_s
        self.cap_s = cap_s
        self.factor = factor
        self.stable_after_s = stable_after_s
        self.rng = rng if rng is not None else random.Random()
        self.attempts = 0
        self._up_since: float | None = None

    def ceiling(self) -> float:
        """The upper bound of the next draw."""
        # min() before the power would still overflow for huge attempt counts
        exp = min(self.attempts, 64)
        return min(self.cap_s, self.base_s * self.factor**exp)

    def next_delay(self) -> float:
        """Draw the next delay and count the attempt."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0

    def mark_up(self, now: float | None = None) -> None:
        """The connection is fully working (authenticated and subscribed)."""
        self._up_since = time.monotonic() if now is None else now

    def mark_down(self, now: float | None = None) -> bool:
        """The connection ended; reset if it had been stable. Returns whether it reset."""
        up_since, self._up_since = self._up_since, None
        if up_since is None:
            return False
        now = time.monotonic() if now is None else now
        if now - up_since >= self.stable_after_s:
            self.reset()
            return True
        return False
