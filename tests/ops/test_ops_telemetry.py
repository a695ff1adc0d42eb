import http.server
import random
import threading

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util._once import Once

from stockade.ops import telemetry
from stockade.ops.settings import TelemetrySettings
from stockade.ops.telemetry import SignalPathSampler, current_traceparent, message_span, root_span


@pytest.fixture
def fresh_global_provider():
    """OpenTelemetry allows one global provider per process: reset it around each test."""
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    yield
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


def sampled_flag(traceparent: str) -> bool:
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)  # bit 1 is W3C level 2's "random"


def tracing(ratio):
    exporter = InMemorySpanExporter()
    shutdown = telemetry.setup(TelemetrySettings(enabled=True, quote_sample_ratio=ratio), env={}, exporter=exporter)

    def spans():
        trace.get_tracer_provider().force_flush()
        return {s.name: s for s in exporter.get_finished_spans()}

    return spans, shutdown


def test_disabled_installs_nothing(fresh_global_provider):
    shutdown = telemetry.setup(TelemetrySettings(enabled=False), env={})
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    shutdown()
    with message_span("A", "OrderIntent", None):
        assert current_traceparent() is None  # no-op API: nothing to propagate


def test_parent_child_through_traceparent(fresh_global_provider):
    spans, shutdown = tracing(0.0)
    with message_span("RiskGuard", "Proposal", None) as parent:
        tp = current_traceparent()
    assert tp is not None and sampled_flag(tp)  # the decision travels in the envelope
    with message_span("OrderManager", "OrderIntent", tp):
        pass
    got = spans()
    p, c = got["RiskGuard Proposal"], got["OrderManager OrderIntent"]
    assert c.context.trace_id == p.context.trace_id
    assert c.parent.span_id == p.context.span_id
    assert c.attributes["stockade.actor"] == "OrderManager"
    assert c.resource.attributes["service.name"] == "stockade"
    shutdown()


def test_quote_firehose_sampled_but_signal_path_kept(fresh_global_provider):
    spans, shutdown = tracing(0.0)  # no quote trace kept at all
    with message_span("QuoteStreamer", "Quote", None):
        q_tp = current_traceparent()
    assert not sampled_flag(q_tp)
    with message_span("Analyzer-SPY", "Vote", q_tp):
        v_tp = current_traceparent()
        with trace.get_tracer("lib").start_as_current_span("library work"):
            pass
    with message_span("EnsembleVoter", "Proposal", v_tp):
        p_tp = current_traceparent()
    with message_span("RiskGuard", "OrderIntent", p_tp):
        pass
    with root_span("control kill", {"stockade.control.command": "kill"}):
        k_tp = current_traceparent()
    with message_span("EmergencyStop", "Kill", k_tp):
        pass
    got = spans()
    assert "QuoteStreamer Quote" not in got and "Analyzer-SPY Vote" not in got and "library work" not in got
    prop, order = got["EnsembleVoter Proposal"], got["RiskGuard OrderIntent"]
    assert format(prop.context.trace_id, "032x") == q_tp.split("-")[1]  # still the quote's trace
    assert order.parent.span_id == prop.context.span_id
    assert got["EmergencyStop Kill"].parent.span_id == got["control kill"].context.span_id
    shutdown()


def test_sampled_quote_keeps_whole_trace(fresh_global_provider):
    spans, shutdown = tracing(1.0)
    with message_span("QuoteStreamer", "Quote", None):
        tp = current_traceparent()
    with message_span("Analyzer-SPY", "Vote", tp):
        with trace.get_tracer("lib").start_as_current_span("library work"):
            pass
    got = spans()
    assert {"QuoteStreamer Quote", "Analyzer-SPY Vote", "library work"} <= set(got)
    shutdown()


def _decide(sampler, trace_id, msg, parent_flags=None):
    ctx = None
    if parent_flags is not None:
        parent = SpanContext(trace_id, 0x1234, is_remote=True, trace_flags=TraceFlags(parent_flags))
        ctx = trace.set_span_in_context(NonRecordingSpan(parent))
    attrs = {"stockade.message": msg} if msg else None
    return sampler.should_sample(ctx, trace_id, "x", attributes=attrs).decision


def test_sampler_decisions_are_deterministic():
    s = SignalPathSampler(0.5)
    low, high = 1, (1 << 64) - 1  # TraceIdRatioBased looks at the low 64 bits
    assert _decide(s, low, "Quote") == Decision.RECORD_AND_SAMPLE
    assert _decide(s, high, "Quote") == Decision.DROP
    assert _decide(s, high, "Quote") == Decision.DROP  # same id, same answer
    assert _decide(s, high, "OrderIntent") == Decision.RECORD_AND_SAMPLE
    assert _decide(s, high, None) == Decision.RECORD_AND_SAMPLE
    assert _decide(s, high, "Quote", parent_flags=1) == Decision.RECORD_AND_SAMPLE
    assert _decide(s, low, "Vote", parent_flags=0) == Decision.DROP
    assert _decide(s, low, None, parent_flags=0) == Decision.DROP
    assert _decide(s, low, "Proposal", parent_flags=0) == Decision.RECORD_AND_SAMPLE


def test_sampler_ratio_over_many_traces():
    s = SignalPathSampler(0.01)
    rng = random.Random(7)
    kept = sum(_decide(s, rng.getrandbits(128) or 1, "Quote") == Decision.RECORD_AND_SAMPLE for _ in range(20000))
    assert 140 <= kept <= 260  # 1% of 20000 = 200
    rng = random.Random(7)
    again = sum(_decide(s, rng.getrandbits(128) or 1, "Quote") == Decision.RECORD_AND_SAMPLE for _ in range(20000))
    assert again == kept


def test_endpoint_resolution():
    base = TelemetrySettings()
    assert telemetry.otlp_traces_endpoint(base, {}) == "http://localhost:4318/v1/traces"
    assert telemetry.otlp_traces_endpoint(base, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318/"}) == "http://jaeger:4318/v1/traces"
    assert telemetry.otlp_traces_endpoint(base, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1",
                                                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2/custom"}) == "http://b:2/custom"
    pinned = TelemetrySettings(otlp_endpoint="http://c:3")
    assert telemetry.otlp_traces_endpoint(pinned, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2"}) == "http://c:3/v1/traces"
    assert telemetry.otlp_traces_endpoint(TelemetrySettings(otlp_endpoint="http://c:3/v1/traces"), {}) == "http://c:3/v1/traces"


def test_real_otlp_http_export(fresh_global_provider):
    posts = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        cfg = TelemetrySettings(enabled=True, otlp_endpoint=f"http://127.0.0.1:{srv.server_port}", export_timeout_s=5)
        shutdown = telemetry.setup(cfg, env={})
        with root_span("control status"):
            pass
        shutdown(timeout_s=5)
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)
    assert posts and posts[0][0] == "/v1/traces"
    assert posts[0][1] == "application/x-protobuf"
    assert b"control status" in posts[0][2] and b"stockade" in posts[0][2]
