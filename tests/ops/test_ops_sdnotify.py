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


class FlakyTree:
    """A tree whose health the test sets; counts every health check the daemon makes."""

    def __init__(self) -> None:
        import threading

        self.ok = True
        self.calls = 0
        self.cond = threading.Condition()

    def healthy(self) -> bool:
        with self.cond:
            self.calls += 1
            self.cond.notify_all()
            return self.ok

    def set(self, ok: bool) -> int:
        with self.cond:
            self.ok = ok
            return self.calls

    def wait_calls(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.calls >= n, timeout=10), f"only {self.calls} health checks"


def drain(s) -> list[bytes]:
    out = []
    s.setblocking(False)
    try:
        while True:
            out.append(s.recv(4096))
    except BlockingIOError:
        return out
    finally:
        s.setblocking(True)
        s.settimeout(5)


def test_daemon_loop_pings_the_watchdog_only_while_healthy(listener, monkeypatch):
    """The real daemon loop: WATCHDOG=1 at half of WATCHDOG_USEC while healthy, none while not."""
    import threading

    from stockade.ops.daemon import Daemon

    path, s = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    class Svc:
        state = "ACTIVE"

        def trading_state(self):
            return self

    daemon = Daemon.__new__(Daemon)  # only what _loop needs: no storage, no broker
    daemon.stop_event, daemon.tree, daemon.duration, daemon.svc = threading.Event(), FlakyTree(), None, Svc()
    loop = threading.Thread(target=daemon._loop)
    loop.start()
    try:
        # The first round: a ping, and the status line once (not again while it is unchanged).
        assert [s.recv(4096), s.recv(4096)] == [b"WATCHDOG=1", b"STATUS=trading state ACTIVE"]
        flipped_at = daemon.tree.set(False)
        # The first unhealthy check comes after every earlier ping was sent (the loop is sequential).
        daemon.tree.wait_calls(flipped_at + 1)
        before = drain(s)
        daemon.tree.wait_calls(flipped_at + 4)  # three more unhealthy rounds
        during = drain(s)
        assert b"WATCHDOG=1" not in during  # not one ping: systemd's watchdog will fire
        assert (before + during).count(b"STATUS=trading state ACTIVE; NOT healthy") == 1
        daemon.svc.state = "HALTED"
        daemon.tree.set(True)
        got = [s.recv(4096), s.recv(4096)]  # healthy again: pings resume, the new state shows
        assert got == [b"WATCHDOG=1", b"STATUS=trading state HALTED"], got
    finally:
        daemon.stop_event.set()
        loop.join(timeout=5)
    assert not loop.is_alive()
