"""What a log line knows about the message being handled: the actor, the
symbol and `client_order_id` of the message, and the trace and span ids of
the handler's span (OpenTelemetry's log-correlation names, `trace_id` and
`span_id`).

The actor base marks each handled message on its slot
(`supervisors/handling.py`, re-exported here). The fields
are read from the message and the span only when a record is written
(`ContextFilter`, on the log handlers), so a handler that logs nothing pays
nothing more.

With tracing off there is no span and no trace id: the router puts no
traceparent in an envelope then, and inventing ids that reach no trace would
send an operator looking for traces that do not exist. Log lines still carry
the actor, symbol and client_order_id.
"""

from __future__ import annotations

import logging
from typing import Any

from stockade.ops import telemetry
from stockade.supervisors.handling import Handling, current, enter, leave

__all__ = ["CONTEXT_FIELDS", "ContextFilter", "Handling", "enter", "leave", "stamp"]

# Fields a record may carry, in the order the formats show them.
CONTEXT_FIELDS = ("trace_id", "span_id", "actor", "symbol", "client_order_id")


def _client_order_id(msg: Any) -> str | None:
    coid = getattr(msg, "client_order_id", None)
    if isinstance(coid, str) and coid:
        return coid
    intent_id = getattr(msg, "intent_id", None)
    if isinstance(intent_id, str) and intent_id:
        # An OrderIntent: its client_order_id is derived from the intent id (as on its span).
        from stockade.broker.orders import client_order_id

        return client_order_id(intent_id)
    return None


def stamp(record: logging.LogRecord) -> None:
    """Set the context fields on `record` (a field given by the call site's `extra` wins)."""
    fields = record.__dict__
    span = None
    slot = current()
    if slot is not None:
        fields.setdefault("actor", slot.actor)
        msg = slot.msg
        symbol = getattr(msg, "symbol", None)
        if isinstance(symbol, str) and symbol and "symbol" not in fields:
            fields["symbol"] = symbol
        if "client_order_id" not in fields:
            coid = _client_order_id(msg)
            if coid:
                fields["client_order_id"] = coid
        span = slot.span
    if span is None and telemetry.ACTIVE is not None:
        from opentelemetry import trace

        span = trace.get_current_span()  # a control command's span, or a handler's while it runs
    if span is not None and "trace_id" not in fields:
        sc = span.get_span_context()
        if sc.is_valid:
            fields["trace_id"] = f"{sc.trace_id:032x}"
            fields["span_id"] = f"{sc.span_id:016x}"


class ContextFilter(logging.Filter):
    """Stamps each record a handler writes with the context fields (see `stamp`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        stamp(record)
        return True
