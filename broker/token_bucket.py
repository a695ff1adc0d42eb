"""The REST budget: a token bucket with reserves kept for protection and for the emergency stop.

Alpaca allows 200 trading REST requests a minute per key; stockade spends at
most `orders.rate_limit_per_min` of it (80% by default). Every trading call
of the order manager and the reconciler (submits, look-ups, replaces,
resyncs, polls, reconcile reads) takes a token from one bucket per API key
in the process. Three tiers, each with a floor it may not take the bucket
below:
- ordinary calls (new entries, reads, replaces) leave the last
  `reserve + protect_reserve` tokens;
- protective stops (`protect=True`: a position's shares without a stop) may
  spend the `protect_reserve` too, so a busy strategy cannot delay them;
- the EmergencyStop's requests are never held back (its client is
  `limit_client(..., emergency=True)`: counted, never refused), so a busy
  strategy can never leave a liquidation without budget, and the others see
  what a liquidation spent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from stockade.supervisors import fence


class BudgetSpent(RuntimeError):
    """The local REST budget is spent: the request was NOT sent."""


class TokenBucket:
    """`rate_per_min` tokens a minute, at most `capacity`; `reserve` kept for emergencies and
    `protect_reserve` above it for protective stops. Thread-safe."""

    def __init__(
        self,
        rate_per_min: float,
        reserve: int = 0,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        protect_reserve: int = 0,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._set_limits(rate_per_min, reserve, capacity, protect_reserve)
        self._tokens = self.capacity
        self._last = clock()
        self.taken = 0
        self.refused = 0
        self.overdrawn = 0  # emergency requests sent with no token left

    def _set_limits(self, rate_per_min: float, reserve: int, capacity: float | None, protect_reserve: int) -> None:
        if rate_per_min <= 0:
            raise ValueError(f"rate_per_min must be > 0, got {rate_per_min!r}")
        cap = float(capacity if capacity is not None else rate_per_min)
        if not 0 <= reserve < cap:
            raise ValueError(f"reserve must be in [0, capacity), got {reserve!r}")
        if not 0 <= protect_reserve < cap - reserve:
            raise ValueError(f"protect_reserve must be in [0, capacity - reserve), got {protect_reserve!r}")
        self.rate_per_min = float(rate_per_min)
        self.rate_per_s = rate_per_min / 60.0
        self.capacity = cap
        self.reserve = reserve
        self.protect_reserve = protect_reserve

    def reconfigure(self, rate_per_min: float, reserve: int = 0, protect_reserve: int = 0) -> None:
        """New limits for the same budget: what was spent stays spent (capped at the new capacity)."""
        with self._lock:
            self._refill()
            self._set_limits(rate_per_min, reserve, None, protect_reserve)
            self._tokens = min(self._tokens, self.capacity)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now

    def _floor(self, emergency: bool, protect: bool) -> float:
        if emergency:
            return 0.0
        return float(self.reserve if protect else self.reserve + self.protect_reserve)

    @property
    def tokens(self) -> float:
        with self._lock:
            self._refill()
            return self._tokens

    def available(self, n: int = 1, emergency: bool = False, protect: bool = False) -> bool:
        """Whether `n` tokens could be taken now (nothing is taken)."""
        return self.tokens - n >= self._floor(emergency, protect)

    def take(self, emergency: bool = False, protect: bool = False) -> bool:
        """Spend one token; ordinary requests may not dip into either reserve, protective ones
        not into the emergency reserve."""
        with self._lock:
            self._refill()
            if self._tokens - 1.0 >= self._floor(emergency, protect):
                self._tokens -= 1.0
                self.taken += 1
                return True
            self.refused += 1
            return False

    def take_emergency(self) -> bool:
        """Count an emergency request, which is sent whatever this returns: a
        token if there is one (the reserve included), else it is `overdrawn`."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                self.taken += 1
                return True
            self.overdrawn += 1
            return False

    def wait_s(self, emergency: bool = False, protect: bool = False) -> float:
        """Seconds until `take(emergency, protect)` could succeed (0 if it can now)."""
        with self._lock:
            self._refill()
            short = self._floor(emergency, protect) + 1.0 - self._tokens
            return max(0.0, short / self.rate_per_s)

    def acquire(self, max_wait_s: float, sleep: Callable[[float], None] = time.sleep, protect: bool = False) -> bool:
        """Take a token (ordinary, or `protect`), waiting up to `max_wait_s` for the refill; False if none came."""
        deadline = self._clock() + max_wait_s
        while not self.take(protect=protect):
            delay = self.wait_s(protect=protect)
            if self._clock() + delay > deadline:
                return False
            sleep(delay)
        return True


# One bucket per API key, whatever the settings say: Alpaca counts requests per
# key, so two clients of one key with different settings must still share it.
_shared: dict[str, TokenBucket] = {}
_shared_lock = threading.Lock()


def shared_bucket(api_key: str, rate_per_min: float, reserve: int, protect_reserve: int = 0) -> TokenBucket:
    """The one bucket of an API key (Alpaca's budget is per key) in this process:
    every ordinary trading client of that key draws from it. Other limits for a
    key that has a bucket reconfigure it (the latest settings win); the tokens
    already spent stay spent."""
    with _shared_lock:
        bucket = _shared.get(api_key)
        if bucket is None:
            bucket = _shared[api_key] = TokenBucket(rate_per_min, reserve=reserve, protect_reserve=protect_reserve)
        elif (bucket.rate_per_min, bucket.reserve, bucket.protect_reserve) != (
            float(rate_per_min),
            int(reserve),
            int(protect_reserve),
        ):
            bucket.reconfigure(rate_per_min, int(reserve), int(protect_reserve))
        return bucket


def install_shared_bucket(
    api_key: str, rate_per_min: float, reserve: int, clock: Callable[[], float], protect_reserve: int = 0
) -> TokenBucket:
    """Make the key's shared bucket one that refills on `clock` (a backtest's simulated time)."""
    with _shared_lock:
        bucket = _shared[api_key] = TokenBucket(rate_per_min, reserve, clock=clock, protect_reserve=protect_reserve)
        return bucket


def forget_shared() -> None:
    """Drop every shared bucket (tests: each daemon a test starts in one process gets a full budget,
    as a real daemon process does, not what earlier tests left of it)."""
    with _shared_lock:
        _shared.clear()


def limit_client(
    client: Any, bucket: TokenBucket, max_wait_s: float, emergency: bool = False, protect: bool = False
) -> Any:
    """Make every HTTP request of an alpaca-py client take a token first.

    A request that finds no token within `max_wait_s` raises `BudgetSpent`
    without being sent, so the caller knows its outcome (nothing happened).
    Keep `max_wait_s` well under the heartbeat timeout: actors call this in
    their handlers. The SDK's own 429 retries are switched off for the same
    reason (it sleeps a second between them, in the caller's thread): a 429
    reaches the caller, whose retry policy (jittered backoff, or the next
    pass) takes over.

    `protect=True` (the order manager's client for protective stops): its
    requests may spend the protection reserve, which ordinary ones leave.

    `emergency=True` (the EmergencyStop's client): each request takes a token
    where there is one, the reserve included, and is never held back or
    refused; the ordinary callers then find the budget that much smaller.
    Its SDK 429 retries stay as configured (a couple of seconds at most): it
    runs on a liquidation thread, never in an actor's handler, and a refused
    cancel or close is worth resending at once.
    """
    if not emergency:
        client._retry = 0
    session = client._session  # alpaca-py internals, checked by broker.rest._configure
    inner = session.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        fence.check("rest", method)  # a replaced actor spends no budget either
        if emergency:
            bucket.take_emergency()
        elif not bucket.acquire(max_wait_s, protect=protect):
            raise BudgetSpent(
                f"local REST budget spent ({bucket.rate_per_s * 60:.0f}/min, "
                f"{bucket.reserve + (0 if protect else bucket.protect_reserve)} in reserve): "
                f"{method} not sent"
            )
        return inner(method, url, *args, **kwargs)

    session.request = request
    return client
