"""Supervision traffic: between a supervisor, its children and itself.

These never go through the router (a supervisor must reach its children and
be reached by them even when names are between instances), so they are not
`codecs.messages.Message`s; they are still frozen msgspec Structs.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Ping(msgspec.Struct, frozen=True):
    """Heartbeat, asked by a supervisor; `StockadeActor` answers `True` itself."""


class ChildExit(msgspec.Struct, frozen=True):
    """A child (one generation of a name) ended: crash, failed start, escalation, or a normal stop."""

    name: str
    generation: int
    reason: str
    abnormal: bool
    traceparent: str | None = None  # the span that failed, when tracing is on


class ChildReady(msgspec.Struct, frozen=True):
    """A child finished `setup()`: from now on its heartbeat gets no start grace."""

    name: str
    generation: int


class Request(msgspec.Struct, frozen=True):
    """An `Envelope` that was asked (router.ask), not told: the caller waits on the reply."""

    envelope: Any


class HeartbeatTick(msgspec.Struct, frozen=True):
    """A supervisor's own timer: check pings, send new ones."""


class RestartDue(msgspec.Struct, frozen=True):
    """Backoff over (and siblings stopped) for restart batch `token`."""

    token: int


class Escalate(msgspec.Struct, frozen=True):
    """Intensity exceeded and children stopped: fail to the parent now."""

    reason: str
    traceparent: str | None = None  # the supervisor's span that decided to escalate
