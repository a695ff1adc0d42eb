"""What every supervised actor is given: `ActorContext`."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from stockade.supervisors.clock import WALL_CLOCK, Clock
from stockade.supervisors.faults import FaultInjector
from stockade.supervisors.fence import FenceToken
from stockade.supervisors.health import Health
from stockade.supervisors.router import Router

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ActorContext:
    """An actor's identity and the shared services it needs.

    `notify` reports this instance's exit to its supervisor (the base actor
    does that; concrete actors never call it). `fence` is this instance's
    right to act (see `supervisors.fence`). `extras` carries what concrete
    actors need (storage, settings, broker clients, ...), shared by the whole
    tree; a child's start callable can close over anything more specific.
    """

    name: str
    generation: int
    router: Router
    notify: Callable[[Any], None]
    faults: FaultInjector = dataclasses.field(default_factory=FaultInjector)
    health: Health = dataclasses.field(default_factory=Health)
    on_exhausted: Callable[[str], None] = dataclasses.field(default=lambda reason: None)
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    parent: str | None = None
    # This instance's fence token (made by its supervisor, which reads its
    # busy deadline); None: the actor asks the router for one.
    fence: FenceToken | None = None
    # Time, waits, timers, background work and ids (wall clock live, simulated in a backtest).
    clock: Clock = WALL_CLOCK

    def for_child(
        self, name: str, generation: int, notify: Callable[[Any], None], fence: FenceToken | None = None
    ) -> ActorContext:
        """The context of a child of this (supervisor's) context."""
        return dataclasses.replace(self, name=name, generation=generation, notify=notify, parent=self.name, fence=fence)

    def extra(self, key: str) -> Any:
        """`extras[key]`, with an error that says which actor wanted it."""
        try:
            return self.extras[key]
        except KeyError:
            raise KeyError(f"actor {self.name!r} needs extras[{key!r}], which the tree was not given") from None


class ExhaustHook:
    """Runs the tree's on_exhausted callback in a fresh thread, so it needs no actor alive.

    Keeps every reason it was called with (for status and tests).
    """

    def __init__(self, callback: Callable[[str], None] | None = None) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self.reasons: list[str] = []
        self.threads: list[threading.Thread] = []

    def __call__(self, reason: str) -> None:
        logger.critical("supervision exhausted: %s", reason)
        with self._lock:
            self.reasons.append(reason)
        if self._callback is None:
            return
        thread = threading.Thread(target=self._run, args=(reason,), name="on-exhausted", daemon=True)
        with self._lock:
            self.threads.append(thread)
        thread.start()

    def _run(self, reason: str) -> None:
        try:
            assert self._callback is not None
            self._callback(reason)
        except Exception:
            logger.exception("on_exhausted callback failed")
