"""The `Supervisor` actor: OTP supervision on pykka.

Starts its children in order and registers them with the router. When a
child fails (reported by the base actor, or found hung by a missed
heartbeat) it applies restart type, strategy and intensity: the children to
restart are marked down in the router (their messages wait in the hold
buffer), siblings are stopped in reverse start order, and after an
exponential backoff with jitter they are started again in start order. All
waiting (stops, backoff) happens in short-lived worker threads, so the
supervisor's own mailbox keeps answering its parent's heartbeat.

A hung child is fenced in the router (its token is revoked: its later
sends, storage writes and REST calls are refused; its queued messages go to
its successor) and stopped without waiting: its thread may never come back.
A child inside declared bounded work (a REST call within its timeouts,
`supervisors.fence.busy`) is busy, not hung: its heartbeat silence counts
from the end of that work (`health.silent_for`).

Intensity exceeded: stop every child (reverse
order, each within its shutdown timeout), then fail to the parent, which
treats this supervisor like any failed child; at the root the tree's
`on_exhausted` hook fires (full liquidation). A `critical` child's failure
fires the hook too, after its restart is scheduled.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import pykka

from stockade.codecs.messages import Alert, AlertLevel
from stockade.supervisors import hooks
from stockade.supervisors.base import StockadeActor, handles
from stockade.supervisors.context import ActorContext
from stockade.supervisors.events import ChildExit, ChildReady, Escalate, HeartbeatTick, Ping, RestartDue
from stockade.supervisors.fence import FenceToken
from stockade.supervisors.health import silent_for
from stockade.supervisors.intensity import RestartIntensity, backoff_delay, restart_targets, should_restart
from stockade.supervisors.router import Fenced
from stockade.supervisors.spec import ChildSpec, RestartPolicy, RestartType

logger = logging.getLogger(__name__)

RUNNING = "running"  # started; its exits and heartbeats count
WAITING = "waiting"  # stopped or being stopped, restart batch `token` pending
DEAD = "dead"  # ended for good (temporary, or transient that exited normally)
STOPPING = "stopping"  # being stopped with the supervisor


class _Child:
    __slots__ = ("spec", "state", "ref", "generation", "token", "ping", "ping_sent", "ready", "dead_since", "fence")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.state = WAITING
        self.ref: pykka.ActorRef[Any] | None = None
        self.generation = 0
        self.token = 0
        self.ping: pykka.Future[Any] | None = None
        self.ping_sent = 0.0
        self.ready = False  # setup() done: no more start grace
        self.dead_since: float | None = None  # heartbeat found it dead, report pending
        self.fence: FenceToken | None = None  # the running instance's token: its busy deadline

    @property
    def name(self) -> str:
        return self.spec.name


def stop_child(router: Any, name: str, generation: int, ref: pykka.ActorRef[Any] | None, timeout: float) -> bool:
    """Stop one child gracefully within `timeout`; past it, fence it (and its subtree) and move on."""
    if ref is None:
        return True
    try:
        ref.stop(block=True, timeout=timeout)
        return True
    except pykka.Timeout:
        logger.error("%s (gen %d) did not stop within %.3fs: fenced and abandoned", name, generation, timeout)
        for victim in router.fence(name, generation):
            _stop_nowait(victim)
        return False


def _stop_nowait(ref: pykka.ActorRef[Any]) -> None:
    try:
        ref.stop(block=False)
    except Exception:  # already gone
        pass


class Supervisor(StockadeActor):
    """Supervises `children` under `policy`: `Supervisor.start(ctx, policy, children)`."""

    def __init__(self, ctx: ActorContext, policy: RestartPolicy, children: Sequence[ChildSpec]) -> None:
        super().__init__(ctx)
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"supervisor {ctx.name!r}: duplicate child names in {names!r}")
        self.policy = policy
        self._children = [_Child(spec) for spec in children]
        self._by_name = {child.name: child for child in self._children}
        self._intensity = RestartIntensity(policy.max_restarts, policy.period_s)
        self._rng = random.Random(policy.jitter_seed)
        self._tokens = itertools.count(1)
        self._exhausting = False
        self._owner = (ctx.name, ctx.generation)

    # ---- life -------------------------------------------------------------------

    def setup(self) -> None:
        policy = self.policy
        self.ctx.health.supervisor_started(
            self.name, self.generation, policy.heartbeat_interval_s, policy.heartbeat_timeout_s
        )
        for child in self._children:
            self._start_child(child, restart=False)
        self.every(policy.heartbeat_interval_s, "heartbeat", HeartbeatTick())

    def teardown(self) -> None:
        self._exhausting = True
        self.ctx.health.supervisor_gone(self.name, self.generation)
        for child in reversed(self._children):
            if child.state == RUNNING:
                self.router.mark_down(child.name, child.generation)
                stop_child(self.router, child.name, child.generation, child.ref, child.spec.shutdown_timeout_s)
            self.ctx.health.forget(child.name)
            child.state = STOPPING

    # ---- starting -----------------------------------------------------------------

    def _notify(self, event: Any) -> None:
        """Given to children as their `ctx.notify`; called from their threads."""
        try:
            self.actor_ref.tell(event)
        except pykka.ActorDeadError:
            # Normal when the supervisor itself is stopping its children.
            level = logging.WARNING if getattr(event, "abnormal", False) else logging.DEBUG
            logger.log(level, "%s: exit report %r arrived after its supervisor stopped", self.name, event)

    def _start_child(self, child: _Child, restart: bool) -> None:
        name = child.name
        try:
            generation = self.router.next_generation(name, owner=self._owner)
        except Fenced:
            return  # this supervisor has been replaced: not ours to start any more
        child.generation, child.state, child.ref = generation, RUNNING, None
        child.ping, child.ready, child.dead_since = None, False, None
        child.fence = self.router.token(name, generation)
        self.ctx.health.forget(name)
        ctx = self.ctx.for_child(name, generation, self._notify, child.fence)
        try:
            ref = child.spec.start(ctx)
        except BaseException as exc:  # a failed start is a child failure, not ours
            logger.error("%s: starting %s failed: %r", self.name, name, exc, exc_info=exc)
            self.actor_ref.tell(ChildExit(name, generation, f"start: {exc!r}", True))
            return
        child.ref = ref
        try:
            registered = self.router.register(
                name, ref, generation, parent=self.name, restart=restart, owner=self._owner
            )
        except Fenced:
            registered = False
        if not registered:
            _stop_nowait(ref)
            return
        logger.info("%s: started %s (gen %d)", self.name, name, generation)

    # ---- failures -----------------------------------------------------------------

    @handles(ChildExit)
    def _on_exit(self, event: ChildExit) -> None:
        child = self._by_name.get(event.name)
        if child is None or child.generation != event.generation or child.state != RUNNING or self._exhausting:
            return  # stale: an instance we replaced or are stopping ourselves
        with hooks.tracing.supervision_span(self.name, "ChildExit", event.traceparent, _child_attrs(child)):
            self._child_failed(child, event.reason, event.abnormal)

    @handles(ChildReady)
    def _on_ready(self, event: ChildReady) -> None:
        child = self._by_name.get(event.name)
        if child is not None and child.generation == event.generation:
            child.ready = True

    def _child_failed(self, child: _Child, reason: str, abnormal: bool, hung: bool = False) -> None:
        name, policy = child.name, self.policy
        if hung:
            for victim in self.router.fence(name, child.generation):
                _stop_nowait(victim)
        else:
            self.router.mark_down(name, child.generation)
        self.ctx.health.forget(name)
        child.ping = None
        (logger.warning if abnormal else logger.info)(
            "%s: %s (gen %d) exited: %s", self.name, name, child.generation, reason
        )
        hooks.tracing.add_event(
            "stockade.child.exit",
            {
                "stockade.child": name,
                "stockade.generation": child.generation,
                "stockade.reason": reason,
                "stockade.abnormal": abnormal,
                "stockade.hung": hung,
            },
        )

        if not should_restart(child.spec.restart, abnormal):
            child.state, child.ref = DEAD, None
            self.router.retire(name, child.generation)
            return
        within, attempt = self._intensity.record(name, time.monotonic())
        if not within:
            child.state = STOPPING  # dead or fenced already: nothing to stop
            self._escalate(
                f"{self.name}: more than {policy.max_restarts} restarts in {policy.period_s}s; last {name}: {reason}"
            )
            if child.spec.critical:
                self.ctx.on_exhausted(f"critical child {name} failed: {reason}")
            return

        order = [c.name for c in self._children if c.state != DEAD]
        targets = [self._by_name[n] for n in restart_targets(policy.strategy, order, name)]
        token = next(self._tokens)
        to_stop = []
        for sibling in reversed(targets):
            if sibling is not child and sibling.state == RUNNING:
                self.router.mark_down(sibling.name, sibling.generation)
                self.ctx.health.forget(sibling.name)
                sibling.ping = None
                to_stop.append((sibling.name, sibling.generation, sibling.ref, sibling.spec.shutdown_timeout_s))
            sibling.state, sibling.token = WAITING, token
        delay = backoff_delay(attempt, policy.backoff_initial_s, policy.backoff_max_s, policy.jitter, self._rng)
        self._spawn(self._stop_then_restart, to_stop, delay, token)
        restarted = [t.name for t in targets]
        hooks.tracing.add_event(
            "stockade.restart",
            {
                "stockade.child": name,
                "stockade.attempt": attempt,
                "stockade.backoff_s": round(delay, 6),
                "stockade.strategy": policy.strategy,
                "stockade.restarted": restarted,
            },
        )
        self._alert(
            "WARNING",
            f"restart:{name}",
            f"{name} restarted by {self.name} (restart {attempt} in {policy.period_s:g}s"
            f"{', with ' + ', '.join(n for n in restarted if n != name) if len(restarted) > 1 else ''}): {reason}",
        )
        if child.spec.critical:
            self.ctx.on_exhausted(f"critical child {name} failed: {reason}")

    def _spawn(self, target: Any, *args: Any) -> None:
        threading.Thread(target=target, args=args, name=f"{self.name}-worker", daemon=True).start()

    def _stop_then_restart(self, to_stop: list[tuple[str, int, Any, float]], delay: float, token: int) -> None:
        """Worker thread: stop siblings (reverse order), wait out the backoff, then ask for the restart."""
        deadline = time.monotonic() + delay
        for name, generation, ref, timeout in to_stop:
            stop_child(self.router, name, generation, ref, timeout)
        remaining = deadline - time.monotonic()
        if remaining > 0 and self.actor_stopped.wait(remaining):
            return
        try:
            self.actor_ref.tell(RestartDue(token))
        except pykka.ActorDeadError:
            pass

    @handles(RestartDue)
    def _on_restart_due(self, event: RestartDue) -> None:
        if self._exhausting:
            return
        for child in self._children:  # start order
            if child.state == WAITING and child.token == event.token:
                self._start_child(child, restart=True)

    def _alert(self, level: AlertLevel, key: str, text: str) -> None:
        """An alert to `policy.alerts_to`, when this tree has it (a restart of the alerter itself waits in the router)."""
        to = self.policy.alerts_to
        if to is not None and to in self.router.names():
            self.tell(to, Alert(level, key, text, self.name, time.time_ns()))

    def _escalate(self, reason: str) -> None:
        logger.error("%s: restart intensity exceeded, stopping its children: %s", self.name, reason)
        hooks.tracing.add_event("stockade.escalation", {"stockade.supervisor": self.name, "stockade.reason": reason})
        self._alert(
            "CRITICAL",
            f"escalation:{self.name}",
            f"{self.name} gave up (restart intensity exceeded) and fails to its parent: {reason}",
        )
        escalation_tp = hooks.tracing.current_traceparent()
        self._exhausting = True
        self.ctx.health.exhausted(self.name, reason)
        to_stop = []
        for child in reversed(self._children):
            if child.state == RUNNING:
                self.router.mark_down(child.name, child.generation)
                to_stop.append((child.name, child.generation, child.ref, child.spec.shutdown_timeout_s))
            self.ctx.health.forget(child.name)
            child.state = STOPPING
        self._spawn(self._stop_then_escalate, to_stop, reason, escalation_tp)

    def _stop_then_escalate(
        self, to_stop: list[tuple[str, int, Any, float]], reason: str, traceparent: str | None
    ) -> None:
        for name, generation, ref, timeout in to_stop:
            stop_child(self.router, name, generation, ref, timeout)
        try:
            self.actor_ref.tell(Escalate(reason, traceparent))
        except pykka.ActorDeadError:
            pass

    @handles(Escalate)
    def _on_escalate(self, event: Escalate) -> None:
        # Children are stopped: fail to the parent, then end. The parent's
        # span for it is a child of the span that decided to escalate.
        self._report(event.reason, abnormal=True, traceparent=event.traceparent)
        self.stop()

    # ---- heartbeats ------------------------------------------------------------------

    @handles(HeartbeatTick)
    def _on_heartbeat(self, _tick: HeartbeatTick) -> None:
        if self._exhausting:
            return
        health, policy = self.ctx.health, self.policy
        health.supervisor_round(self.name, self.generation)
        now = time.monotonic()
        for child in self._children:
            if child.state != RUNNING or child.ref is None:
                continue
            limit = (
                policy.heartbeat_timeout_s
                if child.ready
                else max(policy.heartbeat_timeout_s, child.spec.start_timeout_s)
            )
            if child.ping is not None:
                try:
                    child.ping.get(timeout=0)
                except pykka.Timeout:
                    # Busy in declared bounded work (a REST call within its
                    # own timeouts) is not a hang; silence outside it is.
                    busy_until = child.fence.busy_until if child.fence is not None else 0.0
                    silent = silent_for(now, child.ping_sent, busy_until)
                    if silent > limit:
                        waited = now - child.ping_sent
                        last = child.fence.busy_what if child.fence is not None else ""
                        reason = (
                            f"missed heartbeat (no answer in {waited:.3f}s, silent {silent:.3f}s outside "
                            f"bounded work{'; last: ' + last if last else ''})"
                        )
                        with hooks.tracing.supervision_span(self.name, "MissedHeartbeat", None, _child_attrs(child)):
                            self._child_failed(child, reason, abnormal=True, hung=True)
                    continue
                except Exception as exc:
                    # Dead. Its own report follows its teardown (a supervisor
                    # child stops its subtree first): wait for it, so the old
                    # subtree is gone before a new one starts; act alone only
                    # if the report never comes.
                    if child.dead_since is None:
                        child.dead_since = now
                    elif now - child.dead_since > child.spec.shutdown_timeout_s:
                        with hooks.tracing.supervision_span(self.name, "DiedUnreported", None, _child_attrs(child)):
                            self._child_failed(child, f"died unreported: {exc!r}", abnormal=True)
                    continue
                child.ready = True
                health.ping_answered(child.name)
                limit = policy.heartbeat_timeout_s
            child.ping = child.ref.ask(Ping(), block=False)
            child.ping_sent = now
            health.ping_sent(child.name, limit + policy.heartbeat_interval_s, child.fence)


def _child_attrs(child: _Child) -> dict[str, Any]:
    return {"stockade.child": child.name, "stockade.generation": child.generation}


def _start_supervisor(ctx: ActorContext, policy: RestartPolicy, children: tuple[ChildSpec, ...]) -> pykka.ActorRef[Any]:
    return Supervisor.start(ctx, policy, children)


def supervisor_spec(
    name: str,
    policy: RestartPolicy,
    children: Sequence[ChildSpec],
    restart: RestartType = "permanent",
    shutdown_timeout_s: float | None = None,
    critical: bool = False,
) -> ChildSpec:
    """A child spec for a nested supervisor of `children` under `policy`.

    Its shutdown timeout defaults to the sum of its children's plus a second,
    enough to stop them one by one.
    """
    children = tuple(children)
    if shutdown_timeout_s is None:
        shutdown_timeout_s = sum(c.shutdown_timeout_s for c in children) + 1.0
    return ChildSpec(
        name=name,
        start=functools.partial(_start_supervisor, policy=policy, children=children),
        restart=restart,
        shutdown_timeout_s=shutdown_timeout_s,
        is_supervisor=True,
        critical=critical,
    )
