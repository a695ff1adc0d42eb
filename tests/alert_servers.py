"""Real local receivers for the alert tests (ops and e2e): an HTTP webhook receiver and an SMTP server.

`Receiver` is http.server in a thread; it can answer with scripted status
codes and hold requests on an event (a hanging webhook). `SmtpServer` is
aiosmtpd's SMTP protocol on an asyncio loop in a thread, with STARTTLS (or
implicit TLS) from a trustme certificate and LOGIN/PLAIN authentication.
Both bind port 0.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import ssl
import threading
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Receiver:
    """An HTTP server recording every POST: (path, headers, decoded JSON body)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        self.statuses = list(statuses or [])  # consumed one per request; then 200
        self.hold: threading.Event | None = None  # when set to an Event: requests wait on it
        self.arrived = threading.Event()
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hold = recv.hold
                recv.arrived.set()
                if hold is not None:
                    hold.wait(10)
                status = recv.statuses.pop(0) if recv.statuses else 200
                recv.posts.append((self.path, dict(self.headers), json.loads(body)))
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out while this request was held

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def bodies(self) -> list[Any]:
        return [body for _, _, body in self.posts]

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Tls:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost, and the CA file for clients."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = directory / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        return ctx


class SmtpServer:
    """aiosmtpd speaking real SMTP on 127.0.0.1:<free port>.

    `mode`: "starttls" (STARTTLS required before anything else), "tls"
    (implicit TLS) or "plain" (no TLS offered). AUTH is accepted only over
    TLS (aiosmtpd's default) and only for `users`.
    """

    def __init__(self, tls: Tls | None, mode: str = "starttls", users: dict[str, str] | None = None) -> None:
        self.messages: list[Any] = []  # aiosmtpd Envelopes
        self.logins: list[tuple[str, bool, bool]] = []  # (login, accepted, over TLS)
        self.users = dict(users or {})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="smtp-server", daemon=True)
        self.thread.start()
        ctx = tls.server_context() if tls is not None else None
        starttls_ctx = ctx if mode == "starttls" else None
        implicit_ctx = ctx if mode == "tls" else None

        def factory() -> SMTP:
            # With implicit TLS aiosmtpd does not know the socket is encrypted, so
            # its AUTH-only-over-TLS rule is off there; the TLS check in
            # `_authenticate` (recorded in `logins`) still holds the client to it.
            return SMTP(
                self,
                hostname="mail.test",
                tls_context=starttls_ctx,
                require_starttls=starttls_ctx is not None,
                authenticator=self._authenticate,
                auth_require_tls=mode != "tls",
                loop=self.loop,
            )

        future = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(factory, "127.0.0.1", 0, ssl=implicit_ctx), self.loop
        )
        self.server = future.result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd handler hook
        self.messages.append(envelope)
        return "250 OK queued"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        over_tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        ok = self.users.get(login) == password and over_tls
        self.logins.append((login, ok, over_tls))
        return AuthResult(success=ok, handled=False)

    def close(self) -> None:
        async def shutdown() -> None:  # asyncio servers are closed from their own loop
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
