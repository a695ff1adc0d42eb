"""OpenTelemetry for stockade: one span per message handled, parented by the
envelope's W3C traceparent, so one quote that leads to an order is one trace.

`setup()` installs the SDK provider and the OTLP exporter; without it the
OpenTelemetry API is a no-op and these helpers cost almost nothing.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "stockade"


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, to put in an outgoing envelope."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def message_span(actor: str, msg_type: str, traceparent: str | None) -> Iterator[trace.Span]:
    """A span for one message handled by `actor`, child of the sender's span."""
    parent_ctx = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else otel_context.Context()
    tracer = trace.get_tracer(_TRACER_NAME)
    with tracer.start_as_current_span(
        f"{actor} {msg_type}",
        context=parent_ctx,
        attributes={"stockade.actor": actor, "stockade.message": msg_type},
    ) as span:
        yield span
