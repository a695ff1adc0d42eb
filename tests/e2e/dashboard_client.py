"""Talking to a running daemon's dashboard from a test: bearer-token HTTP and a metrics scrape."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit


class DashboardClient:
    """HTTP to the dashboard whose login URL the daemon logged."""

    def __init__(self, login_url: str) -> None:
        parts = urlsplit(login_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.token = parse_qs(parts.query)["token"][0]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        timeout: float = 30.0,
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        h = dict(headers or {})
        if auth:
            h["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(method, path, body=body, headers=h)
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def metrics_text(self) -> str:
        status, body = self.request("GET", "/metrics")
        assert status == 200, (status, body[:500])
        return body.decode()

    def metrics(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Family name -> {sorted label pairs (with the sample's own name as "__name__"): value}, parsed
        with prometheus_client's own text parser."""
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            samples = out.setdefault(family.name, {})
            for s in family.samples:
                samples[tuple(sorted({**s.labels, "__name__": s.name}.items()))] = s.value
        return out


def sample(families: dict[str, Any], family: str, name: str | None = None, **labels: str) -> float | None:
    """One sample's value (None if absent)."""
    want = {**labels, "__name__": name or family}
    for key, value in families.get(family, {}).items():
        if dict(key) == want:
            return value
    return None
