"""An in-process dashboard over real parts: a real lmdb store, a real (empty)
supervision tree, the real control server's commands (not bound to a socket:
the dashboard calls them in process), and the real aiohttp server on a free
loopback port, driven over HTTP."""

from __future__ import annotations

import http.client
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest

from stockade.actors.services import BrokerAccess, Services
from stockade.broker.rest import BrokerEndpoints
from stockade.config.settings import DashboardSettings, Settings
from stockade.ops.commands import register_commands
from stockade.ops.control import ControlServer
from stockade.ops.dashboard import DashboardServer
from stockade.storage.store import Store
from stockade.supervisors.faults import FaultInjector
from stockade.supervisors.runtime import start_tree
from stockade.supervisors.spec import RestartPolicy


class Reply(msgspec.Struct):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Dash:
    """A running dashboard and an HTTP client for it."""

    def __init__(self, data: Path, **dashboard: Any) -> None:
        self.data = data
        settings = Settings(dashboard=DashboardSettings(**{"port": 0, **dashboard}))
        self.store = Store.open(data)
        endpoints = BrokerEndpoints("http://127.0.0.1:9", "http://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9")
        broker = BrokerAccess("embedded", endpoints, "PKDASHTEST0001", "dash-test-secret-value-0001", True, 1.0)
        self.svc = Services(settings=settings, store=self.store, broker=broker, faults=FaultInjector())
        self.tree = start_tree(
            RestartPolicy(strategy="one_for_one"), [], faults=self.svc.faults, extras={"services": self.svc}
        )
        self.audit: list[Any] = []

        def store_audit(record: Any) -> None:
            self.audit.append(record)
            self.store.audit.add(record, durable=False)

        self.control = ControlServer(data / "control.sock", audit=store_audit)
        register_commands(self.control, self.svc, self.tree)
        self.server = DashboardServer(settings.dashboard, self.svc, self.tree, self.control, data)
        self.server.start()
        self.token = self.server.token
        self.port = self.server.port
        self.cookie = ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = dict(headers or {})
        if auth and "Authorization" not in h and "Cookie" not in h:
            h["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return Reply(r.status, {k: v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, data: Any = None, **kw: Any) -> Reply:
        body = json.dumps(data if data is not None else {}).encode()
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.request("POST", path, body=body, headers=headers, **kw)

    def login_cookie(self) -> str:
        r = self.get(f"/login?token={self.token}", auth=False)
        assert r.status == 303, r
        return r.headers["Set-Cookie"].split(";", 1)[0]

    def close(self) -> None:
        self.server.stop()
        self.tree.stop(timeout=10)
        self.store.close()


@pytest.fixture
def make_dash():
    made: list[Dash] = []
    dirs: list[str] = []

    def make(**dashboard: Any) -> Dash:
        d = tempfile.mkdtemp(prefix="skd", dir="/tmp")
        dirs.append(d)
        dash = Dash(Path(d), **dashboard)
        made.append(dash)
        return dash

    yield make
    for dash in made:
        dash.close()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
