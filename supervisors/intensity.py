"""Restart decisions, pure: no threads, no clocks (callers pass `now`).

OTP semantics:
- restart type: permanent always restarts, transient only after an abnormal
  exit, temporary never;
- strategy: which children restart when one fails (in start order);
- intensity: at most `max_restarts` restarts in any `period_s` window;
- backoff: exponential per child, capped, with jitter from an injectable RNG.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence

from stockade.supervisors.spec import RestartType, Strategy


def should_restart(restart: RestartType, abnormal: bool) -> bool:
    """Whether a child that exited (abnormally or not) is restarted."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return abnormal
    return False


def restart_targets(strategy: Strategy, order: Sequence[str], failed: str) -> list[str]:
    """Children to restart when `failed` fails, in start order.

    `order` is the supervisor's live children in start order (children that
    ended for good are left out by the caller, as OTP does).
    """
    if failed not in order:
        raise ValueError(f"{failed!r} is not one of {list(order)!r}")
    if strategy == "one_for_one":
        return [failed]
    if strategy == "one_for_all":
        return list(order)
    if strategy == "rest_for_one":
        return list(order[order.index(failed) :])
    raise ValueError(f"unknown strategy {strategy!r}")


def backoff_delay(
    attempt: int,
    initial_s: float,
    max_s: float,
    jitter: float,
    rng: random.Random | None = None,
) -> float:
    """Delay before restart number `attempt` (1-based) of one child.

    Doubles from `initial_s`, capped at `max_s`, then shortened by up to
    `jitter` (a fraction): jitter only ever shortens, so the cap holds and
    capped restarts still spread out.
    """
    if attempt < 1:
        attempt = 1
    # Cap the exponent: 2**1000 would overflow a float long after the cap.
    delay = min(max_s, initial_s * (2.0 ** min(attempt - 1, 60)))
    if jitter > 0 and delay > 0:
        u = (rng or random).random()
        delay *= 1.0 - jitter * u
    return max(0.0, delay)


class RestartIntensity:
    """The restart window of one supervisor: at most `max_restarts` in `period_s`.

    `record(name, now)` notes one restart (of child `name`) and says whether
    it is still within intensity and how many restarts that child had in the
    window, which drives its backoff.
    """

    def __init__(self, max_restarts: int, period_s: float) -> None:
        self.max_restarts = max_restarts
        self.period_s = period_s
        self._events: collections.deque[tuple[float, str]] = collections.deque()

    def _expire(self, now: float) -> None:
        horizon = now - self.period_s
        while self._events and self._events[0][0] <= horizon:
            self._events.popleft()

    def record(self, name: str, now: float) -> tuple[bool, int]:
        """Record a restart of `name` at `now`: (within_intensity, attempt)."""
        self._expire(now)
        self._events.append((now, name))
        attempt = sum(1 for _, n in self._events if n == name)
        return len(self._events) <= self.max_restarts, attempt

    def count(self, now: float) -> int:
        """Restarts within the window ending at `now`."""
        self._expire(now)
        return len(self._events)
