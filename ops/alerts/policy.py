"""Alert dedup and rate limiting, per alert key. Pure: no I/O, injectable clock.

- An alert with the same key as one delivered less than `dedup_window_s` ago
  is suppressed, unless its level is higher than that one's (a WARNING that
  turns CRITICAL must get through).
- At most `max_per_key_per_hour` deliveries per key in any rolling hour.
- EMERGENCY is never suppressed: it is the liquidation path.
- Suppressed alerts are counted; the count rides on the next delivered alert
  of that key (`Decision.suppressed`) and `pending_suppressed()` reports
  counts still waiting, for a periodic summary.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import msgspec

from stockade.config.names import ALERT_LEVELS

LEVEL_RANK: dict[str, int] = {level: rank for rank, level in enumerate(ALERT_LEVELS)}
HOUR_S = 3600.0


class Decision(msgspec.Struct, frozen=True):
    deliver: bool
    suppressed: int  # deliver: how many of this key were suppressed since the last delivery
    reason: str  # "", "duplicate" or "rate limit"


class _KeyState:
    __slots__ = ("last_at", "last_rank", "sent", "suppressed")

    def __init__(self) -> None:
        self.last_at = float("-inf")
        self.last_rank = -1
        self.sent: collections.deque[float] = collections.deque()
        self.suppressed = 0


class AlertPolicy:
    """Decide, per alert, whether to deliver it now."""

    def __init__(
        self,
        dedup_window_s: float,
        max_per_key_per_hour: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.dedup_window_s = dedup_window_s
        self.max_per_key_per_hour = max_per_key_per_hour
        self._clock = clock
        self._max_keys = max_keys
        self._keys: dict[str, _KeyState] = {}

    def decide(self, key: str, level: str) -> Decision:
        """Record an alert of `key` at `level` and say whether to deliver it."""
        now = self._clock()
        st = self._keys.get(key)
        if st is None:
            self._forget_old(now)
            st = self._keys[key] = _KeyState()
        while st.sent and now - st.sent[0] >= HOUR_S:
            st.sent.popleft()
        rank = LEVEL_RANK.get(level, 0)
        if rank < LEVEL_RANK["EMERGENCY"]:
            if now - st.last_at < self.dedup_window_s and rank <= st.last_rank:
                st.suppressed += 1
                return Decision(False, st.suppressed, "duplicate")
            if len(st.sent) >= self.max_per_key_per_hour:
                st.suppressed += 1
                return Decision(False, st.suppressed, "rate limit")
        suppressed, st.suppressed = st.suppressed, 0
        st.last_at, st.last_rank = now, rank
        st.sent.append(now)
        return Decision(True, suppressed, "")

    def pending_suppressed(self) -> dict[str, int]:
        """Keys with suppressed alerts not yet mentioned by a delivery."""
        return {k: st.suppressed for k, st in self._keys.items() if st.suppressed}

    def take_suppressed(self, key: str) -> int:
        """Reset and return `key`'s suppressed count (after a summary was sent)."""
        st = self._keys.get(key)
        if st is None:
            return 0
        n, st.suppressed = st.suppressed, 0
        return n

    def _forget_old(self, now: float) -> None:
        # Bound memory against unbounded key spaces (e.g. a key per order id):
        # drop keys idle for an hour with nothing to report, then the oldest.
        if len(self._keys) < self._max_keys:
            return
        horizon = max(HOUR_S, self.dedup_window_s)
        for k in [k for k, st in self._keys.items() if now - st.last_at >= horizon and not st.suppressed]:
            del self._keys[k]
        while len(self._keys) >= self._max_keys:
            oldest = min(self._keys, key=lambda k: self._keys[k].last_at)
            del self._keys[oldest]
