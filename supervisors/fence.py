"""Fence tokens: a replaced actor instance may not act; a busy one is not hung.

Every actor instance (one generation of a name) holds a `FenceToken`, made
by its supervisor when it starts the instance (`Router.token`). Whether the
token still holds is the router's answer (`Router.is_current`), so the
supervisor's own moves revoke it at once: fencing a hung instance
(`Router.fence`, which covers its whole subtree) or reserving its successor's
generation (`Router.next_generation`). Nothing else needs flipping.

The base actor binds its token to its own thread (`bind`, in pykka's
`on_start`), and every point where an actor changes state or reaches the
broker checks the calling thread's token first (`check`):
- `Environment.write`, as a write transaction begins and again just before it
  commits (every table, the ledger, the orders index),
- `Journal` appends,
- `Router.deliver` (every `tell`),
- the REST session (`broker.rest.TimeoutSession.request`: every HTTP request
  alpaca-py makes) and the REST budget (`limit_client`: no token is spent).
A revoked token raises `Fenced` there, which unwinds the zombie's handler
before the side effect (a transaction in progress is aborted). Each refusal
is counted per name and kind (`Router.refusal_counts`, `ctl status`); the
first of an instance is logged, the rest are only counted.

Why the thread and not a wrapped handle: a pykka actor instance runs on a
thread of its own, so the thread *is* the instance (a pooled actor,
`supervisors.pool`, is bound to its worker thread for each slice of
messages it runs there, and unbound after). A handle can be
bypassed (an actor keeps the shared `Store`, a helper is given `svc`); the
calling thread cannot. Threads an actor starts itself carry no token: stream
threads only post to the mailbox (the current instance's), and the kill
switch's liquidation thread must never be held back.

Busy: a bounded call declares itself (`with busy(seconds, what):`; the REST
session does it around every request, for its connect + read timeouts).
Until that deadline the supervisor counts the instance as busy, not hung;
the heartbeat clock restarts when the block ends, or when its deadline
passes with the block still open (a "bounded" call that is not, i.e. a hang).
See `supervisors.health.silent_for`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

# Longest a single busy declaration may claim: a typo must not make an
# actor unkillable by heartbeat for a day.
MAX_BUSY_S = 3600.0

# What a refusal was, for the counters.
KINDS = ("storage", "journal", "tell", "rest")


class Fenced(RuntimeError):
    """The caller is a replaced (fenced) instance and may not act."""


class FenceToken:
    """One actor instance's right to act, and its declared busy deadline.

    `busy_until` (monotonic seconds) is the deadline of the open busy block,
    or the time the last one ended; 0.0 if it never was busy. `busy_what`
    names the latest block (for a hang's reason). Both are written only by
    the thread the token is bound to (`busy` is called there), and read by
    the supervisor's thread.
    """

    __slots__ = ("name", "generation", "_current", "_on_refusal", "_logged", "_open", "busy_until", "busy_what")

    def __init__(
        self,
        name: str,
        generation: int,
        current: Callable[[], bool],
        on_refusal: Callable[[str, str], None] | None = None,
    ) -> None:
        self.name = name
        self.generation = generation
        self._current = current
        self._on_refusal = on_refusal
        self._logged = False
        self._open: list[float] = []
        self.busy_until = 0.0
        self.busy_what = ""

    @property
    def fenced(self) -> bool:
        """True once this instance has been replaced or fenced."""
        return not self._current()

    def check(self, kind: str, what: str = "") -> None:
        """Raise `Fenced` (counted, logged once) if this instance may no longer act."""
        if self._current():
            return
        if self._on_refusal is not None:
            self._on_refusal(self.name, kind)
        if not self._logged:
            self._logged = True
            logger.warning(
                "%s gen %d is fenced (replaced): refused its %s%s; later refusals are only counted",
                self.name,
                self.generation,
                kind,
                f" ({what})" if what else "",
            )
        raise Fenced(f"{self.name} gen {self.generation} has been replaced: {kind} refused")

    @contextlib.contextmanager
    def busy(self, seconds: float, what: str) -> Iterator[None]:
        """Declare bounded work of at most `seconds`: busy, not hung, until then."""
        if not 0 < seconds <= MAX_BUSY_S:
            raise ValueError(f"busy seconds must be in (0, {MAX_BUSY_S:g}], got {seconds!r}")
        deadline = time.monotonic() + seconds
        self._open.append(deadline)
        self.busy_until, self.busy_what = max(self._open), what
        try:
            yield
        finally:
            self._open.remove(deadline)
            # Still inside an outer block: its deadline holds. Else the clock
            # restarts now.
            self.busy_until = max(self._open) if self._open else time.monotonic()


_local = threading.local()


def bind(token: FenceToken | None) -> None:
    """Make `token` the calling thread's (the base actor does it in its own thread)."""
    _local.token = token


def bound() -> FenceToken | None:
    """The calling thread's token, or None (not an actor's thread)."""
    return getattr(_local, "token", None)


def check(kind: str, what: str = "") -> None:
    """Refuse (raise `Fenced`) if the calling thread belongs to a fenced instance; no-op elsewhere."""
    token = getattr(_local, "token", None)
    if token is not None:
        token.check(kind, what)


@contextlib.contextmanager
def busy(seconds: float, what: str) -> Iterator[None]:
    """`FenceToken.busy` for the calling thread's token; a no-op outside actor threads."""
    token = getattr(_local, "token", None)
    if token is None:
        yield
        return
    with token.busy(seconds, what):
        yield
