"""The control socket: how an operator (or `run.py ctl`) steers the daemon.

A Unix stream socket, mode 0600 (or 0660 with a configured group), peers
checked with SO_PEERCRED (the daemon's own uid, root, or a member of that
group). Newline-delimited JSON, validated against a msgspec schema: a request
``{"cmd": "...", "args": {...}}`` gets one reply line, ``{"ok": true,
"result": ...}`` or ``{"ok": false, "error": "..."}``. Nothing a client sends
(bad JSON, oversize lines, unknown commands, a handler that raises) stops the
server: the kill switch must stay reachable.

Every request, and every refused connection, is audited: one INFO log line
and one `ControlAuditRecord` (who by SO_PEERCRED, command, redacted args,
outcome) handed to the `audit` callback, which the daemon stores.

Threads: one accepts, at most `max_connections` serve connections; a
connection idle longer than `read_timeout_s` is closed.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import logging
import os
import pwd
import re
import selectors
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from stockade.codecs.records import ControlAuditRecord
from stockade.config.paths import ensure_private_dir
from stockade.ops import telemetry

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]
AuditSink = Callable[[ControlAuditRecord], None]

# sun_path is 108 bytes on Linux, NUL included.
MAX_SOCKET_PATH = 107
_UCRED = struct.Struct("3i")  # pid, uid, gid
_MISSING: Any = object()


class ControlError(RuntimeError):
    """The control server cannot start (another daemon is live, bad path...)."""


# Commands that change nothing: their audit records skip the disk sync (a
# dashboard may poll status every second); the next durable commit syncs them.
READ_ONLY = ("status", "help", "pending", "alerts", "audit")
# Argument names whose values are never recorded, whatever they hold.
_SECRET_ARG = re.compile(r"(?i)secret|password|passwd|token|api[_-]?key|key[_-]?id|credential|webhook")
AUDIT_ARGS_MAX = 500


class CommandError(Exception):
    """Raised by a handler for an expected refusal or bad arguments.

    The message goes to the client as is, and is logged without a traceback.
    """


# ---- argument helpers for handlers ------------------------------------------------


def arg_str(args: dict[str, Any], key: str, default: Any = _MISSING) -> str:
    """`args[key]` as a non-empty string, or CommandError."""
    value = args.get(key, default)
    if value is _MISSING:
        raise CommandError(f"missing argument {key!r}")
    if value is default:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # `ctl approve 12` may arrive as a number
    if not isinstance(value, str) or not value:
        raise CommandError(f"argument {key!r} must be a non-empty string")
    return value


def arg_float(args: dict[str, Any], key: str, default: Any = _MISSING, *, minimum: float | None = None) -> float:
    """`args[key]` as a finite float (numbers or numeric strings), or CommandError."""
    value = args.get(key, default)
    if value is _MISSING:
        raise CommandError(f"missing argument {key!r}")
    if value is default:
        return value
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise CommandError(f"argument {key!r} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise CommandError(f"argument {key!r} must be finite")
    if minimum is not None and number < minimum:
        raise CommandError(f"argument {key!r} must be >= {minimum:g}")
    return number


def arg_int(args: dict[str, Any], key: str, default: Any = _MISSING, *, minimum: int | None = None) -> int:
    """`args[key]` as an int (integral numbers or strings), or CommandError."""
    number = arg_float(args, key, default, minimum=minimum)
    if number is default:
        return number
    if not float(number).is_integer():
        raise CommandError(f"argument {key!r} must be a whole number")
    return int(number)


# ---- the server ---------------------------------------------------------------------


class _Command(msgspec.Struct, frozen=True):
    handler: Handler
    help: str
    usage: str


class _Request(msgspec.Struct, forbid_unknown_fields=False):
    cmd: str
    args: dict[str, Any] = {}


class ControlServer:
    """Serve registered commands on a Unix socket at `path`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_connections: int = 8,
        read_timeout_s: float = 30.0,
        max_request_bytes: int = 64 * 1024,
        allowed_uids: set[int] | None = None,
        group: str = "",
        audit: AuditSink | None = None,
    ) -> None:
        self.path = Path(path)
        self.group = group
        self.gid: int | None = None
        if group:
            try:
                self.gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ControlError(f"control.group {group!r}: no such group") from None
        self._audit = audit
        self.max_connections = max_connections
        self.read_timeout_s = read_timeout_s
        self.max_request_bytes = max_request_bytes
        self.allowed_uids = allowed_uids if allowed_uids is not None else {os.geteuid(), 0}
        self._commands: dict[str, _Command] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._listener: socket.socket | None = None
        self._lock_fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._wake_r = self._wake_w = -1
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.register("help", self._help, "list the commands")

    @classmethod
    def from_settings(
        cls, control_settings: Any, path: str | os.PathLike[str], audit: AuditSink | None = None
    ) -> ControlServer:
        """A server configured from the `[control]` settings section."""
        return cls(
            path,
            max_connections=control_settings.max_connections,
            read_timeout_s=control_settings.read_timeout_s,
            max_request_bytes=control_settings.max_request_bytes,
            group=control_settings.group,
            audit=audit,
        )

    # -- commands --

    def register(self, name: str, handler: Handler, help: str = "", *, usage: str = "") -> None:
        """Add command `name`: `handler(args) -> JSON-able result`; raise CommandError to refuse."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"bad command name {name!r}")
        with self._lock:
            self._commands[name] = _Command(handler, help, usage or name)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._commands.pop(name, None)

    def _help(self, args: dict[str, Any]) -> dict[str, str]:
        with self._lock:
            cmds = dict(self._commands)
        return {name: f"{c.usage}: {c.help}" if c.help else c.usage for name, c in sorted(cmds.items())}

    def dispatch(self, line: bytes) -> dict[str, Any]:
        """Handle one request line; always returns a reply, never raises."""
        req = self._decode(line)
        return req if isinstance(req, dict) else self._run(req)

    @staticmethod
    def _decode(line: bytes) -> _Request | dict[str, Any]:
        """The request, or the error reply for a line that is not one."""
        try:
            return msgspec.json.decode(line, type=_Request)
        except msgspec.ValidationError as exc:
            return {"ok": False, "error": f'bad request: {exc} (want {{"cmd": ..., "args": {{...}}}})'}
        except msgspec.DecodeError as exc:
            return {"ok": False, "error": f"malformed JSON: {exc}"}

    def _run(self, req: _Request) -> dict[str, Any]:
        with self._lock:
            command = self._commands.get(req.cmd)
        if command is None:
            return {"ok": False, "error": f"unknown command {req.cmd!r} (try: help)"}
        # A control command is a trace of its own: always sampled, and the
        # messages it sends (halt, kill) carry its traceparent.
        with telemetry.root_span(f"control {req.cmd}", {"stockade.control.command": req.cmd}) as span:
            try:
                result = command.handler(req.args)
            except CommandError as exc:
                log.warning("control: %s refused: %s", req.cmd, exc)
                span.set_attribute("stockade.control.error", str(exc))
                return {"ok": False, "error": str(exc)}
            except Exception as exc:
                log.exception("control: %s failed", req.cmd)
                span.record_exception(exc)
                return {"ok": False, "error": _redact(f"{req.cmd} failed: {type(exc).__name__}: {exc}")}
        return {"ok": True, "result": result}

    def call(self, cmd: str, args: dict[str, Any], *, via: str) -> dict[str, Any]:
        """Run `cmd` for an in-process front end (the web dashboard) exactly as a
        socket request runs: same handlers, same reply shape, same audit trail
        (uid/pid/gid -1, `via` naming the caller). Never raises."""
        started = time.monotonic()
        reply = self._run(_Request(cmd=cmd, args=args))
        ok = bool(reply.get("ok"))
        self._record(
            -1,
            -1,
            -1,
            cmd[:64],
            audit_args(args),
            ok,
            "" if ok else str(reply.get("error", "")),
            (time.monotonic() - started) * 1000,
            via=via,
        )
        return reply

    def _encode(self, reply: dict[str, Any]) -> bytes:
        try:
            return msgspec.json.encode(reply) + b"\n"
        except (TypeError, ValueError, OverflowError) as exc:
            log.error("control: reply not JSON-serialisable: %s", exc)
            return msgspec.json.encode({"ok": False, "error": f"reply not JSON-serialisable: {exc}"}) + b"\n"

    # -- lifecycle --

    def start(self) -> None:
        """Bind the socket (0600 from the first instant) and start serving."""
        if self._accept_thread is not None:
            raise ControlError("control server already started")
        path = self.path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ControlError(
                f"control socket path too long for AF_UNIX ({len(os.fsencode(path))} > {MAX_SOCKET_PATH} bytes): {path}"
            )
        ensure_private_dir(path.parent)
        self._take_lock()
        try:
            self._clear_stale(path)
            self._listener = self._bind_private(path, self.gid)
            st = os.stat(path)
            self._inode = (st.st_dev, st.st_ino)
        except BaseException:
            self._release_lock()
            raise
        self._wake_r, self._wake_w = os.pipe()
        self._stopping.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="control-accept", daemon=True)
        self._accept_thread.start()
        log.info("control socket listening on %s", path)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop accepting, close connections, remove the socket; True if every thread ended in time."""
        if self._accept_thread is None:
            return True
        deadline = time.monotonic() + timeout
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        clean = not self._accept_thread.is_alive()
        if self._listener is not None:
            self._listener.close()
        self._remove_own_socket()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
            except OSError:
                pass
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
            clean = clean and not t.is_alive()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._release_lock()
        self._accept_thread = None
        return clean

    def _take_lock(self) -> None:
        # The lock file closes the race of two daemons starting at once (both
        # finding no socket); it is never unlinked, as unlinking a lock file
        # lets two processes lock two different inodes.
        lock_path = f"{self.path}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ControlError(f"another stockade daemon is running (it holds {lock_path})") from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    @staticmethod
    def _clear_stale(path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{path} exists and is not a socket; not removing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("removing stale control socket %s (no daemon answers)", path)
            path.unlink(missing_ok=True)
            return
        except OSError as exc:
            raise ControlError(f"cannot probe existing control socket {path}: {exc}") from None
        finally:
            probe.close()
        raise ControlError(f"another stockade daemon is running (it answers on {path})")

    @staticmethod
    def _bind_private(path: Path, gid: int | None = None) -> socket.socket:
        # bind() creates the file with 0777 & ~umask. Changing the umask is
        # process-wide (another thread's mkdir in that instant would get a
        # directory without x bits), so instead bind inside a fresh 0700
        # directory that nobody else can enter, chmod, then rename into
        # place: the socket is never reachable by path with a wider mode.
        tmp_dir = tempfile.mkdtemp(prefix=".c", dir=path.parent)  # mkdtemp: mode 0700
        tmp_path = os.path.join(tmp_dir, "s")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(tmp_path)
            if gid is not None:
                os.chown(tmp_path, -1, gid)  # allowed: the daemon's user must be in the group
                os.chmod(tmp_path, 0o660)
            else:
                os.chmod(tmp_path, 0o600)
            sock.listen(16)
            os.rename(tmp_path, path)
        except BaseException:
            sock.close()
            try:
                os.unlink(tmp_path)
            except OSError:
                pass
            raise
        finally:
            os.rmdir(tmp_dir)
        return sock

    def _remove_own_socket(self) -> None:
        # Only our own inode: a newer daemon may already have replaced it.
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._inode:
            self.path.unlink(missing_ok=True)

    # -- serving --

    def _accept_loop(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self._listener and not self._stopping.is_set():
                        self._accept_one()
        finally:
            sel.close()

    def _accept_one(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except OSError as exc:
            log.error("control: accept failed: %s", exc)
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self._stopping.wait(0.1)  # out of resources: do not spin
            return
        try:
            pid, uid, gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        except OSError as exc:
            log.warning("control: cannot read peer credentials: %s", exc)
            conn.close()
            return
        if not self.peer_allowed(uid, gid):
            self._record(pid, uid, gid, "(connect)", "", False, "permission denied", 0.0)
            self._reply_and_close(conn, {"ok": False, "error": "permission denied"})
            return
        if not self._slots.acquire(blocking=False):
            self._record(
                pid,
                uid,
                gid,
                "(connect)",
                "",
                False,
                f"busy: too many control connections (max {self.max_connections})",
                0.0,
            )
            self._reply_and_close(conn, {"ok": False, "error": "busy: too many control connections"})
            return
        t = threading.Thread(target=self._serve, args=(conn, pid, uid, gid), name=f"control-conn-{pid}", daemon=True)
        with self._lock:
            self._conns.add(conn)
            self._threads.add(t)
        t.start()

    def _reply_and_close(self, conn: socket.socket, reply: dict[str, Any]) -> None:
        try:
            conn.settimeout(1.0)
            conn.sendall(self._encode(reply))
        except OSError:
            pass
        finally:
            conn.close()

    def peer_allowed(self, uid: int, gid: int) -> bool:
        """Our own uid, root, or (with control.group) a member of the group."""
        if uid in self.allowed_uids:
            return True
        if self.gid is None:
            return False
        if gid == self.gid:
            return True
        try:
            return self.gid in os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
        except (KeyError, OSError):
            return False

    def _refuse_oversize(self, conn: socket.socket, pid: int, uid: int, gid: int) -> None:
        """Audit and answer a request longer than `max_request_bytes` (the connection then ends)."""
        error = f"request too large (max {self.max_request_bytes} bytes)"
        self._record(pid, uid, gid, "(oversize)", "", False, error, 0.0)
        conn.sendall(self._encode({"ok": False, "error": error}))

    def _serve(self, conn: socket.socket, pid: int, uid: int, gid: int) -> None:
        try:
            conn.settimeout(self.read_timeout_s)
            buf = bytearray()
            while not self._stopping.is_set():
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > self.max_request_bytes:
                        self._refuse_oversize(conn, pid, uid, gid)
                        return
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        log.info("control: closing idle connection from pid %d", pid)
                        return
                    if not chunk:
                        # A client that half-closes after a request without a newline still gets its reply.
                        if buf.strip():
                            conn.sendall(self._handle(bytes(buf), pid, uid, gid))
                        return
                    buf += chunk
                    continue
                line, buf = bytes(buf[:nl]), buf[nl + 1 :]
                if len(line) > self.max_request_bytes:
                    self._refuse_oversize(conn, pid, uid, gid)
                    return
                if line.strip():
                    conn.sendall(self._handle(line, pid, uid, gid))
        except OSError as exc:
            if not self._stopping.is_set():
                log.info("control: connection from pid %d ended: %s", pid, exc)
        except Exception:
            log.exception("control: connection from pid %d crashed", pid)
        finally:
            conn.close()
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())
            self._slots.release()

    def _handle(self, line: bytes, pid: int, uid: int, gid: int) -> bytes:
        started = time.monotonic()
        req = self._decode(line)
        reply = req if isinstance(req, dict) else self._run(req)
        ok = bool(reply.get("ok"))
        if isinstance(req, dict):
            cmd, args = "(malformed)", _redact(line[:200].decode("utf-8", "replace"))
        else:
            cmd, args = _redact(req.cmd)[:64], audit_args(req.args)  # a key pasted as the command too
        self._record(
            pid, uid, gid, cmd, args, ok, "" if ok else str(reply.get("error", "")), (time.monotonic() - started) * 1000
        )
        return self._encode(reply)

    def _record(
        self, pid: int, uid: int, gid: int, cmd: str, args: str, ok: bool, error: str, duration_ms: float, via: str = ""
    ) -> None:
        """The audit trail: one log line and one record for the sink. Never raises."""
        error = _redact(error)[:AUDIT_ARGS_MAX]
        who = via or f"uid {uid} pid {pid}"
        log.log(
            logging.INFO if ok else logging.WARNING,
            "control audit: %s: %s %s -> %s",
            who,
            cmd,
            args or "{}",
            "ok" if ok else f"error: {error}",
        )
        if self._audit is None:
            return
        record = ControlAuditRecord(
            ts_ns=time.time_ns(),
            uid=uid,
            pid=pid,
            gid=gid,
            cmd=cmd,
            args=args,
            ok=ok,
            error=error,
            duration_ms=round(duration_ms, 3),
            via=via,
        )
        try:
            self._audit(record)
        except Exception:
            # The command has run (a kill must not wait on storage); say loudly the trail has a hole.
            log.exception("control: could not store the audit record of %s from uid %d", cmd, uid)


def _redact(text: str) -> str:
    from stockade.broker.rest import redact  # lazy: keeps `ctl` free of alpaca-py imports

    return redact(text)


def audit_args(args: dict[str, Any]) -> str:
    """`args` as JSON for the audit trail: secret-named values dropped, known secrets redacted, cut short."""
    clean = {k: "***" if _SECRET_ARG.search(str(k)) else v for k, v in args.items()}
    text = _redact(msgspec.json.encode(clean).decode())
    return text if len(text) <= AUDIT_ARGS_MAX else text[: AUDIT_ARGS_MAX - 3] + "..."
