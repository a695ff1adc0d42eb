"""A hostile client cannot slow the actors: while the dashboard is hammered
(a flood of requests, bad tokens, huge bodies, stalled half-sent requests,
every event stream slot taken by a client that never reads), quotes are
still processed and orders still placed, the actors' mailboxes stay small,
and the dashboard answers again afterwards. Progress, not latency figures:
no timing assertion."""

from __future__ import annotations

import http.client
import socket
import threading

import pytest
from daemon_harness import DaemonProcess, settings_text, wait_orders
from dashboard_client import DashboardClient
from waiting import wait_for

pytestmark = pytest.mark.timeout(600)

MAILBOX_BOUND = 1000


def _flood(dash: DashboardClient, stop: threading.Event, counts: dict[int, int], lock: threading.Lock) -> None:
    paths = ("/api/v1/overview", "/metrics", "/api/v1/decisions", "/api/v1/report", "/api/v1/equity")
    i = 0
    while not stop.is_set():
        i += 1
        try:
            conn = http.client.HTTPConnection(dash.host, dash.port, timeout=10)
            kind = i % 4
            if kind == 0:
                conn.request("GET", paths[i % len(paths)], headers={"Authorization": f"Bearer {dash.token}"})
            elif kind == 1:
                conn.request("GET", "/api/v1/overview", headers={"Authorization": "Bearer " + "x" * 43})
            elif kind == 2:
                conn.request(
                    "POST",
                    "/api/v1/control/halt",
                    body=b"x" * 1_000_000,
                    headers={"Authorization": f"Bearer {dash.token}"},
                )
            else:
                conn.request("GET", "/", headers={"Authorization": f"Bearer {dash.token}"})
            status = conn.getresponse().status
            with lock:
                counts[status] = counts.get(status, 0) + 1
        except OSError:
            with lock:
                counts[0] = counts.get(0, 0) + 1
        finally:
            conn.close()


def _stalled(dash: DashboardClient, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection((dash.host, dash.port), timeout=10)
        s.sendall(b"GET /api/v1/overview HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        out.append(s)
    return out


def _never_read_streams(dash: DashboardClient, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection((dash.host, dash.port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(
            (
                f"GET /api/v1/events HTTP/1.1\r\nHost: {dash.host}:{dash.port}\r\n"
                f"Authorization: Bearer {dash.token}\r\n\r\n"
            ).encode()
        )
        out.append(s)
    return out


def test_hammered_dashboard_does_not_stop_trading(short_dir):
    daemon = DaemonProcess(short_dir / "data", settings_text(None, dashboard={"port": 0, "update_interval_s": 0.2}))
    stop = threading.Event()
    threads: list[threading.Thread] = []
    sockets: list[socket.socket] = []
    counts: dict[int, int] = {}
    lock = threading.Lock()
    try:
        daemon.wait_ready()
        dash = DashboardClient(daemon.dashboard_login_url())
        before = wait_orders(daemon, 1, timeout=120)

        sockets += _never_read_streams(dash, 8)
        sockets += _stalled(dash, 50)
        for _ in range(6):
            t = threading.Thread(target=_flood, args=(dash, stop, counts, lock), daemon=True)
            t.start()
            threads.append(t)

        def progressed():
            st = daemon.status()
            depths = {a["name"]: a["mailbox"] for a in st["actors"]}
            assert max(depths.values()) < MAILBOX_BOUND, depths  # no queue grows without bound
            md, md0 = st["market_data"], before["market_data"]
            return (
                st
                if (
                    st["orders_placed"] >= before["orders_placed"] + 3
                    and md["quotes"] > md0["quotes"] + 100
                    and md["delivered"] > md0["delivered"] + 100
                )
                else None
            )

        during = wait_for(progressed, 180, 0.5, "quotes processed and orders placed while the dashboard is hammered")
        assert during["healthy"]
        with lock:
            seen = dict(counts)
        assert sum(seen.values()) > 100, seen  # the flood really ran
        assert seen.get(401, 0) > 0 and (seen.get(413, 0) + seen.get(429, 0)) > 0, seen
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        for s in sockets:
            s.close()
    try:
        # Once the flood stops, the dashboard answers again (the request budget refills).
        wait_for(lambda: dash.request("GET", "/api/v1/tree")[0] == 200, 60, 0.5, "the dashboard answering again")
    finally:
        assert daemon.stop() == 0
