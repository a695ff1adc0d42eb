"""A real OTLP/HTTP traces endpoint for tests that check what the daemon exports."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable


class OtlpHttpReceiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP endpoint on a free loopback port, serving on its own thread.

    Each POST's raw headers and body go to `on_request`; the answer is an
    empty 200 (protobuf), as a collector that accepted everything. The port
    is `server_port`.
    """

    def __init__(self, on_request: Callable[[bytes, bytes], None]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                on_request(bytes(self.headers), body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)
