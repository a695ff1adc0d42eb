import os
import socket

import pytest

from stockade.ops import sdnotify


@pytest.fixture
def listener(short_dir):
    path = short_dir / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    yield str(path), s
    s.close()


def test_messages_reach_a_path_socket(listener):
    path, s = listener
    env = {"NOTIFY_SOCKET": path}
    assert sdnotify.ready(env=env)
    assert s.recv(4096) == b"READY=1"
    assert sdnotify.ready("tree up", env=env)
    assert s.recv(4096) == b"READY=1\nSTATUS=tree up"
    assert sdnotify.watchdog(env)
    assert s.recv(4096) == b"WATCHDOG=1"
    assert sdnotify.status("trading\nACTIVE", env)
    assert s.recv(4096) == b"STATUS=trading ACTIVE"
    assert sdnotify.stopping(env=env)
    assert s.recv(4096) == b"STOPPING=1"
    assert sdnotify.extend_timeout(2.5, env)
    assert s.recv(4096) == b"EXTEND_TIMEOUT_USEC=2500000"


def test_abstract_socket():
    name = f"stockade-test-{os.getpid()}-{id(object())}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(5)
    try:
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert s.recv(4096) == b"READY=1"
    finally:
        s.close()


def test_noop_without_socket_and_never_raises(short_dir, caplog):
    assert sdnotify.ready(env={}) is False
    missing = {"NOTIFY_SOCKET": str(short_dir / "nobody.sock")}
    assert sdnotify.watchdog(missing) is False
    assert sdnotify.watchdog(missing) is False  # still no exception


def test_watchdog_interval():
    assert sdnotify.watchdog_interval_s({}) is None
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "junk"}) is None
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
