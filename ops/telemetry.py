"""OpenTelemetry for stockade: one span per message handled, parented by the
envelope's W3C traceparent, so quote -> votes -> proposal -> risk decision ->
order -> fill is one trace in Jaeger.

`setup()` installs the SDK provider, the sampler and an OTLP exporter (gRPC or
HTTP/protobuf) and sets `ACTIVE`. While `ACTIVE` is None (tracing off, the
default) the actor base handles messages without touching OpenTelemetry at
all: no provider, no span objects, no context switches; the router's
`current_traceparent()` returns None at once.

Configuration: on/off by the standard variables first (see `export_decision`),
everything else by the `[telemetry]` settings first, then the variables:

| what      | setting         | environment (first set wins)                                      | default |
|-----------|-----------------|-------------------------------------------------------------------|---------|
| on/off    | `enabled`       | over the setting: `OTEL_SDK_DISABLED=true` off; `OTEL_TRACES_EXPORTER` `otlp` on, `none` off | off |
| protocol  | `protocol`      | `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL` | `http/protobuf` |
| endpoint  | `otlp_endpoint` | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT` | localhost:4318 (http) / :4317 (grpc) |
| service   | `service_name`  | `OTEL_SERVICE_NAME`                                               | `stockade` |
| headers   | (none: secrets) | `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, `OTEL_EXPORTER_OTLP_HEADERS`   | none    |

A setting left empty defers to the environment. Headers (collector
credentials) are read from the environment only and never logged. On/off
is the exception, because the variables are how OpenTelemetry's and
Jaeger's docs tell an operator to turn export on for one deployment (an
environment file) without editing the shared settings file, whose `enabled`
is a plain default.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from stockade.supervisors import hooks

if TYPE_CHECKING:
    from stockade.config.settings import TelemetrySettings

log = logging.getLogger(__name__)

_TRACER_NAME = "stockade"

MESSAGE_ATTR = "stockade.message"
DEFAULT_FIREHOSE = frozenset({"Quote", "Trade", "Bar", "Vote", "Votes", "FlushQuotes"})
DEFAULT_ENDPOINTS = {"http/protobuf": "http://localhost:4318/v1/traces", "grpc": "http://localhost:4317"}
PROTOCOLS = ("grpc", "http/protobuf")

# Message fields that become span attributes when a message has them.
_FIELD_ATTRS = (
    ("symbol", "stockade.symbol"),
    ("client_order_id", "stockade.client_order_id"),
    ("proposal_id", "stockade.proposal_id"),
    ("intent_id", "stockade.intent_id"),
    ("side", "stockade.side"),
    ("model", "stockade.model"),
    ("event", "stockade.order_event"),
    ("what", "stockade.tick"),
)
_fields_by_type: dict[type, tuple[tuple[str, str], ...]] = {}


# ---- the active tracer (None: tracing off) ------------------------------------------

ACTIVE: MessageTracer | None = None


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, to put in an outgoing envelope."""
    if ACTIVE is None:
        return None
    return traceparent_of(trace.get_current_span())


def traceparent_of(span: Any) -> str | None:
    """The traceparent of `span` (None for no span or an invalid one)."""
    if span is None:
        return None
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


# message_attributes' arguments: (actor, msg, sender, message_id).
MessageSource = tuple[str, Any, str, str]


def message_attributes(actor: str, msg: Any, sender: str = "", message_id: str = "") -> dict[str, Any]:
    """Span attributes for `actor` handling `msg`: OpenTelemetry messaging
    conventions where they fit, `stockade.*` for the rest (symbol,
    client_order_id ... when the message has them)."""
    kind = type(msg)
    attrs: dict[str, Any] = {
        "messaging.system": "pykka",
        "messaging.operation.type": "process",
        "messaging.destination.name": actor,
        "stockade.actor": actor,
        MESSAGE_ATTR: kind.__name__,
    }
    if message_id:
        attrs["messaging.message.id"] = message_id
    if sender:
        attrs["stockade.sender"] = sender
    fields = _fields_by_type.get(kind)
    if fields is None:
        names = set(getattr(kind, "__struct_fields__", ()))
        fields = _fields_by_type[kind] = tuple(pair for pair in _FIELD_ATTRS if pair[0] in names)
    for field, key in fields:
        value = getattr(msg, field)
        if value:
            attrs[key] = value
    if "stockade.client_order_id" not in attrs and "stockade.intent_id" in attrs:
        # An OrderIntent: its client_order_id is derived from the intent id.
        from stockade.broker.orders import client_order_id

        attrs["stockade.client_order_id"] = client_order_id(attrs["stockade.intent_id"])
    return attrs


@contextlib.contextmanager
def message_span(actor: str, msg: Any, traceparent: str | None) -> Iterator[trace.Span]:
    """A span for `actor` handling `msg` (a no-op span when tracing is off)."""
    tracer = ACTIVE
    if tracer is None:
        yield trace.INVALID_SPAN
        return
    with tracer.message_span(actor, msg, traceparent) as span:
        yield span


@contextlib.contextmanager
def root_span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[trace.Span]:
    """A new trace (e.g. one control command); always sampled by SignalPathSampler."""
    if ACTIVE is None:
        yield trace.INVALID_SPAN
        return
    with ACTIVE.tracer.start_as_current_span(
        name, context=otel_context.Context(), kind=SpanKind.SERVER, attributes=dict(attributes or {})
    ) as span:
        yield span


@contextlib.contextmanager
def supervision_span(
    supervisor: str, what: str, traceparent: str | None, attributes: Mapping[str, Any]
) -> Iterator[trace.Span]:
    """A supervisor's span for handling a child's failure, child of the span
    that crashed (when there is one), so the crash, the restart and the
    escalation show in the trace of the message that caused them. Always kept:
    it is not a firehose message, so it also promotes an unsampled trace."""
    if ACTIVE is None:
        yield trace.INVALID_SPAN
        return
    attrs = {"stockade.actor": supervisor, MESSAGE_ATTR: what, **attributes}
    with ACTIVE.span(f"{supervisor} {what}", traceparent, attrs, SpanKind.INTERNAL) as span:
        yield span


def add_event(name: str, attributes: Mapping[str, Any]) -> None:
    """A span event on the active span (restarts, escalations); nothing when
    tracing is off. String values are redacted (they may quote an exception)."""
    if ACTIVE is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, {k: _redacted(v) if isinstance(v, str) else v for k, v in attributes.items()})


# ---- sampling -------------------------------------------------------------------------


class SignalPathSampler(Sampler):
    """Sample the quote firehose at a ratio; keep every trace that reaches the
    signal path (the risk guard, orders, kills, alerts) whole.

    Head sampling cannot know, at the quote, whether the quote will lead to a
    proposal. So the decision is made in two steps:

    - A root span handling a firehose message (quotes, trades, bars, votes,
      flushes) is sampled by trace id at `ratio`: deterministic, so every
      process agrees. A sampled trace is kept whole (children follow a
      sampled parent).
    - A firehose span under an unsampled parent (or an unsampled firehose
      root) is dropped: no SDK span object is made, but `MessageTracer` keeps
      a few-field record of it in a bounded buffer keyed by trace id
      (`PendingTraces`).
    - Any other message span (a proposal reaching the risk guard, an order, a
      fill, a kill, an alert, a supervisor's failure handling) is always
      sampled, even under an unsampled parent, with the same trace id. When
      it starts, `MessageTracer` *promotes* the trace: the buffered records of
      the quote, the votes and the flush that led to it are exported as
      ordinary spans, and records of that trace that end later are exported
      as they end. So the trace reads quote -> votes -> proposal -> risk
      decision -> order -> fill in Jaeger, whatever the ratio.
    - Quote traces that never reach the signal path are never exported: their
      records are evicted, oldest first, when the buffer is full.
    - Spans that are not message spans (library instrumentation) follow
      their parent, and are sampled as roots.
    """

    def __init__(self, ratio: float, firehose: Iterable[str] = DEFAULT_FIREHOSE) -> None:
        self._ratio = ratio
        self._bound = TraceIdRatioBased.get_bound_for_rate(ratio)
        self.firehose = frozenset(firehose)

    def decide(self, parent: SpanContext | None, trace_id: int, msg: str | None) -> Decision:
        """The decision for a span of message type `msg` (None: not a message span) under `parent`."""
        if parent is not None and parent.is_valid:
            if parent.trace_flags.sampled:
                return Decision.RECORD_AND_SAMPLE
            if msg is None or msg in self.firehose:
                return Decision.DROP  # stays with its unsampled parent (firehose: buffered, see above)
            return Decision.RECORD_AND_SAMPLE
        if msg in self.firehose:
            # TraceIdRatioBased's rule: deterministic in the trace id's low 64 bits.
            kept = trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._bound
            return Decision.RECORD_AND_SAMPLE if kept else Decision.DROP
        return Decision.RECORD_AND_SAMPLE

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Sequence[Any] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        decision = self.decide(parent, trace_id, attributes.get(MESSAGE_ATTR) if attributes else None)
        state = parent.trace_state if parent.is_valid else trace_state
        return SamplingResult(decision, attributes if decision != Decision.DROP else None, state)

    def get_description(self) -> str:
        return f"SignalPathSampler{{ratio={self._ratio},firehose={sorted(self.firehose)}}}"


class PendingTraces:
    """Records of unsampled firehose spans, per trace, until the trace is
    promoted (exported) or evicted. Bounded: `max_traces` traces of at most
    `max_spans` records each; promoted trace ids are remembered (as many) so
    records that end after the promotion are exported too."""

    def __init__(self, max_traces: int, max_spans: int = 256) -> None:
        self._lock = threading.Lock()
        self._traces: collections.OrderedDict[int, list[tuple]] = collections.OrderedDict()
        self._promoted: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.max_traces = max_traces
        self.max_spans = max_spans
        self.evicted = 0

    def add(self, trace_id: int, record: tuple) -> bool:
        """Buffer `record`; True when its trace is promoted already (export it now)."""
        with self._lock:
            if trace_id in self._promoted:
                return True
            records = self._traces.get(trace_id)
            if records is None:
                if len(self._traces) >= self.max_traces:
                    self._traces.popitem(last=False)
                    self.evicted += 1
                records = self._traces[trace_id] = []
            if len(records) < self.max_spans:
                records.append(record)
            return False

    def promote(self, trace_id: int) -> list[tuple]:
        """Mark `trace_id` kept; returns its buffered records (once)."""
        with self._lock:
            if trace_id in self._promoted:
                return []
            self._promoted[trace_id] = None
            if len(self._promoted) > self.max_traces:
                self._promoted.popitem(last=False)
            return self._traces.pop(trace_id, [])

    def __len__(self) -> int:
        with self._lock:
            return len(self._traces)


# ---- the message tracer -----------------------------------------------------------------


class _Ids(RandomIdGenerator):
    """The SDK's random ids, except that the next trace id of this thread can be
    given: a root span the fast path decided to keep gets the very trace id the
    decision was made on."""

    def __init__(self) -> None:
        self._next = threading.local()

    def use_trace_id(self, trace_id: int) -> None:
        self._next.trace_id = trace_id

    def generate_trace_id(self) -> int:
        trace_id = getattr(self._next, "trace_id", 0)
        if trace_id:
            self._next.trace_id = 0
            return trace_id
        return super().generate_trace_id()


_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID)


def parse_traceparent(traceparent: str) -> SpanContext | None:
    """A W3C traceparent (version 00) as a remote SpanContext; None when malformed."""
    parts = traceparent.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2 or parts[0] == "ff":
        return None
    try:
        sc = SpanContext(
            int(parts[1], 16), int(parts[2], 16), is_remote=True, trace_flags=TraceFlags(int(parts[3], 16))
        )
    except ValueError:
        return None
    return sc if sc.is_valid else None


class _Scope:
    """One handled message's span: entered and left by the actor base.

    Attributes are built only when a span is recorded or a record exported:
    a dropped firehose message costs ids, a context switch and a small tuple."""

    __slots__ = ("attrs", "kind", "msg_type", "name", "owner", "parent", "record_start", "span", "token")

    def __init__(
        self,
        owner: MessageTracer,
        name: str,
        msg_type: str,
        parent: SpanContext | None,
        attrs: dict[str, Any] | MessageSource,
        kind: SpanKind,
    ) -> None:
        self.owner, self.name, self.msg_type, self.parent, self.kind = owner, name, msg_type, parent, kind
        self.attrs = attrs  # or message_attributes' arguments, to build them only if recorded
        self.record_start = 0

    def __enter__(self) -> trace.Span:
        owner, parent = self.owner, self.parent
        ids = owner.ids
        trace_id = parent.trace_id if parent is not None else ids.generate_trace_id()
        if owner.sampler.decide(parent, trace_id, self.msg_type) is Decision.DROP:
            # The firehose's usual case: no SDK span, only a record for PendingTraces.
            span: trace.Span = trace.NonRecordingSpan(SpanContext(trace_id, ids.generate_span_id(), False, _UNSAMPLED))
            self.record_start = time.time_ns()
        else:
            if parent is None:
                ids.use_trace_id(trace_id)
                context = otel_context.Context()
            else:
                context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
            attrs = self.attrs if isinstance(self.attrs, dict) else message_attributes(*self.attrs)
            span = owner.tracer.start_span(self.name, context=context, kind=self.kind, attributes=attrs)
            if parent is not None and not parent.trace_flags.sampled:
                owner._promote(trace_id)
            coid = attrs.get("stockade.client_order_id")
            if coid:
                owner._remember_order(coid, span.get_span_context())
        self.span = span
        self.token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        otel_context.detach(self.token)
        span = self.span
        if not self.record_start:
            if exc is not None:
                _record_failure(span, exc)
            span.end()
            return
        sc, parent = span.get_span_context(), self.parent
        record = (
            self.name,
            sc.span_id,
            parent.span_id if parent is not None else 0,
            self.kind,
            self.attrs,
            self.record_start,
            time.time_ns(),
            _redacted(repr(exc)) if exc is not None else None,
        )
        if self.owner.pending.add(sc.trace_id, record):
            self.owner._export(sc.trace_id, [record])


class MessageTracer:
    """Makes the spans of handled messages (see `SignalPathSampler` for what is kept)."""

    def __init__(self, provider: TracerProvider, processor: SpanProcessor, max_pending_traces: int) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(_TRACER_NAME)
        self.processor = processor
        sampler = provider.sampler
        if not isinstance(sampler, SignalPathSampler):  # build_provider makes one
            raise TypeError(f"MessageTracer needs a SignalPathSampler, the provider has {sampler!r}")
        self.sampler = sampler
        ids = provider.id_generator
        self.ids: _Ids = ids if isinstance(ids, _Ids) else _Ids()
        self.pending = PendingTraces(max_pending_traces)
        self._scope = InstrumentationScope(_TRACER_NAME)
        # client_order_id -> the order's span: trade-stream updates (fills)
        # arrive with no traceparent and are parented to their order.
        self._orders: collections.OrderedDict[str, SpanContext] = collections.OrderedDict()
        self._orders_lock = threading.Lock()
        self._max_orders = max_pending_traces

    def message_span(
        self, actor: str, msg: Any, traceparent: str | None, sender: str = "", message_id: str = ""
    ) -> _Scope:
        """The span of `actor` handling `msg`, a child of `traceparent`, or
        (no traceparent) of the order the message names, or a new trace."""
        msg_type = type(msg).__name__
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent is None:
            coid = getattr(msg, "client_order_id", None)
            if coid:
                parent = self._order_span(coid)
        return _Scope(
            self, f"{actor} {msg_type}", msg_type, parent, (actor, msg, sender, message_id), SpanKind.CONSUMER
        )

    def span(self, name: str, traceparent: str | None, attrs: dict[str, Any], kind: SpanKind) -> _Scope:
        """Any other span kept the same way (the supervisors' failure handling)."""
        parent = parse_traceparent(traceparent) if traceparent else None
        return _Scope(self, name, attrs[MESSAGE_ATTR], parent, attrs, kind)

    def _promote(self, trace_id: int) -> None:
        records = self.pending.promote(trace_id)
        if records:
            self._export(trace_id, records)

    def _export(self, trace_id: int, records: list[tuple]) -> None:
        flags = TraceFlags(TraceFlags.SAMPLED)
        for name, span_id, parent_id, kind, attrs, start, end, error in records:
            status = Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET)
            if not isinstance(attrs, dict):
                attrs = message_attributes(*attrs)
            parent = SpanContext(trace_id, parent_id, is_remote=True, trace_flags=flags) if parent_id else None
            self.processor.on_end(
                ReadableSpan(
                    name,
                    context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags),
                    parent=parent,
                    resource=self.provider.resource,
                    attributes={**attrs, "stockade.sampling": "promoted"},
                    kind=kind,
                    status=status,
                    start_time=start,
                    end_time=end,
                    instrumentation_scope=self._scope,
                )
            )

    def _order_span(self, coid: str) -> SpanContext | None:
        with self._orders_lock:
            return self._orders.get(coid)

    def _remember_order(self, coid: str, sc: SpanContext) -> None:
        with self._orders_lock:
            if coid in self._orders:
                return  # the first span to name the order (the order itself) stays its parent
            self._orders[coid] = sc
            if len(self._orders) > self._max_orders:
                self._orders.popitem(last=False)


def _redacted(text: str) -> str:
    from stockade.broker.rest import redact  # only on failures: keeps the import graph light

    return redact(text)


def _record_failure(span: trace.Span, exc: BaseException) -> None:
    """The exception on the span, with registered secrets redacted."""
    import traceback

    text = _redacted(repr(exc))
    span.record_exception(
        exc,
        attributes={
            "exception.message": text,
            "exception.stacktrace": _redacted("".join(traceback.format_exception(exc))),
        },
    )
    span.set_status(Status(StatusCode.ERROR, text))


# ---- set-up: provider, exporter ----------------------------------------------------


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def export_decision(telemetry_settings: TelemetrySettings, env: Mapping[str, str] = os.environ) -> tuple[bool, str]:
    """Whether to export traces, and why (for the log), first rule that speaks:

    1. `OTEL_SDK_DISABLED=true`: off, whatever else is set (the SDK switch).
    2. `OTEL_TRACES_EXPORTER` (a comma-separated list, as the OpenTelemetry
       spec has it): naming `otlp` turns export on, `none` alone turns it
       off. Exporters stockade does not have (`console`, `zipkin`) are
       ignored with a warning, and leave the decision to the next rule.
    3. `[telemetry] enabled`.

    Unset, `OTEL_TRACES_EXPORTER` decides nothing: the spec's default
    (`otlp`) would make every run export to localhost.
    """
    if _flag(env.get("OTEL_SDK_DISABLED")):
        return False, "OTEL_SDK_DISABLED=true"
    raw = env.get("OTEL_TRACES_EXPORTER", "")
    names = {n.strip().lower() for n in raw.split(",") if n.strip()}
    unknown = names - {"otlp", "none"}
    if unknown:
        log.warning(
            "telemetry: OTEL_TRACES_EXPORTER=%s: stockade exports over OTLP only; %s ignored",
            raw.strip(),
            ", ".join(sorted(unknown)),
        )
    if "otlp" in names:
        return True, f"OTEL_TRACES_EXPORTER={raw.strip()}"
    if "none" in names:
        return False, f"OTEL_TRACES_EXPORTER={raw.strip()}"
    enabled = bool(telemetry_settings.enabled)
    return enabled, f"telemetry.enabled = {'true' if enabled else 'false'}"


def resolve_exporter_config(
    telemetry_settings: TelemetrySettings, env: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """Protocol, endpoint, service name and headers: settings, then the OTEL_* variables, then defaults.

    A base URL (the setting or `OTEL_EXPORTER_OTLP_ENDPOINT`) gets `/v1/traces`
    appended for HTTP, as the OTLP spec says; the traces-specific variable is
    used as is. gRPC takes `scheme://host:port` (http: plaintext, https: TLS).
    """
    cfg = telemetry_settings
    protocol: str = cfg.protocol  # or an OTEL_* variable's, checked below
    source = "telemetry.protocol"
    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if not protocol and env.get(var):
            protocol, source = env[var].strip(), var
    protocol = protocol or "http/protobuf"
    if protocol not in PROTOCOLS:
        raise ValueError(f"{source} = {protocol!r}: must be one of {', '.join(PROTOCOLS)}")
    if cfg.otlp_endpoint:
        endpoint, base = cfg.otlp_endpoint, True
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        endpoint, base = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"], False
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint, base = env["OTEL_EXPORTER_OTLP_ENDPOINT"], True
    else:
        endpoint, base = DEFAULT_ENDPOINTS[protocol], False
    if protocol == "http/protobuf" and base:
        url = endpoint.rstrip("/")
        endpoint = url if url.endswith("/v1/traces") else url + "/v1/traces"
    headers_text = env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    from opentelemetry.util.re import parse_env_headers

    return {
        "protocol": protocol,
        "endpoint": endpoint,
        "service_name": cfg.service_name or env.get("OTEL_SERVICE_NAME") or "stockade",
        "headers": parse_env_headers(headers_text, liberal=True) if headers_text else {},
    }


def otlp_traces_endpoint(telemetry_settings: TelemetrySettings, env: Mapping[str, str] = os.environ) -> str:
    """The traces endpoint the exporter will use (see `resolve_exporter_config`)."""
    return resolve_exporter_config(telemetry_settings, env)["endpoint"]


def make_exporter(resolved: Mapping[str, Any], timeout_s: float) -> SpanExporter:
    """The OTLP exporter for the resolved protocol."""
    headers = resolved["headers"] or None
    if resolved["protocol"] == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        endpoint = resolved["endpoint"]
        return GrpcExporter(
            endpoint=endpoint, insecure=not endpoint.startswith("https://"), headers=headers, timeout=timeout_s
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=resolved["endpoint"], headers=headers, timeout=timeout_s)


def build_provider(
    telemetry_settings: TelemetrySettings, exporter: SpanExporter, service_name: str | None = None
) -> tuple[TracerProvider, SpanProcessor]:
    """A TracerProvider with stockade's resource, sampler and a bounded batch processor."""
    cfg = telemetry_settings
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name or cfg.service_name or "stockade"}),
        sampler=SignalPathSampler(cfg.quote_sample_ratio, cfg.firehose_messages),
        id_generator=_Ids(),
    )
    processor = BatchSpanProcessor(
        exporter,
        max_queue_size=cfg.max_queue_size,  # full queue: spans are dropped, never blocking an actor
        max_export_batch_size=min(512, cfg.max_queue_size),
        export_timeout_millis=cfg.export_timeout_s * 1000,
    )
    provider.add_span_processor(processor)
    return provider, processor


def setup(
    telemetry_settings: TelemetrySettings, env: Mapping[str, str] = os.environ, exporter: SpanExporter | None = None
) -> Callable[..., None]:
    """Install tracing per the `[telemetry]` settings and OTEL_* variables;
    returns `shutdown(timeout_s=5)`.

    Off (see `export_decision`): nothing is installed and shutdown does
    nothing. `exporter` replaces the OTLP exporter (tests, bench).
    """
    global ACTIVE
    on, why = export_decision(telemetry_settings, env)
    if not on:
        if why != "telemetry.enabled = false":  # say so when something overrode the settings file
            log.info("telemetry: off (%s)", why)
        return lambda timeout_s=5.0: None
    try:
        resolved = resolve_exporter_config(telemetry_settings, env)
    except ValueError as exc:
        # A tracing variable must not keep a trading daemon from starting.
        log.error("telemetry: off: %s", exc)
        return lambda timeout_s=5.0: None
    if resolved["headers"]:
        from stockade.broker.rest import register_secret

        register_secret(*resolved["headers"].values())  # redacted wherever they might be echoed
    if exporter is None:
        exporter = make_exporter(resolved, telemetry_settings.export_timeout_s)
        # Never the headers: they may hold the collector's credentials.
        log.info(
            "telemetry: exporting traces over OTLP %s to %s (quote sample ratio %g; on by %s)",
            resolved["protocol"],
            resolved["endpoint"],
            telemetry_settings.quote_sample_ratio,
            why,
        )
    provider, processor = build_provider(telemetry_settings, exporter, resolved["service_name"])
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        # OpenTelemetry allows one global provider per process; ours is used through ACTIVE anyway.
        log.warning("telemetry: a global tracer provider was already installed; stockade uses its own")
    tracer = ACTIVE = MessageTracer(provider, processor, telemetry_settings.max_pending_traces)

    def shutdown(timeout_s: float = 5.0) -> None:
        """Flush what is queued (bounded by `timeout_s`) and stop exporting."""
        global ACTIVE
        if ACTIVE is tracer:
            ACTIVE = None
        try:
            # The SDK's flush can outlast its timeout while an export retries:
            # flush in a thread, then shut the exporter, which ends its retries,
            # so an unreachable collector cannot hold the daemon's exit.
            flusher = threading.Thread(
                target=provider.force_flush, args=(int(timeout_s * 1000),), name="telemetry-flush", daemon=True
            )
            flusher.start()
            flusher.join(timeout_s)
            exporter.shutdown()
            provider.shutdown()
            flusher.join(timeout_s)
        except Exception:  # exporting is best effort; never fail the daemon's exit
            log.warning("telemetry: shutdown failed", exc_info=True)

    return shutdown


# The runtime (supervisors/) traces through this module without importing it.
hooks.install_tracing(sys.modules[__name__])
