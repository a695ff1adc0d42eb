"""Hooks: what the application plugs into the generic runtime.

The runtime (actor base, router, supervisor) traces messages and supervision,
but knows nothing of OpenTelemetry: the application's tracing module installs
itself here (`ops/telemetry.py` calls `install_tracing` when imported). Until
then tracing is off, exactly as when the application's tracer is not set up:
no traceparent in envelopes, no spans, no events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Tracing(Protocol):
    """What the runtime asks of a tracer (`ops/telemetry.py` is one, as a module)."""

    @property
    def ACTIVE(self) -> Any:  # the telemetry module's global: None while tracing is off
        ...

    def current_traceparent(self) -> str | None: ...

    def traceparent_of(self, span: Any) -> str | None: ...

    def supervision_span(
        self, supervisor: str, what: str, traceparent: str | None, attributes: Mapping[str, Any]
    ) -> AbstractContextManager[Any]: ...

    def add_event(self, name: str, attributes: Mapping[str, Any]) -> None: ...


class TracingOff:
    """No tracer installed: every call is a no-op."""

    ACTIVE = None

    def current_traceparent(self) -> str | None:
        return None

    def traceparent_of(self, span: Any) -> str | None:
        return None

    def supervision_span(
        self, supervisor: str, what: str, traceparent: str | None, attributes: Mapping[str, Any]
    ) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def add_event(self, name: str, attributes: Mapping[str, Any]) -> None:
        return None


tracing: Tracing = TracingOff()


def install_tracing(impl: Tracing) -> None:
    """The application's tracer; read at each use, so installing it late is fine."""
    global tracing
    tracing = impl
