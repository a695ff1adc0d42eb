"""Ingest at a busy SIP pace, and start-up at scale, for `python run.py bench` (and the load test).

Ingest: a venue in its own process (`python run.py venue`) quotes
`n_symbols` symbols at `quotes_per_s` in all; the real daemon runs in this
process against it, trading as configured. Measured over the window:
- quote received (off the websocket) to the analyzer's state reflecting it,
  p50/p99 (a probe around `Analyzer.on_quote`, after the handler);
- quotes offered (counted by a second, reference connection to the venue),
  received, delivered to analyzers, and conflated;
- every actor's mailbox, sampled: the largest seen, and the largest in the
  last quarter of the window beside the first quarter (growing or not);
- traded volume: what the reference connection saw against what reached the
  analyzers (`Analyzer.on_trade`), per symbol. Trades are merged, never
  dropped, so nothing may be missing. The venue's feed is paused (its
  `stream_silent` knob) before and after the window, so both counts cover the
  same trades;
- the daemon's CPU (this process: user + system over wall time);
- fills: after the window, the ledger must equal the venue (every order's
  filled quantity, and the ledger's fills adding up to it).

Scale start: the daemon as a subprocess with `n_symbols` symbols against a
venue process: seconds to READY and until every analyzer has warmed up,
then the daemon's RSS and thread count.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from argparse import Namespace
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stockade.bench.hot_path import bench_symbols
from stockade.config.settings import Settings
from stockade.trading.stats import percentiles
from stockade.venue.launcher import RUN_PY, VenueProcess, child_env

SAMPLE_S = 0.25
DRAIN_TIMEOUT_S = 30.0


def _venue(data_dir: Path, symbols: list[str], quote_rate_hz: float, seed: int = 11) -> VenueProcess:
    """The venue in its own process, with a raised REST budget and room for two data connections."""
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = data_dir / "venue.toml"
    # A paid data plan's budget (10,000/min), and a second market-data
    # connection for the reference counter.
    settings.write_text("[venue]\nrate_limit_per_min = 10000\nmax_stream_connections = 2\n")
    return VenueProcess(
        data_dir / "state",
        symbols=symbols,
        quote_rate=quote_rate_hz,
        log_path=data_dir / "venue.log",
        seed=seed,
        key="PKBENCH" + secrets.token_hex(6).upper(),
        args=("--settings", str(settings)),
        start_timeout_s=60.0,
    )


class AnalyzerProbe:
    """Wraps the Analyzer's quote and trade handlers while active: latency and volume, per symbol."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies_ns: list[int] = []
        self.volume: dict[str, float] = defaultdict(float)
        self.measuring = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[AnalyzerProbe]:
        from stockade.actors.analyzer import Analyzer
        from stockade.codecs.messages import Quote, Trade

        on_quote, on_trade = Analyzer.on_quote, Analyzer.on_trade
        probe = self

        def quote_probe(self: Analyzer, quote: Quote) -> None:
            on_quote(self, quote)
            if probe.measuring:
                probe.latencies_ns.append(time.time_ns() - quote.recv_ns)

        def trade_probe(self: Analyzer, trade: Trade) -> None:
            on_trade(self, trade)
            with probe.lock:
                probe.volume[trade.symbol] += trade.size

        # The base dispatches by attribute name: the probes take the handlers' places.
        Analyzer.on_quote, Analyzer.on_trade = quote_probe, trade_probe  # type: ignore[method-assign]  # a probe, by design
        try:
            yield self
        finally:
            Analyzer.on_quote, Analyzer.on_trade = on_quote, on_trade  # type: ignore[method-assign]  # the probe removed

    def volumes(self) -> dict[str, float]:
        with self.lock:
            return dict(self.volume)


class ReferenceFeed:
    """A second connection to the venue's feed: what was offered, quotes and traded volume."""

    def __init__(self, venue: VenueProcess, symbols: list[str]) -> None:
        from stockade.broker.market_stream import MarketDataStream

        self.lock = threading.Lock()
        self.quotes = 0
        self.volume: dict[str, float] = defaultdict(float)
        self.stream = MarketDataStream(
            venue.data_stream_url,
            venue.key,
            venue.secret,
            symbols,
            on_quote=self._quote,
            on_trade=self._trade,
            encoding="msgpack",
            silence_timeout_s=None,
        )

    def _quote(self, _quote: Any) -> None:
        with self.lock:
            self.quotes += 1

    def _trade(self, trade: Any) -> None:
        with self.lock:
            self.volume[trade.symbol] += trade.size

    def snapshot(self) -> tuple[int, dict[str, float]]:
        with self.lock:
            return self.quotes, dict(self.volume)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingest: timed out waiting for {what}")
        time.sleep(0.05)


def _settled(read: Any, quiet_s: float = 1.0, timeout: float = DRAIN_TIMEOUT_S) -> Any:
    """`read()` once it has stopped changing for `quiet_s`."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise RuntimeError("ingest: counts never settled after the feed paused")


def _fill_mismatches(daemon: Any, venue: VenueProcess) -> tuple[int, list[str]]:
    """(orders the venue filled, differences between the venue and the ledger)."""
    from stockade.broker.order_pages import list_all_orders
    from stockade.broker.rest import make_trading_client

    client = make_trading_client(venue.key, venue.secret, venue.base_url, timeout_s=10)
    orders = list_all_orders(client, "all")
    store = daemon.svc.store
    fills: dict[str, int] = defaultdict(int)
    for f in store.fills.values():
        fills[f.client_order_id] += f.qty
    filled, out = 0, []
    for o in orders:
        qty = int(float(o.filled_qty or 0))
        filled += qty > 0
        mine = store.orders.get(o.client_order_id)
        if mine is None:
            out.append(f"{o.client_order_id}: at the venue, not in the ledger")
        elif mine.filled_qty != qty or fills[o.client_order_id] != qty:
            out.append(
                f"{o.client_order_id}: venue filled {qty}, ledger {mine.filled_qty}, fills {fills[o.client_order_id]}"
            )
    return filled, out


def run_ingest(
    seconds: float,
    data_dir: Path,
    n_symbols: int = 50,
    quotes_per_s: float = 20_000.0,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ingest run described in the module docstring; returns its figures."""
    from stockade.config.settings import settings_from_dict
    from stockade.ops.daemon import Daemon

    symbols = bench_symbols(n_symbols)
    venue = _venue(data_dir / "venue", symbols, quotes_per_s / n_symbols)
    probe = AnalyzerProbe()
    reference: ReferenceFeed | None = None
    daemon: Any = None
    try:
        venue.set_faults(stream_silent=True)  # paused until both connections are subscribed
        sections: dict[str, dict[str, Any]] = {
            "venue": {"mode": "alpaca"},
            "alpaca": venue.alpaca_settings(),
            "trading": {"symbols": symbols},
            # The pauses are ours: no reconnect on a quiet feed.
            "stream": {"silence_timeout_s": 3600.0},
            "logging": {"level": "WARNING"},
        }
        for name, values in (overrides or {}).items():
            sections.setdefault(name, {}).update(values)
        settings = settings_from_dict(sections)
        with probe.installed():
            daemon = Daemon(
                settings,
                "alpaca",
                (venue.key, venue.secret),
                Namespace(data_dir=str(data_dir / "daemon"), duration=None),
            )
            daemon._start()
            reference = ReferenceFeed(venue, symbols)
            reference.stream.start()
            _wait(
                lambda: (
                    reference.stream.state == "subscribed"
                    and daemon.svc.stats.get("market_data", {}).get("state") == "subscribed"
                ),
                60,
                "subscriptions",
            )
            md0 = dict(daemon.svc.stats.get("market_data", {}))
            a0, (q0, r0) = probe.volumes(), reference.snapshot()
            venue.set_faults(stream_silent=False)
            probe.measuring = True
            samples: list[dict[str, int]] = []
            cpu0, wall0 = os.times(), time.monotonic()
            while time.monotonic() - wall0 < seconds:
                time.sleep(SAMPLE_S)  # the sampling period of a measuring window
                samples.append({a.name: a.mailbox for a in daemon.tree.snapshot()})
            cpu1, wall = os.times(), time.monotonic() - wall0
            venue.set_faults(stream_silent=True)
            probe.measuring = False
            q1, r1 = _settled(reference.snapshot)
            a1 = _settled(probe.volumes)
            time.sleep(2 * 1.0)  # let the 1 s stats tick publish the final counters
            md1 = dict(daemon.svc.stats.get("market_data", {}))
            filled, mismatches = 0, ["not checked"]
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while time.monotonic() < deadline:
                filled, mismatches = _fill_mismatches(daemon, venue)
                if not mismatches:
                    break
                time.sleep(0.5)
    finally:
        if reference is not None:
            reference.stream.stop(timeout=5)
        if daemon is not None:
            daemon._stop()
        venue.stop()
    offered = {s: r1.get(s, 0.0) - r0.get(s, 0.0) for s in symbols}
    got = {s: a1.get(s, 0.0) - a0.get(s, 0.0) for s in symbols}
    lost = {s: offered[s] - got[s] for s in symbols if abs(offered[s] - got[s]) > 1e-6}
    quarter = max(1, len(samples) // 4)

    def worst(rows: list[dict[str, int]]) -> int:
        return max((max(r.values(), default=0) for r in rows), default=0)

    per_actor: dict[str, int] = defaultdict(int)
    for row in samples:
        for name, size in row.items():
            per_actor[re.sub(r":.*", ":*", name)] = max(per_actor[re.sub(r":.*", ":*", name)], size)

    def delta(key: str) -> int:
        return int(md1.get(key, 0) or 0) - int(md0.get(key, 0) or 0)

    return {
        "symbols": n_symbols,
        "offered_quotes_per_s_target": quotes_per_s,
        "offered_quotes_per_s": round((q1 - q0) / wall, 1),
        "received_quotes_per_s": round(delta("quotes") / wall, 1),
        "delivered_quotes_per_s": round(delta("delivered") / wall, 1),
        "conflated": delta("conflated"),
        "conflated_pct": round(100.0 * delta("conflated") / max(1, delta("quotes")), 1),
        "quote_to_state_us": percentiles(probe.latencies_ns, scale=1e-3),
        "daemon_cpu_pct": round(100.0 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / wall, 1),
        "mailbox_max": worst(samples),
        "mailbox_max_first_quarter": worst(samples[:quarter]),
        "mailbox_max_last_quarter": worst(samples[-quarter:]),
        "mailbox_max_by_actor": dict(sorted(per_actor.items())),
        "volume": {
            "offered": round(sum(offered.values()), 1),
            "reached_analyzers": round(sum(got.values()), 1),
            "lost": round(sum(v for v in lost.values() if v > 0), 1),
            "differences": lost,
        },
        "fills": {"orders_filled_at_venue": filled, "ledger_mismatches": mismatches},
        "seconds": round(wall, 1),
        "what": "venue in its own process; quote_to_state: quote received off the websocket -> Analyzer.on_quote "
        "done; conflated: quotes replaced by a newer one of the same symbol before delivery; volume: traded "
        "shares a reference connection saw vs shares the analyzers got; daemon_cpu_pct: this process",
    }


def bench_ingest(
    seconds: float,
    data_dir: Path,
    n_symbols: int = 50,
    quotes_per_s: float = 20_000.0,
) -> dict[str, Any]:
    """`run_ingest` with the shipped settings (trading as configured)."""
    return run_ingest(seconds, data_dir, n_symbols, quotes_per_s)


def bench_scale_start(data_dir: Path, n_symbols: int = 500, timeout_s: float = 300.0) -> dict[str, Any]:
    """The daemon as a subprocess with `n_symbols` symbols: READY time, all-warm time, RSS, threads."""
    import psutil

    symbols = bench_symbols(n_symbols)
    venue = _venue(data_dir / "venue", symbols, 0.2)
    daemon_dir = data_dir / "daemon"
    daemon_dir.mkdir(parents=True, exist_ok=True)
    settings = data_dir / "daemon.toml"
    a = venue.alpaca_settings()
    settings.write_text(
        '[venue]\nmode = "alpaca"\n[alpaca]\n'
        + "".join(f'{k} = "{v}"\n' for k, v in a.items())
        + "[trading]\nsymbols = ["
        + ", ".join(f'"{s}"' for s in symbols)
        + "]\n"
        + '[voter]\nmode = "manual"\n[logging]\nlevel = "INFO"\n'
    )
    log_path = data_dir / "daemon.log"
    env = child_env({"APCA_API_KEY_ID": venue.key, "APCA_API_SECRET_KEY": venue.secret})
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, RUN_PY, "run", "--settings", str(settings), "--data-dir", str(daemon_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        ready_s = warm_s = None
        while time.monotonic() - started < timeout_s and proc.poll() is None:
            text = log_path.read_text(errors="replace")
            if ready_s is None and "stockade ready" in text:
                ready_s = time.monotonic() - started
            if ready_s is not None and text.count(": warmed up from ") >= n_symbols:
                warm_s = time.monotonic() - started
                break
            time.sleep(0.1)
        p = psutil.Process(proc.pid)
        rss_mb = round(p.memory_info().rss / 2**20, 1)
        threads = p.num_threads()
        text = log_path.read_text(errors="replace")
        crashed = text.count(" failed in setup") + text.count("ImportError")
        bars_requests = venue.log_path.read_text(errors="replace").count("GET /v2/stocks/bars ")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        venue.stop()
    return {
        "symbols": n_symbols,
        "ready_s": round(ready_s, 2) if ready_s else None,
        "all_warm_s": round(warm_s, 2) if warm_s else None,
        "rss_mb": rss_mb,
        "threads": threads,
        "analyzer_threads": Settings().runtime.analyzer_threads,
        "warmup_bars_requests": bars_requests,
        "analyzers_failed_in_setup": crashed,
        "what": "daemon subprocess against a venue process (data budget 10,000/min); ready_s: spawn to READY "
        "(tree up, first reconciliation); all_warm_s: spawn to every analyzer warmed up from history; "
        "rss and threads then (the analyzers share [runtime] analyzer_threads, as shipped); warmup_bars_requests: "
        "bars requests the venue answered",
    }
