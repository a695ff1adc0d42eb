"""Log records to systemd's journal in its native protocol, with stockade's
fields as journal fields: `journalctl -u stockade TRACE_ID=...` finds the
lines of one trace.

The protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL) is one AF_UNIX datagram
per entry, each field `NAME=value\\n`, or, for a value with a newline (a
traceback), `NAME\\n`, its length as a little-endian 64-bit integer, the
value and `\\n`. An entry too big for a datagram goes as a sealed memfd
passed with SCM_RIGHTS and an empty payload. It is written here rather than
taken from `systemd-python`, which builds against libsystemd's C headers at
install time and would break the one-line install; the encoder is a dozen
lines.

Sending never stalls an actor for long and never loses a record: the
socket is non-blocking; when journald's queue is full the handler waits for
it at most `CONGESTED_WAIT_S`, and not again for `CONGESTED_FOR_S` after a
wait that timed out; a record the journal does not take (socket gone, queue
still full) is written to stderr instead, which under systemd is the
journal's stream anyway (the first time, with a line saying why).

Fields: MESSAGE (one printable line, as in the text format), PRIORITY
(syslog), SYSLOG_IDENTIFIER, LOGGER, THREAD_NAME, CODE_FILE, CODE_LINE,
CODE_FUNC, and when known TRACE_ID, SPAN_ID, ACTOR, SYMBOL,
CLIENT_ORDER_ID and EXCEPTION_TEXT (the traceback, several lines: the
binary-safe form; the name systemd-python uses).
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import select
import socket
import stat
import struct
import time
from collections.abc import Iterable, Mapping

from stockade.ops.logs.context import CONTEXT_FIELDS
from stockade.ops.logs.format import printable, printable_lines

DEFAULT_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "stockade"

CONGESTED_WAIT_S = 0.05
CONGESTED_FOR_S = 1.0

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def stderr_is_journal(env: Mapping[str, str], fd: int = 2) -> bool:
    """True when `fd` is the journal stream systemd gave us: `$JOURNAL_STREAM`
    is its `device:inode` (sd_journal_stream_fd(3); systemd's own rule for
    switching a service to the native protocol)."""
    dev, sep, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(fd)
        return st.st_dev == int(dev) and st.st_ino == int(ino)
    except (OSError, ValueError):
        return False


def is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def encode(fields: Iterable[tuple[str, str]]) -> bytes:
    """One journal entry in the native protocol (field names are trusted: ours)."""
    out = bytearray()
    for name, value in fields:
        data = value.encode("utf-8", "backslashreplace")
        if b"\n" in data:
            out += name.encode("ascii") + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode("ascii") + b"=" + data + b"\n"
    return bytes(out)


def record_fields(
    record: logging.LogRecord, formatter: logging.Formatter, identifier: str = IDENTIFIER
) -> list[tuple[str, str]]:
    """The journal fields of `record` (context fields stamped by `log_context`)."""
    fields = [
        ("MESSAGE", printable(record.getMessage())),
        ("PRIORITY", str(_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3))),
        ("SYSLOG_IDENTIFIER", identifier),
        ("LOGGER", record.name),
        ("THREAD_NAME", printable(record.threadName or "")),
        ("CODE_FILE", record.pathname),
        ("CODE_LINE", str(record.lineno)),
        ("CODE_FUNC", record.funcName),
    ]
    values = record.__dict__
    for key in CONTEXT_FIELDS:
        value = values.get(key)
        if value:
            fields.append((key.upper(), printable(str(value))))
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        fields.append(("EXCEPTION_TEXT", "\n".join(printable_lines(record.exc_text))))
    if record.stack_info:
        fields.append(("STACK_INFO", "\n".join(printable_lines(record.stack_info))))
    return fields


class JournalHandler(logging.Handler):
    """Sends each record to the journal socket at `path`; `fallback` writes what it cannot."""

    def __init__(self, path: str, fallback: logging.Handler, identifier: str = IDENTIFIER) -> None:
        super().__init__()
        self.path = path
        self.fallback = fallback
        self.identifier = identifier
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)  # a slow journald must not stall an actor's handler
        self.sent = 0
        self.fell_back = 0
        self._formatter = logging.Formatter()
        self._congested_until = 0.0
        self._connected = False
        # poll, not select: select() refuses a descriptor numbered 1024 or
        # more, which a daemon with many sockets and files open can be given.
        self._writable = select.poll()
        self._writable.register(self.sock, select.POLLOUT)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(encode(record_fields(record, self._formatter, self.identifier)))
            self.sent += 1
        except Exception as exc:  # whatever the journal says, the record is written elsewhere
            self.fell_back += 1
            if self.fell_back == 1:
                self.fallback.handle(
                    logging.makeLogRecord(
                        {
                            "name": __name__,
                            "levelno": logging.WARNING,
                            "levelname": "WARNING",
                            "msg": "journal at %s refused a record (%s): such records go to stderr, without journal fields",
                            "args": (self.path, exc),
                        }
                    )
                )
            self.fallback.handle(record)

    def _send(self, payload: bytes) -> None:
        if not self._connected:
            # Connected, so that poll() tells when journald's queue has room.
            self.sock.connect(self.path)
            self._connected = True
        try:
            self.sock.send(payload)
        except BlockingIOError:
            # journald's queue is full: wait a little for it, unless it was slow a moment ago.
            now = time.monotonic()
            if now < self._congested_until:
                raise
            if not self._writable.poll(CONGESTED_WAIT_S * 1000):
                self._congested_until = now + CONGESTED_FOR_S
                raise
            self.sock.send(payload)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                self._connected = False  # journald restarted, or gone: connect again next time
                raise
            self._send_memfd(payload)

    def _send_memfd(self, payload: bytes) -> None:
        fd = os.memfd_create("stockade-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)  # journald takes only a sealed memfd
            self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        finally:
            os.close(fd)

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            super().close()
