"""`run.py bench` step `dashboard_page_load`: the dashboard with 100 symbols and
10,000 stored orders (plus decisions, equity history and alerts), served for
real on loopback: the page's first load over HTTP (page, assets, session,
first live update), each API read, a /metrics scrape, and, when Debian's
Chromium and Selenium are installed, the page in a real headless browser
from navigation to the first rendered live update. Milliseconds."""

from __future__ import annotations

import http.client
import os
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stockade.codecs.records import OrderState
from stockade.trading.stats import percentiles

SYMBOLS = 100
ORDERS = 10_000


def _fill(store: Any, symbols: tuple[str, ...], rng: random.Random) -> None:
    from stockade.codecs.records import (
        AlertRecord,
        EquitySnapshot,
        IntentJournaled,
        OrderRecord,
        PositionRecord,
        VoteEntry,
        VoterDecisionRecord,
    )

    now = time.time_ns()
    states: tuple[OrderState, ...] = ("filled", "filled", "filled", "canceled", "rejected", "accepted", "expired")
    with store.write() as txn:
        for i in range(ORDERS):
            sym = symbols[i % len(symbols)]
            t = now - (ORDERS - i) * 1_000_000_000
            o = OrderRecord(
                client_order_id=f"bench-{i:06d}",
                intent_id=f"i{i}",
                symbol=sym,
                side="buy",
                qty=10,
                order_type="limit",
                limit_price=100.0,
                state=rng.choice(states),
                created_ns=t,
                updated_ns=t,
                proposal_id=f"p{i}",
            )
            store.put_order(o, txn=txn)
            store.journal.append(IntentJournaled(ts_ns=t, order=o), txn=txn)
        for sym in symbols:
            store.positions.put(sym, PositionRecord(symbol=sym, qty=10, avg_entry_price=100.0, updated_ns=now), txn=txn)
        votes = tuple(
            VoteEntry(model=m, direction=0.5, confidence=0.7, weight=0.33)
            for m in ("momentum", "mean_reversion", "breakout")
        )
        for i in range(2_000):
            t = now - (2_000 - i) * 1_000_000_000
            store.voter_decisions.add(
                VoterDecisionRecord(
                    ts_ns=t,
                    proposal_id=f"p{ORDERS - 2_000 + i}",
                    symbol=symbols[i % len(symbols)],
                    side="buy",
                    outcome="proposed",
                    mode="auto",
                    score=0.1,
                    confidence=0.7,
                    threshold=0.05,
                    min_confidence=0.65,
                    votes=votes,
                    price=100.0,
                    proposed_ns=t,
                ),
                txn=txn,
            )
            store.equity.add(EquitySnapshot(ts_ns=t, equity=100_000 + rng.gauss(0, 500), cash=50_000.0), txn=txn)
            store.alerts.add(
                AlertRecord(level="INFO", key=f"fill:bench-{i}", text="filled", source="bench", ts_ns=t), txn=txn
            )


def _get(port: int, token: str, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        reply = conn.getresponse()
        body = reply.read()
        assert reply.status == 200, (path, reply.status)
        return body
    finally:
        conn.close()


def _first_event(port: int, token: str) -> int:
    """Open the event stream and read up to the end of the first update; returns its size."""
    # A closed stream frees its slot at the server's next write (within an update interval).
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            (f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
        )
        buf = b""
        marker = b"event: update\ndata: "
        while marker not in buf or b"\n\n" not in buf[buf.index(marker) :]:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
        return len(buf)


def _timed(n: int, fn: Callable[[], Any]) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return {k: round(v, 2) for k, v in percentiles(samples).items()}


def _browser_ms(url: str, runs: int) -> dict[str, Any]:
    chromium, driver_path = "/usr/bin/chromium", "/usr/bin/chromedriver"
    if not (os.access(chromium, os.X_OK) and os.access(driver_path, os.X_OK)):
        return {"skipped": "no /usr/bin/chromium or /usr/bin/chromedriver"}
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return {"skipped": "selenium not installed (test extra)"}
    profile = tempfile.mkdtemp(prefix="stk-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.get(url)  # the login URL: sets the cookie
        samples = []
        for _ in range(runs):
            driver.get(url.split("login?")[0])
            deadline = time.monotonic() + 30
            while not driver.execute_script("return document.body.dataset.updated || null"):
                if time.monotonic() > deadline:
                    raise TimeoutError("the page never rendered a live update")
                time.sleep(0.01)
            samples.append(
                driver.execute_script(
                    "return Number(document.body.dataset.updated) - performance.timing.navigationStart"
                )
            )
        return {"first_live_render_ms": percentiles([float(s) for s in samples]), "runs": runs}
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def bench_dashboard(data_dir: Path, quick: bool = False) -> dict[str, Any]:
    from stockade.actors.services import BrokerAccess, Services
    from stockade.broker.rest import BrokerEndpoints
    from stockade.config.settings import DashboardSettings, Settings, TradingSettings
    from stockade.ops.commands import register_commands
    from stockade.ops.control import ControlServer
    from stockade.ops.dashboard.server import DashboardServer
    from stockade.storage.store import Store
    from stockade.supervisors.faults import FaultInjector
    from stockade.supervisors.runtime import start_tree
    from stockade.supervisors.spec import RestartPolicy

    data_dir.mkdir(parents=True, exist_ok=True)
    symbols = tuple(f"S{i:03d}" for i in range(SYMBOLS))
    settings = Settings(
        trading=TradingSettings(symbols=symbols),
        dashboard=DashboardSettings(port=0, requests_per_s=10_000.0, max_event_streams=100),
    )
    store = Store.open(data_dir)
    _fill(store, symbols, random.Random(5))
    endpoints = BrokerEndpoints("http://127.0.0.1:9", "http://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9")
    svc = Services(
        settings=settings,
        store=store,
        faults=FaultInjector(),
        broker=BrokerAccess("embedded", endpoints, "PKBENCH000000", "bench-secret-000000", True, 1.0),
    )
    svc.stats["market_data"] = {
        "state": "connected",
        "quotes_by_symbol": {s: 1000 for s in symbols},
        "quote_age_s": {s: 0.2 for s in symbols},
        "stale_symbols": [],
    }
    tree = start_tree(RestartPolicy(strategy="one_for_one"), [], faults=svc.faults, extras={"services": svc})
    control = ControlServer(data_dir / "control.sock")
    register_commands(control, svc, tree)
    server = DashboardServer(settings.dashboard, svc, tree, control, data_dir)
    server.start()
    n = 5 if quick else 20
    port, token = server.port, server.token
    try:

        def first_load() -> None:
            for path in ("/", "/static/app.js", "/static/app.css", "/api/v1/session"):
                _get(port, token, path)
            _first_event(port, token)

        out: dict[str, Any] = {
            "symbols": SYMBOLS,
            "stored_orders": store.orders.count(),
            "first_load_http_ms": _timed(n, first_load),
            "overview_ms": _timed(n, lambda: _get(port, token, "/api/v1/overview")),
            "decisions_page_ms": _timed(n, lambda: _get(port, token, "/api/v1/decisions")),
            "orders_page_ms": _timed(n, lambda: _get(port, token, "/api/v1/orders?limit=200")),
            "equity_ms": _timed(n, lambda: _get(port, token, "/api/v1/equity")),
            "metrics_scrape_ms": _timed(n, lambda: _get(port, token, "/metrics")),
            "live_update_bytes": _first_event(port, token),
        }
        out["browser"] = _browser_ms(server.login_url, 3 if quick else 10)
        return out
    finally:
        server.stop()
        tree.stop(timeout=10)
        store.close()
