"""One quote that leads to an order is one trace: the daemon exports OTLP/HTTP
to a collector in this test, and the order's span chain reaches back to the
quote through every actor on the way."""

from __future__ import annotations

import http.server
import threading

from daemon_harness import DaemonProcess, settings_text
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from waiting import wait_for


class Collector(http.server.ThreadingHTTPServer):
    """The OTLP/HTTP traces endpoint (protobuf), keeping every span it gets."""

    def __init__(self) -> None:
        self.spans: dict[bytes, object] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                with server.lock:
                    for rs in request.resource_spans:
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                server.spans[span.span_id] = span
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def chain(self, span) -> list[str]:
        """Span names from `span` up through its parents, as far as they were exported."""
        names = [span.name]
        with self.lock:
            while span.parent_span_id and span.parent_span_id in self.spans:
                span = self.spans[span.parent_span_id]
                names.append(span.name)
        return names

    def order_chains(self) -> list[list[str]]:
        with self.lock:
            orders = [s for s in self.spans.values() if s.name == "order_manager OrderIntent"]
        return [self.chain(s) for s in orders]


def test_a_quote_to_order_trace_spans_every_actor(short_dir):
    collector = Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    settings = settings_text(None, telemetry={"enabled": True, "otlp_endpoint": endpoint, "quote_sample_ratio": 1.0})
    daemon = DaemonProcess(short_dir / "data", settings)
    try:
        daemon.wait_ready()

        def whole_chain():
            for chain in collector.order_chains():
                if chain[-1].startswith("quote_streamer") or any(n.startswith("analyzer:") for n in chain):
                    return chain
            return None

        chain = wait_for(whole_chain, 60, 0.25, "an order trace reaching back to the quote")
        assert chain[:3] == ["order_manager OrderIntent", "risk_guard Proposal", "ensemble_voter Vote"], chain
        assert chain[3].startswith("analyzer:") and chain[3].endswith(" Quote"), chain
    finally:
        assert daemon.stop() == 0
        collector.shutdown()
