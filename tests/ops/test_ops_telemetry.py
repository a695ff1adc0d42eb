import contextlib
import http.server
import logging
import random
import threading
from concurrent import futures

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util._once import Once

from stockade.broker.orders import client_order_id
from stockade.broker.rest import register_secret
from stockade.codecs.messages import FlushQuotes, OrderIntent, OrderUpdate, Proposal, Quote, Tick, Vote
from stockade.config.settings import TelemetrySettings
from stockade.ops import telemetry
from stockade.ops.telemetry import SignalPathSampler, current_traceparent, root_span


@pytest.fixture
def fresh_global_provider():
    """OpenTelemetry allows one global provider per process: reset it around each test."""
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    yield
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
    assert telemetry.ACTIVE is None, "a test left tracing on"


@pytest.fixture
def tracing(fresh_global_provider):
    """`tracing(ratio, **settings)` -> spans(): finished spans by name (lists)."""
    shutdowns = []

    def start(ratio, **settings):
        exporter = InMemorySpanExporter()
        cfg = TelemetrySettings(enabled=True, quote_sample_ratio=ratio, **settings)
        shutdowns.append(telemetry.setup(cfg, env={}, exporter=exporter))

        def spans():
            telemetry.ACTIVE.provider.force_flush()
            out = {}
            for s in exporter.get_finished_spans():
                out.setdefault(s.name, []).append(s)
            return out

        return spans

    yield start
    for shutdown in shutdowns:
        shutdown()


def handle(actor, msg, traceparent, body=None):
    """Handle `msg` as the actor base does; `body(tp)` runs inside the span with its traceparent."""
    with telemetry.ACTIVE.message_span(actor, msg, traceparent, "test", "id-1"):
        tp = current_traceparent()
        if body is not None:
            body(tp)
    return tp


def sampled_flag(traceparent: str) -> bool:
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)  # bit 1 is W3C level 2's "random"


def quote(symbol="SPY"):
    return Quote(symbol, 99.9, 100.1, 100, 100, 1, 2)


def vote(model):
    return Vote("SPY", model, 0.8, 0.9, 100.0, 1, 2)


PROPOSAL = Proposal("p-1", "SPY", "buy", 0.8, 0.9, 100.0, 99.9, 100.1, 1, 2)
INTENT = OrderIntent("i-1", "SPY", "buy", 5, "market", None, None, None, "signal", "p-1", 2)
COID = client_order_id("i-1")


def fill():
    return OrderUpdate("fill", COID, "b-1", "SPY", "buy", "filled", 5, 5, 100.0, 3)


# ---- off -----------------------------------------------------------------------------


def test_disabled_installs_nothing(fresh_global_provider):
    shutdown = telemetry.setup(TelemetrySettings(enabled=False), env={})
    assert telemetry.ACTIVE is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    with telemetry.message_span("a", INTENT, None) as span:
        assert current_traceparent() is None  # nothing to propagate
        assert span is trace.INVALID_SPAN  # no span object made
    with root_span("control status") as span:
        assert span is trace.INVALID_SPAN
    shutdown()


def test_otel_sdk_disabled_wins_over_the_setting(fresh_global_provider):
    shutdown = telemetry.setup(TelemetrySettings(enabled=True), env={"OTEL_SDK_DISABLED": "true"})
    assert telemetry.ACTIVE is None
    shutdown()
    shutdown = telemetry.setup(
        TelemetrySettings(enabled=True), env={"OTEL_SDK_DISABLED": "false"}, exporter=InMemorySpanExporter()
    )
    assert telemetry.ACTIVE is not None
    shutdown()
    assert telemetry.ACTIVE is None


@pytest.mark.parametrize(
    "enabled, env, on, why",
    [
        (False, {}, False, "telemetry.enabled = false"),
        (True, {}, True, "telemetry.enabled = true"),
        (False, {"OTEL_TRACES_EXPORTER": "otlp"}, True, "OTEL_TRACES_EXPORTER=otlp"),
        (False, {"OTEL_TRACES_EXPORTER": " OTLP "}, True, "OTEL_TRACES_EXPORTER=OTLP"),
        (False, {"OTEL_TRACES_EXPORTER": "console,otlp"}, True, "OTEL_TRACES_EXPORTER=console,otlp"),
        (True, {"OTEL_TRACES_EXPORTER": "none"}, False, "OTEL_TRACES_EXPORTER=none"),
        (True, {"OTEL_TRACES_EXPORTER": ""}, True, "telemetry.enabled = true"),  # set but empty: unset
        (True, {"OTEL_TRACES_EXPORTER": "console"}, True, "telemetry.enabled = true"),  # not built in: the key decides
        (False, {"OTEL_TRACES_EXPORTER": "zipkin"}, False, "telemetry.enabled = false"),
        (True, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False, "OTEL_SDK_DISABLED=true"),
        (False, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, True, "OTEL_TRACES_EXPORTER=otlp"),
    ],
)
def test_export_decision_precedence(enabled, env, on, why):
    assert telemetry.export_decision(TelemetrySettings(enabled=enabled), env) == (on, why)


def test_an_exporter_stockade_does_not_have_is_named_in_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="stockade"):
        telemetry.export_decision(TelemetrySettings(), {"OTEL_TRACES_EXPORTER": "console,zipkin"})
    assert (
        "OTEL_TRACES_EXPORTER=console,zipkin: stockade exports over OTLP only; console, zipkin ignored" in caplog.text
    )


def test_otel_traces_exporter_none_wins_over_enabled(fresh_global_provider, caplog):
    with caplog.at_level(logging.INFO, logger="stockade"):
        shutdown = telemetry.setup(
            TelemetrySettings(enabled=True), env={"OTEL_TRACES_EXPORTER": "none"}, exporter=InMemorySpanExporter()
        )
    assert telemetry.ACTIVE is None
    assert "telemetry: off (OTEL_TRACES_EXPORTER=none)" in caplog.text
    shutdown()


# ---- spans, attributes, parents ---------------------------------------------------------


def test_parent_child_through_traceparent_with_messaging_attributes(tracing):
    spans = tracing(0.0)
    tp = handle("risk_guard", PROPOSAL, None)
    assert tp is not None and sampled_flag(tp)  # the decision travels in the envelope
    handle("order_manager", INTENT, tp)
    got = spans()
    (p,), (c,) = got["risk_guard Proposal"], got["order_manager OrderIntent"]
    assert c.context.trace_id == p.context.trace_id
    assert c.parent.span_id == p.context.span_id
    assert c.kind == trace.SpanKind.CONSUMER
    assert dict(c.attributes) == {
        "messaging.system": "pykka",
        "messaging.operation.type": "process",
        "messaging.destination.name": "order_manager",
        "messaging.message.id": "id-1",
        "stockade.actor": "order_manager",
        "stockade.message": "OrderIntent",
        "stockade.sender": "test",
        "stockade.symbol": "SPY",
        "stockade.intent_id": "i-1",
        "stockade.proposal_id": "p-1",
        "stockade.side": "buy",
        "stockade.client_order_id": COID,
    }
    assert p.attributes["stockade.symbol"] == "SPY" and "stockade.client_order_id" not in p.attributes
    assert c.resource.attributes["service.name"] == "stockade"


def test_a_fill_from_the_trade_stream_is_a_child_of_its_order(tracing):
    spans = tracing(1.0)
    tp = handle("risk_guard", PROPOSAL, None)
    handle("order_manager", INTENT, tp)
    handle("order_manager", fill(), None)  # the trade stream has no traceparent
    other = OrderUpdate("fill", "someone-else", "b-2", "SPY", "buy", "filled", 5, 5, 100.0, 3)
    handle("order_manager", other, None)
    got = spans()
    (order,) = got["order_manager OrderIntent"]
    fills = {s.attributes["stockade.client_order_id"]: s for s in got["order_manager OrderUpdate"]}
    assert fills[COID].parent.span_id == order.context.span_id
    assert fills[COID].context.trace_id == order.context.trace_id
    assert fills["someone-else"].parent is None  # not ours: a trace of its own


def test_a_failing_handler_marks_its_span_with_the_exception_redacted(tracing):
    spans = tracing(1.0)
    register_secret("SeCrEt-4711-value")
    with pytest.raises(RuntimeError):
        handle("a", Tick("x"), None, body=lambda tp: (_ for _ in ()).throw(RuntimeError("key SeCrEt-4711-value")))
    (span,) = spans()["a Tick"]
    assert span.status.status_code == trace.StatusCode.ERROR
    (event,) = span.events
    assert event.name == "exception"
    assert "SeCrEt-4711-value" not in str(dict(event.attributes)) and "***" in event.attributes["exception.message"]
    assert "SeCrEt-4711-value" not in (span.status.description or "")


# ---- sampling ---------------------------------------------------------------------------


def quote_to_fill(risk_guard_reached=True):
    """The daemon's path, in one thread: flush -> quote -> 2 votes -> proposal -> order -> fill.
    The proposal is handled while the second vote's span is still open, as it can be in the daemon."""
    flush_tp = handle("quote_streamer", FlushQuotes(), None)
    quote_tp = handle("analyzer:SPY", quote(), flush_tp)
    handle("ensemble_voter", vote("m1"), quote_tp)

    def tally(vote_tp):
        if risk_guard_reached:
            handle("risk_guard", PROPOSAL, vote_tp, body=lambda tp: handle("order_manager", INTENT, tp))

    handle("ensemble_voter", vote("m2"), quote_tp, body=tally)
    if risk_guard_reached:
        handle("order_manager", fill(), None)
    return flush_tp


def chain(got, name):
    by_id = {s.context.span_id: s for spans in got.values() for s in spans}
    (span,) = got[name]
    names = [span.name]
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


def test_unsampled_quote_trace_that_reaches_the_risk_guard_is_exported_whole(tracing):
    spans = tracing(0.0)  # no quote trace sampled at the head
    flush_tp = quote_to_fill()
    assert not sampled_flag(flush_tp)
    got = spans()
    assert chain(got, "order_manager OrderUpdate") == [
        "order_manager OrderUpdate",
        "order_manager OrderIntent",
        "risk_guard Proposal",
        "ensemble_voter Vote",
        "analyzer:SPY Quote",
        "quote_streamer FlushQuotes",
    ]
    trace_ids = {s.context.trace_id for spans in got.values() for s in spans}
    assert trace_ids == {int(flush_tp.split("-")[1], 16)}  # one trace, the quote's
    assert len(got["ensemble_voter Vote"]) == 2  # both votes, the one still open at promotion too
    recovered = [s for spans in got.values() for s in spans if s.attributes.get("stockade.sampling") == "promoted"]
    assert {s.name for s in recovered} == {"quote_streamer FlushQuotes", "analyzer:SPY Quote", "ensemble_voter Vote"}
    assert all(s.end_time >= s.start_time > 0 for s in recovered)
    assert got["analyzer:SPY Quote"][0].attributes["stockade.symbol"] == "SPY"


def test_unsampled_quote_traces_that_stop_short_are_never_exported(tracing):
    spans = tracing(0.0, max_pending_traces=3)
    for _ in range(5):
        quote_to_fill(risk_guard_reached=False)
    assert spans() == {}
    pending = telemetry.ACTIVE.pending
    assert len(pending) == 3 and pending.evicted == 2  # bounded, oldest forgotten
    with trace.get_tracer("lib").start_as_current_span("library work"):
        pass
    assert "library work" in spans()  # not a message span: sampled as a root


def test_sampled_quote_keeps_whole_trace_with_library_spans(tracing):
    spans = tracing(1.0)

    def library_work(_tp):
        with trace.get_tracer("lib").start_as_current_span("library work"):
            pass

    tp = handle("quote_streamer", FlushQuotes(), None)
    handle("analyzer:SPY", quote(), tp, body=library_work)
    got = spans()
    assert {"quote_streamer FlushQuotes", "analyzer:SPY Quote", "library work"} <= set(got)
    assert not any(s.attributes.get("stockade.sampling") for v in got.values() for s in v)


def test_unsampled_library_spans_and_control_roots(tracing):
    spans = tracing(0.0)

    def library_work(_tp):
        with trace.get_tracer("lib").start_as_current_span("library work"):
            pass

    handle("analyzer:SPY", quote(), None, body=library_work)
    with root_span("control kill", {"stockade.control.command": "kill"}):
        k_tp = current_traceparent()
    handle("emergency_stop", Tick("kill"), k_tp)
    got = spans()
    assert "library work" not in got and "analyzer:SPY Quote" not in got
    assert got["emergency_stop Tick"][0].parent.span_id == got["control kill"][0].context.span_id


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


# ---- configuration: settings, then OTEL_* ---------------------------------------------


def resolve(env=None, **settings):
    return telemetry.resolve_exporter_config(TelemetrySettings(**settings), env or {})


def test_defaults_are_http_to_localhost():
    assert resolve() == {
        "protocol": "http/protobuf",
        "endpoint": "http://localhost:4318/v1/traces",
        "service_name": "stockade",
        "headers": {},
    }
    assert resolve(protocol="grpc")["endpoint"] == "http://localhost:4317"


def test_protocol_precedence():
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert resolve(env)["protocol"] == "grpc"
    assert resolve(env)["endpoint"] == "http://localhost:4317"
    env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/protobuf"
    assert resolve(env)["protocol"] == "http/protobuf"  # the traces-specific variable first
    assert resolve(env, protocol="grpc")["protocol"] == "grpc"  # the setting over both
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL = 'http/json'"):
        resolve({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_a_bad_protocol_variable_leaves_tracing_off_and_says_so(fresh_global_provider, caplog):
    with caplog.at_level(logging.ERROR, logger="stockade"):
        shutdown = telemetry.setup(TelemetrySettings(enabled=True), env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert telemetry.ACTIVE is None
    assert "OTEL_EXPORTER_OTLP_PROTOCOL = 'http/json'" in caplog.text
    shutdown()


def test_endpoint_precedence():
    assert resolve({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318/"})["endpoint"] == "http://jaeger:4318/v1/traces"
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2/custom"}
    assert resolve(both)["endpoint"] == "http://b:2/custom"  # used as is
    assert resolve(both, otlp_endpoint="http://c:3")["endpoint"] == "http://c:3/v1/traces"
    assert resolve(otlp_endpoint="http://c:3/v1/traces")["endpoint"] == "http://c:3/v1/traces"
    # gRPC takes the endpoint as is: no path.
    assert (
        resolve({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"}, protocol="grpc")["endpoint"]
        == "http://jaeger:4317"
    )


def test_service_name_and_headers_precedence():
    env = {"OTEL_SERVICE_NAME": "stockade-paper", "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Basic%20abc,x-a=1"}
    got = resolve(env)
    assert got["service_name"] == "stockade-paper"
    assert got["headers"] == {"authorization": "Basic abc", "x-a": "1"}
    assert resolve(env, service_name="mine")["service_name"] == "mine"
    env["OTEL_EXPORTER_OTLP_TRACES_HEADERS"] = "x-b=2"
    assert resolve(env)["headers"] == {"x-b": "2"}


def test_settings_validation_of_the_new_keys():
    from stockade.config.settings import SettingsError, settings_from_dict

    with pytest.raises(SettingsError, match="telemetry.protocol"):
        settings_from_dict({"telemetry": {"protocol": "http/json"}})
    with pytest.raises(SettingsError, match="telemetry.max_pending_traces = 0"):
        settings_from_dict({"telemetry": {"max_pending_traces": 0}})
    assert settings_from_dict({"telemetry": {"protocol": "grpc"}}).telemetry.protocol == "grpc"


# ---- real exporters ------------------------------------------------------------------------


class _HttpCollector(http.server.ThreadingHTTPServer):
    def __init__(self):
        self.posts = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.posts.append((self.path, self.headers, body))  # case-insensitive get
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@contextlib.contextmanager
def http_collector():
    """A running `_HttpCollector`, stopped on the way out."""
    srv = _HttpCollector()
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def test_real_otlp_http_export_with_headers_from_env_never_logged(fresh_global_provider, caplog):
    with http_collector() as srv:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{srv.server_port}",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20tok-9f8e7d",
        }
        with caplog.at_level(logging.DEBUG, logger="stockade"):
            shutdown = telemetry.setup(TelemetrySettings(enabled=True, export_timeout_s=5), env=env)
        with root_span("control status"):
            pass
        shutdown(timeout_s=5)
    assert "tok-9f8e7d" not in caplog.text and "127.0.0.1" in caplog.text
    from stockade.broker.rest import redact

    assert "tok-9f8e7d" not in redact("collector said: bad header Bearer tok-9f8e7d")  # registered as a secret
    path, headers, body = srv.posts[0]
    assert path == "/v1/traces"
    assert headers.get("Content-Type") == "application/x-protobuf"
    assert headers.get("Authorization") == "Bearer tok-9f8e7d"
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    names = [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert names == ["control status"]


def test_the_standard_variables_alone_turn_export_on_over_the_default_setting(fresh_global_provider, caplog):
    """`OTEL_TRACES_EXPORTER=otlp` and an endpoint, as Jaeger's docs say, with `[telemetry]` left at
    its defaults (`enabled = false`): spans reach the collector."""
    with http_collector() as srv:
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{srv.server_port}/custom/traces",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        }
        with caplog.at_level(logging.INFO, logger="stockade"):
            shutdown = telemetry.setup(TelemetrySettings(export_timeout_s=5), env=env)
        assert telemetry.ACTIVE is not None
        with root_span("control status"):
            pass
        shutdown(timeout_s=5)
    assert "on by OTEL_TRACES_EXPORTER=otlp" in caplog.text
    path, _headers, body = srv.posts[0]
    assert path == "/custom/traces"  # the traces-specific endpoint, as is
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    assert [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans] == ["control status"]


class GrpcCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC traces receiver on a free port."""

    def __init__(self):
        self.requests = []
        self.metadata = []
        self.got = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):  # the generated service's naming
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        self.got.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    def stop(self):
        self.server.stop(grace=1).wait(5)


def test_real_otlp_grpc_export(fresh_global_provider):
    collector = GrpcCollector()
    try:
        cfg = TelemetrySettings(
            enabled=True,
            protocol="grpc",
            otlp_endpoint=f"http://127.0.0.1:{collector.port}",
            export_timeout_s=5,
            service_name="stockade-test",
        )
        shutdown = telemetry.setup(cfg, env={"OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=desk-1"})
        tp = handle("risk_guard", PROPOSAL, None)
        handle("order_manager", INTENT, tp)
        shutdown(timeout_s=5)
        assert collector.got.wait(5)
    finally:
        collector.stop()
    spans = {
        s.name: s for r in collector.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans
    }
    assert spans["order_manager OrderIntent"].parent_span_id == spans["risk_guard Proposal"].span_id
    resource = collector.requests[0].resource_spans[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "stockade-test"
    assert collector.metadata[0]["x-tenant"] == "desk-1"
