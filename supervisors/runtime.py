"""`start_tree`: run a root supervisor and get a handle on the whole tree.

Generic on purpose: the concrete tree (which actors, which policies) is the
lead's `actors/tree.py`, built on this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pykka

from stockade.supervisors.context import ActorContext, ExhaustHook
from stockade.supervisors.events import ChildExit
from stockade.supervisors.faults import FaultInjector
from stockade.supervisors.health import Health
from stockade.supervisors.router import ActorStatus, Router
from stockade.supervisors.spec import ChildSpec, RestartPolicy
from stockade.supervisors.supervisor import Supervisor

logger = logging.getLogger(__name__)


class Tree:
    """Handle on a running supervision tree."""

    def __init__(
        self, root_name: str, router: Router, faults: FaultInjector, health: Health, hook: ExhaustHook
    ) -> None:
        self.root_name = root_name
        self.router = router
        self.faults = faults
        self.health = health
        self._hook = hook
        self._stopping = False
        self.root_ref: pykka.ActorRef[Any] | None = None
        self._closers: list[Callable[[], Any]] = []

    def close_with(self, close: Callable[[], Any]) -> None:
        """Run `close()` once the tree has stopped (e.g. the actor pool its actors ran on)."""
        self._closers.append(close)

    def _root_exit(self, event: Any) -> None:
        """The root's `notify`: a root that fails or exhausts means full liquidation."""
        if not isinstance(event, ChildExit) or not event.abnormal or self._stopping:
            return
        self.health.exhausted(self.root_name, event.reason)
        # Nobody will deliver to these names again: drop and count, do not hold.
        self.router.retire_all()
        self._hook(f"root supervisor {self.root_name} failed: {event.reason}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every actor, children before parents, in reverse start order.

        Returns False if the root did not finish within `timeout` (stuck
        threads are daemons and are abandoned). Every name is then retired.
        """
        self._stopping = True
        ok = True
        if self.root_ref is not None:
            try:
                self.root_ref.stop(block=True, timeout=timeout)
            except pykka.Timeout:
                logger.error("supervision tree did not stop within %.1fs", timeout)
                ok = False
        self.router.retire_all()
        self.faults.release()  # wake any injected hang so its thread can end
        for close in self._closers:
            try:
                close()
            except Exception:
                logger.exception("closing %r after the tree stopped failed", close)
        self._closers.clear()
        return ok

    def healthy(self) -> bool:
        """For the systemd watchdog: heartbeats answered, no supervisor exhausted."""
        return self.health.healthy()

    def health_report(self) -> dict[str, Any]:
        return self.health.report()

    def snapshot(self) -> list[ActorStatus]:
        """Every name: state, alive, generation, restarts, mailbox depth."""
        return self.router.snapshot()

    @property
    def exhausted_reasons(self) -> list[str]:
        """Every reason on_exhausted was called with so far."""
        return list(self._hook.reasons)


def start_tree(
    policy: RestartPolicy,
    children: Sequence[ChildSpec],
    *,
    name: str = "root",
    on_exhausted: Callable[[str], None] | None = None,
    faults: FaultInjector | None = None,
    router: Router | None = None,
    health: Health | None = None,
    extras: Mapping[str, Any] | None = None,
) -> Tree:
    """Start a root supervisor of `children` under `policy` and return its handle.

    `on_exhausted(reason)` runs in a fresh thread when the root exhausts its
    restart intensity or fails, or a critical child fails. `extras` reaches
    every actor as `ctx.extras`.
    """
    router = router or Router()
    faults = faults or FaultInjector()
    health = health or Health()
    hook = ExhaustHook(on_exhausted)
    tree = Tree(name, router, faults, health, hook)
    generation = router.next_generation(name)
    ctx = ActorContext(
        name=name,
        generation=generation,
        router=router,
        notify=tree._root_exit,
        faults=faults,
        health=health,
        on_exhausted=hook,
        extras=dict(extras or {}),
    )
    ref = Supervisor.start(ctx, policy, tuple(children))
    tree.root_ref = ref
    router.register(name, ref, generation)
    return tree
