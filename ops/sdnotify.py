"""sd_notify(3) without libsystemd: tell systemd we are ready, alive, stopping.

All calls are no-ops when $NOTIFY_SOCKET is unset (not under systemd
Type=notify) and never raise: a broken notify socket must not take the
trading daemon down. The first failure is logged; later ones are silent.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)

_warned = False
_warn_lock = threading.Lock()


def _address(env: Mapping[str, str]) -> str | bytes | None:
    addr = env.get("NOTIFY_SOCKET", "")
    if not addr:
        return None
    if addr.startswith("@"):
        return b"\0" + addr[1:].encode()  # abstract namespace
    return addr


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    """True when running under a notify-aware service manager ($NOTIFY_SOCKET set)."""
    return _address(env) is not None


def notify(state: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=up"); True if it was sent."""
    addr = _address(env)
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)  # a full socket buffer must not stall the watchdog thread
            sock.sendto(state.encode(), addr)
        return True
    except Exception as exc:  # never into the caller
        global _warned
        with _warn_lock:
            first, _warned = not _warned, True
        if first:
            log.warning("sd_notify to %s failed: %s (further failures not logged)", env.get("NOTIFY_SOCKET"), exc)
        return False


def ready(status: str | None = None, env: Mapping[str, str] = os.environ) -> bool:
    """READY=1: the tree is up and reconciled."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""), env)


def stopping(status: str | None = None, env: Mapping[str, str] = os.environ) -> bool:
    """STOPPING=1: shutdown has begun (on SIGTERM)."""
    return notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""), env)


def watchdog(env: Mapping[str, str] = os.environ) -> bool:
    """WATCHDOG=1: send only while supervisors report healthy heartbeats."""
    return notify("WATCHDOG=1", env)


def status(text: str, env: Mapping[str, str] = os.environ) -> bool:
    """STATUS=...: one line shown by `systemctl status`."""
    return notify("STATUS=" + text.replace("\n", " "), env)


def extend_timeout(seconds: float, env: Mapping[str, str] = os.environ) -> bool:
    """EXTEND_TIMEOUT_USEC: ask for more start/stop time (slow reconcile, liquidation)."""
    return notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}", env)


def watchdog_interval_s(env: Mapping[str, str] = os.environ) -> float | None:
    """How often to send WATCHDOG=1 (half of WatchdogSec), or None if no watchdog is armed for us."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None  # the watchdog is for another process (we were forked or exec'd)
        except ValueError:
            return None
    return usec / 2 / 1_000_000
