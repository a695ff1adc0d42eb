"""What both Alpaca websocket clients share: an asyncio loop in a thread, a
reconnect loop with backoff, bounded stop, status events and counters.

A subclass implements one connection's protocol in `_session(ws)` and ends it
by raising `Disconnect` (or by the socket closing); the loop here decides how
long to wait before the next attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from stockade.broker.backoff import Backoff
from stockade.broker.rest import redact
from stockade.codecs.messages import StreamStatus

EventKind = Literal[
    "connecting",
    "connected",
    "authenticated",
    "subscribed",
    "listening",
    "error",
    "auth_failed",
    "disconnected",
    "stopped",
]

_UP_KINDS = frozenset({"connected", "authenticated", "subscribed", "listening"})


class StreamEvent(msgspec.Struct, frozen=True):
    """A status change of one stream connection.

    `fatal` marks conditions a reconnect will not fix by itself (bad keys,
    missing data entitlement, symbol limit): the owner should alert a human.
    """

    stream: str
    kind: EventKind
    detail: str = ""
    code: int | None = None
    fatal: bool = False
    ts_ns: int = 0

    def to_status(self) -> StreamStatus:
        """The actor message form (`codecs.messages.StreamStatus`)."""
        text = f"{self.kind}: {self.detail}" if self.detail else self.kind
        if self.code is not None:
            text += f" (code {self.code})"
        return StreamStatus(connected=self.kind in _UP_KINDS, detail=text)


class Disconnect(Exception):
    """Ends the current connection; `extra_delay_s` is added to the backoff draw."""

    def __init__(
        self, reason: str, *, code: int | None = None, extra_delay_s: float = 0.0, fatal: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.extra_delay_s = extra_delay_s
        self.fatal = fatal


class ReconnectingStream:
    """Base of the websocket clients. Call `start()` once and `stop()` once."""

    stream_name = "stream"

    def __init__(
        self,
        url: str,
        *,
        on_event: Callable[[StreamEvent], None] | None = None,
        connect_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        ping_interval_s: float | None = 10.0,
        ping_timeout_s: float | None = 20.0,
        max_message_bytes: int = 4 * 1024 * 1024,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        auth_failure_delay_s: float = 60.0,
        limit_delay_s: float = 5.0,
        additional_headers: dict[str, str] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if connect_timeout_s <= 0 or close_timeout_s <= 0:
            raise ValueError("connect_timeout_s and close_timeout_s must be > 0")
        self.url = url
        self._on_event = on_event
        self.connect_timeout_s = connect_timeout_s
        self.close_timeout_s = close_timeout_s
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.max_message_bytes = max_message_bytes
        self.backoff = backoff if backoff is not None else Backoff(rng=rng)
        self.auth_failure_delay_s = auth_failure_delay_s
        self.limit_delay_s = limit_delay_s
        self._headers = dict(additional_headers or {})
        self.log = logger or logging.getLogger(type(self).__module__)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task | None = None
        self._stop_requested = False
        self._started = False
        self._ws: ClientConnection | None = None
        self._log_counts: dict[str, int] = {}

        # Counters: written only by the stream thread, read by anyone.
        self.frames = 0
        self.malformed_frames = 0
        self.connects = 0  # websocket handshakes that succeeded
        self.reconnects = 0  # times the loop went round for another attempt
        self.callback_errors = 0
        self.last_message_ns = 0
        self.last_disconnect = ""
        self.last_error_code: int | None = None
        self.state: EventKind = "stopped"

    # ---- lifecycle (any thread) -------------------------------------------------

    def start(self) -> None:
        """Start the stream thread; returns at once."""
        if self._started:
            raise RuntimeError(f"{self.stream_name} already started")
        self._started = True
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._thread_main, name=f"stockade-{self.stream_name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop and join the thread within `timeout` s; True when it ended.

        Cancels whatever the loop is doing (connecting, backing off, reading);
        closing the socket is bounded by `close_timeout_s`.
        """
        self._stop_requested = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return True
        try:
            loop.call_soon_threadsafe(self._cancel_main)
        except RuntimeError:
            pass  # loop already closed: the thread is finishing or done
        if thread is threading.current_thread():
            return False  # called from a callback: cannot join ourselves
        thread.join(timeout)
        if thread.is_alive():
            self.log.error("%s did not stop within %.1fs", self.stream_name, timeout)
            return False
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict:
        """A snapshot of the counters."""
        return {
            "state": self.state,
            "frames": self.frames,
            "malformed_frames": self.malformed_frames,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "callback_errors": self.callback_errors,
            "last_message_ns": self.last_message_ns,
            "last_disconnect": self.last_disconnect,
            "last_error_code": self.last_error_code,
            "backoff_attempts": self.backoff.attempts,
        }

    # ---- the loop (stream thread) --------------------------------------------------

    def _thread_main(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException:  # never let the thread die silently
            self.log.exception("%s loop crashed", self.stream_name)
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=self.close_timeout_s))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _cancel_main(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _main(self) -> None:
        # stop() may have run before this task existed; the flag covers that
        # window, the cancel covers everything after.
        self._task = asyncio.current_task()
        try:
            while not self._stop_requested:
                disc = await self._connect_and_run()
                if self._stop_requested:
                    break
                delay = disc.extra_delay_s + self.backoff.next_delay()
                self.reconnects += 1
                self.last_disconnect = disc.reason
                if disc.code is not None:
                    self.last_error_code = disc.code
                self._emit("disconnected", f"{disc.reason}; retry in {delay:.2f}s", code=disc.code, fatal=disc.fatal)
                log = self.log.error if disc.fatal else self.log.warning
                log("%s disconnected: %s; reconnecting in %.2fs", self.stream_name, redact(disc.reason), delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            pass
        finally:
            self._emit("stopped", "stop requested" if self._stop_requested else "loop ended")

    async def _connect_and_run(self) -> Disconnect:
        ws: ClientConnection | None = None
        try:
            self._emit("connecting", redact(self.url))
            ws = await connect(
                self.url,
                open_timeout=self.connect_timeout_s,
                close_timeout=self.close_timeout_s,
                ping_interval=self.ping_interval_s,
                ping_timeout=self.ping_timeout_s,
                max_size=self.max_message_bytes,
                additional_headers=self._headers or None,
                user_agent_header="stockade",
            )
            self.connects += 1
            self._ws = ws
            await self._session(ws)
            return Disconnect("session ended")
        except Disconnect as d:
            return d
        except ConnectionClosed as exc:
            return Disconnect(f"connection closed: {_close_detail(exc)}")
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                return Disconnect(
                    f"handshake refused: HTTP {status}",
                    code=status,
                    extra_delay_s=self.auth_failure_delay_s,
                    fatal=True,
                )
            if status == 429:
                return Disconnect(
                    "handshake refused: HTTP 429 (too many requests)", code=status, extra_delay_s=self.limit_delay_s
                )
            return Disconnect(f"handshake refused: HTTP {status}", code=status)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            return Disconnect(f"connect failed: {type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug in a session must not kill the stream
            self.log.exception("%s session error", self.stream_name)
            return Disconnect(f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            self._ws = None
            self.backoff.mark_down()
            if ws is not None:
                try:
                    await ws.close()  # bounded by close_timeout
                except asyncio.CancelledError:
                    _abort(ws)  # stop() arrived mid-close: do not leak the socket
                    raise
                except Exception:
                    _abort(ws)

    async def _session(self, ws: ClientConnection) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- helpers for sessions ---------------------------------------------------

    async def _recv(self, ws: ClientConnection, timeout: float | None, what: str) -> str | bytes:
        """One frame, or `TimeoutError` after `timeout` s (None waits forever)."""
        if timeout is None:
            frame = await ws.recv()
        else:
            async with asyncio.timeout(timeout):
                frame = await ws.recv()
        self.frames += 1
        self.last_message_ns = time.time_ns()
        return frame

    async def _recv_before(self, ws: ClientConnection, deadline: float, what: str) -> str | bytes:
        """One frame before `deadline` (monotonic s), or `Disconnect` saying
        what was being waited for."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Disconnect(f"timed out waiting for '{what}'")
        try:
            return await self._recv(ws, remaining, what)
        except TimeoutError:
            raise Disconnect(f"timed out waiting for '{what}'") from None

    def _note_malformed(self, frame: str | bytes, exc: Exception, excerpt: Callable[[str | bytes], object]) -> None:
        """Count a frame that could not be decoded and log (rate-limited) its
        start, as `excerpt(frame)` redacted; the excerpt is only built when
        the line is actually logged."""
        self.malformed_frames += 1
        self._log_limited(
            "malformed", "malformed frame ignored: %s; frame starts %r", lazy_args=lambda: (exc, redact(excerpt(frame)))
        )

    def _call(self, key: str, fn: Callable[..., Any], *args: Any, msg: str = "") -> None:
        """`fn(*args)`; an exception is counted in `callback_errors` and logged
        (rate-limited under `key`, as "`msg`" or "`key` raised"), never raised."""
        try:
            fn(*args)
        except Exception:
            self.callback_errors += 1
            self._log_limited(key, msg or f"{key} raised", exc_info=True)

    def _emit(self, kind: EventKind, detail: str = "", *, code: int | None = None, fatal: bool = False) -> None:
        if kind != "error":  # an error frame alone does not change the connection state
            self.state = kind
        if self._on_event is None:
            return
        # Details can quote server text; keep credentials out of whatever
        # the owner does with them (logs, alerts).
        event = StreamEvent(self.stream_name, kind, redact(detail) if detail else "", code, fatal, time.time_ns())
        self._call("on_event", self._on_event, event, msg="on_event callback raised")

    def _log_limited(
        self,
        key: str,
        msg: str,
        *args,
        level: int = logging.WARNING,
        exc_info: bool = False,
        lazy_args: Callable[[], tuple] | None = None,
    ) -> None:
        """Log the first 10 occurrences of `key`, then every 1000th: a bad feed
        must not turn the log into the bottleneck. `lazy_args`, when given,
        supplies the arguments only for occurrences that are logged."""
        n = self._log_counts.get(key, 0) + 1
        self._log_counts[key] = n
        if n <= 10 or n % 1000 == 0:
            if lazy_args is not None:
                args = lazy_args()
            template = f"%s: {msg} [#%d]"  # msg is itself a %-template: its args follow the name
            self.log.log(level, template, self.stream_name, *args, n, exc_info=exc_info)


def _abort(ws: ClientConnection) -> None:
    transport = getattr(ws, "transport", None)
    if transport is not None:
        transport.abort()


def _close_detail(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return "no close frame (connection lost)"
    return f"code {frame.code}" + (f" {frame.reason}" if frame.reason else "")
