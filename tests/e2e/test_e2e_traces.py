"""quote -> votes -> proposal -> risk decision -> order -> fill is one trace: a
real daemon subprocess trades on the embedded venue and exports to a real
OTLP receiver started by the test (gRPC from opentelemetry-proto's service,
or HTTP/protobuf), and the test follows the parent links of what arrived."""

from __future__ import annotations

import threading
import tomllib
from concurrent import futures

import grpc
from daemon_harness import DaemonProcess, settings_text
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from otlp_receivers import OtlpHttpReceiver
from waiting import wait_for

# Any clear push trades: the tests are about the traces of orders, not which signals qualify.
TRADE_OFTEN = {"min_confidence": 0.0}
FILL_CHAIN = ["order_manager OrderUpdate", "order_manager OrderIntent", "risk_guard Proposal", "ensemble_voter Votes"]


class Spans:
    """Every span a receiver got, by span id."""

    def __init__(self) -> None:
        self.by_id: dict[bytes, object] = {}
        self.services: set[str] = set()
        self.lock = threading.Lock()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self.lock:
            for rs in request.resource_spans:
                self.services.update(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.by_id[span.span_id] = span

    def all(self) -> list:
        with self.lock:
            return list(self.by_id.values())

    def chain(self, span) -> list:
        """`span` and its parents, as far as they were exported."""
        out = [span]
        with self.lock:
            while span.parent_span_id and span.parent_span_id in self.by_id:
                span = self.by_id[span.parent_span_id]
                out.append(span)
        return out

    def fill_chain(self) -> list | None:
        """The first fill whose trace reaches back to the quote streamer's flush."""
        for span in self.all():
            if span.name == "order_manager OrderUpdate" and attrs(span).get("stockade.order_event") == "fill":
                chain = self.chain(span)
                if chain[-1].name == "quote_streamer FlushQuotes":
                    return chain
        return None


def attrs(span) -> dict:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value if value.HasField("string_value") else value
    return out


class GrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """The OTLP/gRPC TraceService on a free port."""

    def __init__(self) -> None:
        self.spans = Spans()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):  # the generated service's naming
        self.spans.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def stop(self) -> None:
        self.server.stop(grace=1).wait(5)


class HttpReceiver(OtlpHttpReceiver):
    """The OTLP/HTTP traces endpoint (protobuf), keeping the spans."""

    def __init__(self) -> None:
        self.spans = Spans()
        super().__init__(
            lambda _headers, body: self.spans.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
        )


def check_fill_chain(chain: list) -> None:
    names = [s.name for s in chain]
    assert names[:4] == FILL_CHAIN, names
    assert names[4].startswith("analyzer:") and names[4].endswith(" Quote"), names
    assert names[5:] == ["quote_streamer FlushQuotes"], names
    assert len({s.trace_id for s in chain}) == 1  # one trace
    fill, order, proposal = (attrs(s) for s in chain[:3])
    assert fill["stockade.client_order_id"] == order["stockade.client_order_id"]
    symbol = order["stockade.symbol"]
    assert fill["stockade.symbol"] == proposal["stockade.symbol"] == symbol
    assert names[4] == f"analyzer:{symbol} Quote"
    assert attrs(chain[4])["stockade.symbol"] == symbol
    assert order["messaging.system"] == "pykka" and order["messaging.destination.name"] == "order_manager"


def test_grpc_by_otel_env_keeps_whole_traces_that_reach_the_risk_guard(short_dir):
    """Turned on and pointed by the standard variables alone, as Jaeger's docs say
    (`[telemetry] enabled` stays false). Sample ratio 0: no quote trace is kept at
    the head, yet every trace that reached the risk guard arrives whole, and no
    other quote trace arrives."""
    receiver = GrpcReceiver()
    settings = settings_text(None, voter=TRADE_OFTEN, telemetry={"quote_sample_ratio": 0.0})
    assert "enabled" not in tomllib.loads(settings)["telemetry"]  # the default, false
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_SERVICE_NAME": "stockade-e2e",
    }
    daemon = DaemonProcess(short_dir / "data", settings, env=env)
    try:
        daemon.wait_ready()
        chain = wait_for(receiver.spans.fill_chain, 90, 0.25, "a fill whose trace reaches back to the quote")
        check_fill_chain(chain)
        assert all(attrs(s).get("stockade.sampling") == "promoted" for s in chain[3:])  # kept after the fact
        assert not any(attrs(s).get("stockade.sampling") for s in chain[:3])

        # A restart is a span with events in the supervisor, and an alert.
        assert daemon.ok("crash", name="analyzer:SPY")["crash"] == "analyzer:SPY"

        def restart_span():
            for span in receiver.spans.all():
                if span.name == "analyzers ChildExit" and attrs(span).get("stockade.child") == "analyzer:SPY":
                    events = {e.name: {kv.key: kv.value for kv in e.attributes} for e in span.events}
                    return events if "stockade.restart" in events else None
            return None

        events = wait_for(restart_span, 30, 0.25, "the supervisor's span of the restart")
        assert "InjectedCrash" in events["stockade.child.exit"]["stockade.reason"].string_value
        assert events["stockade.restart"]["stockade.attempt"].int_value == 1
        wait_for(lambda: "restart:analyzer:SPY" in daemon.log(), 30, 0.25, "the restart alert")
        assert daemon.stop() == 0  # flushes what is queued
        spans = receiver.spans.all()
        by_trace: dict[bytes, set[str]] = {}
        for span in spans:
            by_trace.setdefault(span.trace_id, set()).add(span.name)
        quote_traces = [names for names in by_trace.values() if "quote_streamer FlushQuotes" in names]
        assert quote_traces and all("risk_guard Proposal" in names for names in quote_traces)
        assert "over OTLP grpc to http://127.0.0.1:" in daemon.log()
        assert "on by OTEL_TRACES_EXPORTER=otlp" in daemon.log()
        assert receiver.spans.services == {"stockade-e2e"}
    finally:
        daemon.stop()
        receiver.stop()


def test_http_by_settings_exports_sampled_quote_traces(short_dir):
    receiver = HttpReceiver()
    endpoint = f"http://127.0.0.1:{receiver.server_port}"
    settings = settings_text(
        None,
        voter=TRADE_OFTEN,
        telemetry={"enabled": True, "protocol": "http/protobuf", "otlp_endpoint": endpoint, "quote_sample_ratio": 1.0},
    )
    daemon = DaemonProcess(short_dir / "data", settings)
    try:
        daemon.wait_ready()
        chain = wait_for(receiver.spans.fill_chain, 90, 0.25, "a fill whose trace reaches back to the quote")
        check_fill_chain(chain)
        assert not any(attrs(s).get("stockade.sampling") for s in chain)  # sampled at the head
        # Ratio 1: quote traces that went nowhere are exported too.
        wait_for(
            lambda: any(
                s.name.startswith("analyzer:") and not _reaches_risk_guard(receiver.spans, s)
                for s in receiver.spans.all()
            ),
            30,
            0.25,
            "a quote trace that stopped short",
        )
        assert receiver.spans.services == {"stockade"}
    finally:
        assert daemon.stop() == 0
        receiver.stop()


def _reaches_risk_guard(spans: Spans, quote_span) -> bool:
    return any(s.trace_id == quote_span.trace_id and s.name == "risk_guard Proposal" for s in spans.all())
