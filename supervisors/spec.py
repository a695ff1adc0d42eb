"""What a supervisor supervises (`ChildSpec`) and how (`RestartPolicy`).

Plain frozen msgspec Structs: built by the lead from settings, validated at
construction (msgspec does not type-check `__init__`, so `__post_init__`
checks what a bad settings value could break).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from stockade.config.settings import SupervisionSettings

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]

STRATEGIES: tuple[str, ...] = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_TYPES: tuple[str, ...] = ("permanent", "transient", "temporary")


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """One supervisor's strategy, restart intensity, backoff and heartbeat.

    At most `max_restarts` restarts in any `period_s` window; one more and the
    supervisor stops its children and fails to its parent. Between restarts of
    the same child the delay grows from `backoff_initial_s` (doubling, capped
    at `backoff_max_s`), shortened by up to `jitter` (a fraction) at random so
    that siblings do not restart in lock-step.
    """

    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    period_s: float = 5.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    jitter: float = 0.2
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 3.0
    # Seed for the jitter RNG; None draws from the OS (tests pass a seed).
    jitter_seed: int | None = None
    # The actor restarts and escalations are reported to as `Alert`s (the
    # application's alerter); None: none. The runtime knows no actor by name.
    alerts_to: str | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts!r}")
        if not self.period_s > 0:
            raise ValueError(f"period_s must be > 0, got {self.period_s!r}")
        if self.backoff_initial_s < 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"need 0 <= backoff_initial_s <= backoff_max_s, got {self.backoff_initial_s!r}, {self.backoff_max_s!r}"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter!r}")
        if not self.heartbeat_interval_s > 0 or not self.heartbeat_timeout_s > 0:
            raise ValueError(
                f"heartbeat interval and timeout must be > 0, got {self.heartbeat_interval_s!r}, {self.heartbeat_timeout_s!r}"
            )

    @classmethod
    def from_settings(
        cls, section: SupervisionSettings, strategy: Strategy, alerts_to: str | None = None
    ) -> RestartPolicy:
        """The policy `[supervision]` sets: every field of the same name as a key there."""
        given = {f: getattr(section, f) for f in cls.__struct_fields__ if f in section.__struct_fields__}
        return cls(strategy=strategy, alerts_to=alerts_to, **given)


class ChildSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One child of a supervisor.

    `start(ctx)` starts the child and returns its pykka `ActorRef`; `ctx` is
    the child's `ActorContext` (name, generation, router, ...). For an actor
    class that is simply `MyActor.start`; for a nested supervisor use
    `stockade.supervisors.supervisor.supervisor_spec`.
    """

    name: str
    start: Callable[[Any], Any]
    restart: RestartType = "permanent"
    # How long a graceful stop may take before the child is abandoned as hung.
    shutdown_timeout_s: float = 5.0
    # A supervisor child gets its own subtree fenced and stopped with it.
    is_supervisor: bool = False
    # Failure of a critical child (EmergencyStop) calls the tree's
    # on_exhausted hook (full liquidation) after its restart is scheduled.
    critical: bool = False
    # Grace for the first heartbeat after a (re)start, so a slow `setup()` is
    # not mistaken for a hang.
    start_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("child name must not be empty")
        if not callable(self.start):
            raise ValueError(f"child {self.name!r}: start must be callable, got {self.start!r}")
        if self.restart not in RESTART_TYPES:
            raise ValueError(f"child {self.name!r}: restart must be one of {RESTART_TYPES}, got {self.restart!r}")
        if not self.shutdown_timeout_s > 0 or not self.start_timeout_s > 0:
            raise ValueError(f"child {self.name!r}: timeouts must be > 0")
