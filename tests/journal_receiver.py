"""A stand-in for journald's native socket, for tests of the journal log output.

It binds an AF_UNIX datagram socket, as journald does at
/run/systemd/journal/socket, and keeps every datagram: the payload, or for
an entry sent as a sealed memfd (SCM_RIGHTS, empty payload) the memfd's
content. `parse` reads an entry the way systemd.io/JOURNAL_NATIVE_PROTOCOL
describes it, written here from the spec, apart from the product's encoder.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import threading
from pathlib import Path


def parse(payload: bytes) -> list[tuple[str, bytes]]:
    """A native-protocol entry as (field, value) pairs; raises ValueError when malformed."""
    fields: list[tuple[str, bytes]] = []
    pos = 0
    while pos < len(payload):
        end = payload.index(b"\n", pos)
        line = payload[pos:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            pos = end + 1
        else:  # binary-safe form: NAME \n le64 size, data, \n
            name = line
            (size,) = struct.unpack("<Q", payload[end + 1 : end + 9])
            value = payload[end + 9 : end + 9 + size]
            if len(value) != size or payload[end + 9 + size : end + 10 + size] != b"\n":
                raise ValueError(f"field {name!r}: bad binary-safe value")
            pos = end + 10 + size
        text = name.decode("ascii")
        if not text or not all(c.isupper() or c.isdigit() or c == "_" for c in text) or text[0] in "_0123456789":
            raise ValueError(f"bad field name {name!r}")
        fields.append((text, value))
    return fields


class JournalReceiver:
    """Binds `path` and collects entries on a thread until `stop()`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.settimeout(0.2)
        self.raw: list[bytes] = []
        self.memfd_entries = 0
        self.sealed = True
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        fd_size = array.array("i").itemsize
        while not self._stop.is_set():
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(fd_size))
            except TimeoutError:
                continue
            except OSError:
                return
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fd = array.array("i", payload[:fd_size])[0]
                    try:
                        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                        self.sealed = self.sealed and bool(seals & fcntl.F_SEAL_WRITE)
                        size = os.fstat(fd).st_size
                        data = os.pread(fd, size, 0)
                    finally:
                        os.close(fd)
                    self.memfd_entries += 1
            with self.lock:
                self.raw.append(data)

    def entries(self) -> list[dict[str, str]]:
        """Every entry so far, as {field: value} (UTF-8 decoded)."""
        with self.lock:
            raw = list(self.raw)
        return [{k: v.decode("utf-8") for k, v in parse(p)} for p in raw]

    def messages(self) -> str:
        """The MESSAGE of every entry, one per line."""
        return "\n".join(e.get("MESSAGE", "") for e in self.entries())

    def __enter__(self) -> JournalReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()
