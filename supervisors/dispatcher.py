"""`CallingThreadDispatcher`: run actors' handlers on the calling thread, one FIFO, in order.

Live, each actor is a pykka thread and the order in which two actors handle
their messages depends on the scheduler. A backtest needs the opposite: the
same input gives the same decisions, every time, and any decision can be
replayed in a debugger. So here the very same actor classes are constructed
but never started as threads: their inbox is a view on one FIFO of
envelopes, `run_until_idle()` hands each to its actor's `on_receive` on the
calling thread, oldest first, until nothing is left. The router, fencing,
`@handles` dispatch, spans and failure handling are the base's own, unchanged.

There is no supervisor here: a handler that fails fails the run (a backtest
that silently restarts an actor is not a replay of anything); the failure is
kept in `failures` and `run_until_idle` raises `ActorFailed`.

`ask` is not supported (only supervisors and the control socket ask, and a
backtest has neither).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
from collections.abc import Callable
from typing import Any, cast

import pykka

from stockade.supervisors.context import ActorContext
from stockade.supervisors.events import ChildExit
from stockade.supervisors.router import Router

logger = logging.getLogger(__name__)


class ActorFailed(RuntimeError):
    """An actor failed during a dispatcher run."""


class _FifoInbox:
    """An actor's inbox as seen by pykka: puts land in the dispatcher's one FIFO."""

    def __init__(self, fifo: collections.deque[tuple[Any, Any]], actor: Any) -> None:
        self._fifo = fifo
        self._actor = actor

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item.reply_to is not None:
            raise RuntimeError("ask is not supported by the calling-thread dispatcher")
        self._fifo.append((self._actor, item.message))

    def get_nowait(self) -> Any:
        # The router drains a failed actor's inbox for its next instance; here
        # there is none, and its queued work is skipped when popped.
        raise queue.Empty

    def qsize(self) -> int:
        return sum(1 for actor, _ in self._fifo if actor is self._actor)


class _FifoRef:
    """What the router holds for a dispatcher actor: a tell appends to the FIFO.

    Pykka's `ActorRef.tell` wraps every message in its own envelope for a
    thread's queue (and its inbox here unwrapped it again); here a tell is
    one liveness check and one append. Asks are refused, as by the inbox.
    """

    __slots__ = ("_actor", "_append", "_stopped", "actor_inbox")

    def __init__(self, fifo: collections.deque[tuple[Any, Any]], actor: Any, inbox: _FifoInbox) -> None:
        self._actor = actor
        self._append = fifo.append
        self._stopped = actor.actor_stopped
        self.actor_inbox = inbox  # the router drains a failed actor's inbox through it

    def tell(self, message: Any) -> None:
        if self._stopped.is_set():
            raise pykka.ActorDeadError(f"{self._actor.name} is stopped")
        self._append((self._actor, message))

    def is_alive(self) -> bool:
        return not self._stopped.is_set()

    def ask(self, message: Any, **_: Any) -> Any:
        raise RuntimeError("ask is not supported by the calling-thread dispatcher")

    def __repr__(self) -> str:
        return f"<dispatcher ref {self._actor.name}>"


class CallingThreadDispatcher:
    """Constructs actors without threads and runs their handlers in one FIFO order."""

    def __init__(self, router: Router | None = None) -> None:
        self.router = router or Router()
        self._fifo: collections.deque[tuple[Any, Any]] = collections.deque()
        self.actors: dict[str, Any] = {}
        self.failures: list[ChildExit] = []
        self.handled = 0

    def spawn(self, actor_class: Callable[[ActorContext], Any], ctx: ActorContext) -> Any:
        """Construct `actor_class(ctx)` as `ctx.name`, run its `setup()` now, route its name here."""
        if ctx.name in self.actors:
            raise ValueError(f"an actor named {ctx.name!r} already runs here")
        generation = self.router.next_generation(ctx.name)
        # replace(): every other field of the context (clock, extras, ...) passes through as given.
        ctx = dataclasses.replace(ctx, generation=generation, router=self.router, notify=self._on_exit)
        actor = actor_class(ctx)
        inbox = _FifoInbox(self._fifo, actor)
        actor.actor_inbox = inbox
        actor.actor_ref.actor_inbox = inbox
        self.actors[ctx.name] = actor
        # Register before setup: what setup tells others (or itself) is queued, not lost.
        self.router.register(ctx.name, cast(Any, _FifoRef(self._fifo, actor, inbox)), generation)
        actor.on_start()
        self._raise_failures()
        return actor

    def _on_exit(self, event: Any) -> None:
        if isinstance(event, ChildExit) and event.abnormal:
            self.failures.append(event)

    def _raise_failures(self) -> None:
        if self.failures:
            first = self.failures[0]
            raise ActorFailed(f"{first.name} failed: {first.reason}")

    @property
    def pending(self) -> int:
        return len(self._fifo)

    def run_until_idle(self, limit: int = 10_000_000) -> int:
        """Handle queued messages, oldest first, until none is left; returns how many.

        `limit` bounds a run (a message loop between actors would otherwise spin forever).
        """
        fifo = self._fifo
        n = 0
        while fifo:
            if n >= limit:
                raise ActorFailed(f"more than {limit} messages in one run: a message loop?")
            actor, message = fifo.popleft()
            n += 1
            if actor.actor_stopped.is_set():
                continue
            actor.on_receive(message)
            if self.failures:
                self._raise_failures()
        self.handled += n
        return n

    def stop_all(self) -> None:
        """Stop every actor (teardown), last spawned first."""
        for name in reversed(list(self.actors)):
            actor = self.actors[name]
            if not actor.actor_stopped.is_set():
                try:
                    actor.on_stop()
                finally:
                    actor.actor_stopped.set()
                    pykka.ActorRegistry.unregister(actor.actor_ref)
        self.router.retire_all()
