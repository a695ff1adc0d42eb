"""OpenTelemetry for stockade: one span per message handled, parented by the
envelope's W3C traceparent, so one quote that leads to an order is one trace.

`setup()` installs the SDK provider and the OTLP exporter; without it the
OpenTelemetry API is a no-op and these helpers cost almost nothing.
Sampling (`SignalPathSampler`) keeps a fraction of quote traces and every
order, kill and control-command trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "stockade"


_cached_tracer: tuple[object, trace.Tracer] | None = None


def _tracer() -> trace.Tracer:
    """The stockade tracer of the current provider, made once per provider:
    building one costs ~15 us, and this runs for every message handled."""
    global _cached_tracer
    provider = trace.get_tracer_provider()
    cached = _cached_tracer
    if cached is None or cached[0] is not provider:
        cached = _cached_tracer = (provider, provider.get_tracer(_TRACER_NAME))
    return cached[1]


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, to put in an outgoing envelope."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def message_span(actor: str, msg_type: str, traceparent: str | None) -> Iterator[trace.Span]:
    """A span for one message handled by `actor`, child of the sender's span."""
    parent_ctx = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else otel_context.Context()
    with _tracer().start_as_current_span(
        f"{actor} {msg_type}",
        context=parent_ctx,
        attributes={"stockade.actor": actor, "stockade.message": msg_type},
    ) as span:
        yield span


# ---- set-up: provider, exporter, sampling -----------------------------------------

MESSAGE_ATTR = "stockade.message"
DEFAULT_FIREHOSE = frozenset({"Quote", "Trade", "Bar", "Vote", "FlushQuotes"})
DEFAULT_OTLP_HTTP = "http://localhost:4318/v1/traces"  # Jaeger's OTLP/HTTP port


class SignalPathSampler(Sampler):
    """Sample the quote firehose at a ratio, the signal path always.

    - A span whose parent is sampled is sampled (one quote -> order trace stays whole).
    - A root span handling a firehose message (quotes, trades, bars, votes) is
      sampled by trace id at `ratio`: deterministic, so every process agrees.
    - A firehose span under an unsampled parent is dropped.
    - Any other message span (proposals, orders, kills, alerts) and any root
      span (control commands) is always sampled, even when the quote that led
      to it was not: the order path must never be lost to the quote ratio.
      Such a trace then starts at the first signal message (its parent shows
      as missing in Jaeger).
    - Spans that are not message spans (library instrumentation) follow
      their parent, and are sampled as roots.
    """

    def __init__(self, ratio: float, firehose: Iterable[str] = DEFAULT_FIREHOSE) -> None:
        self._ratio = ratio
        self._by_trace_id = TraceIdRatioBased(ratio)
        self._firehose = frozenset(firehose)

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
        msg = attributes.get(MESSAGE_ATTR) if attributes else None
        if parent.is_valid and parent.trace_flags.sampled:
            decision = Decision.RECORD_AND_SAMPLE
        elif msg in self._firehose:
            if parent.is_valid:
                decision = Decision.DROP
            else:
                decision = self._by_trace_id.should_sample(parent_context, trace_id, name).decision
        elif parent.is_valid and msg is None:
            decision = Decision.DROP  # not ours: stay with the (unsampled) parent
        else:
            decision = Decision.RECORD_AND_SAMPLE
        state = parent.trace_state if parent.is_valid else trace_state
        return SamplingResult(decision, attributes if decision != Decision.DROP else None, state)

    def get_description(self) -> str:
        return f"SignalPathSampler{{ratio={self._ratio},firehose={sorted(self._firehose)}}}"


@contextlib.contextmanager
def root_span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[trace.Span]:
    """A new trace (e.g. one control command); always sampled by SignalPathSampler."""
    tracer = _tracer()
    with tracer.start_as_current_span(
        name, context=otel_context.Context(), kind=trace.SpanKind.SERVER, attributes=dict(attributes or {})
    ) as span:
        yield span


def otlp_traces_endpoint(telemetry_settings: Any, env: Mapping[str, str] = os.environ) -> str:
    """settings otlp_endpoint > $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT > $OTEL_EXPORTER_OTLP_ENDPOINT > localhost:4318.

    A base URL (settings or OTEL_EXPORTER_OTLP_ENDPOINT) gets `/v1/traces`
    appended, as the OTLP spec says; the traces-specific variable is used as is.
    """
    if telemetry_settings.otlp_endpoint:
        url = telemetry_settings.otlp_endpoint.rstrip("/")
        return url if url.endswith("/v1/traces") else url + "/v1/traces"
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    return DEFAULT_OTLP_HTTP


def build_provider(telemetry_settings: Any, exporter: SpanExporter) -> TracerProvider:
    """A TracerProvider with stockade's resource, sampler and a bounded batch processor."""
    cfg = telemetry_settings
    provider = TracerProvider(
        resource=Resource.create({"service.name": cfg.service_name}),
        sampler=SignalPathSampler(cfg.quote_sample_ratio, cfg.firehose_messages),
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=cfg.max_queue_size,  # full queue: spans are dropped, never blocking an actor
            max_export_batch_size=min(512, cfg.max_queue_size),
            export_timeout_millis=cfg.export_timeout_s * 1000,
        )
    )
    return provider


def setup(
    telemetry_settings: Any, env: Mapping[str, str] = os.environ, exporter: SpanExporter | None = None
) -> Callable[..., None]:
    """Install tracing per the `[telemetry]` settings; returns `shutdown(timeout_s=5)`.

    Disabled: nothing is installed (the API stays a no-op) and shutdown does
    nothing. `exporter` replaces the OTLP/HTTP exporter (tests).
    """
    if not telemetry_settings.enabled:
        return lambda timeout_s=5.0: None
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_traces_endpoint(telemetry_settings, env)
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=telemetry_settings.export_timeout_s)
        log.info("telemetry: exporting traces to %s (quote sample ratio %g)", endpoint, telemetry_settings.quote_sample_ratio)
    provider = build_provider(telemetry_settings, exporter)
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        # OpenTelemetry allows one global provider per process.
        log.warning("telemetry: a tracer provider was already installed; keeping it")

    def shutdown(timeout_s: float = 5.0) -> None:
        """Flush what is queued (bounded by `timeout_s`) and stop exporting."""
        try:
            provider.force_flush(timeout_millis=int(timeout_s * 1000))
            provider.shutdown()
        except Exception:  # exporting is best effort; never fail the daemon's exit
            log.warning("telemetry: shutdown failed", exc_info=True)

    return shutdown
