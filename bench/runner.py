"""`python run.py bench`: one JSON document on stdout, progress on stderr.

Latencies are in microseconds (p50/p99), throughputs per second. Each figure
stands beside its peer measured in the same run on the same machine:
tick-to-order through the actor pipeline beside a bare pykka hop, our frame
decoder beside json.loads, and so on. Timings are noisy on a shared machine:
compare runs on the same host, not across hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stockade.trading.stats import percentiles

WARMUP_NS = 3_000_000_000


def _progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def bench_pipeline(seconds: float, data_dir: Path) -> dict[str, Any]:
    """Run the real daemon in-process on the embedded venue with a busy strategy;
    measure quote-off-the-socket to order-submitted latency, then kill-to-flat."""
    from argparse import Namespace

    from stockade.actors import names
    from stockade.codecs.messages import Kill
    from stockade.config.settings import settings_from_dict
    from stockade.ops.daemon import Daemon

    settings = settings_from_dict(
        {
            "venue": {"quote_rate_hz": 20.0},
            "analyzer": {"evaluate_every_s": 0.05},
            "voter": {"threshold": 0.02, "cooldown_s": 0.2},
            "risk": {
                "max_positions": 5,
                "max_position_pct": 90.0,
                "risk_per_trade_pct": 0.05,
                "max_orders_per_min": 1000,
                "circuit_breaker_failures": 1000,
            },
            "orders": {"rate_limit_per_min": 160},
            "logging": {"level": "WARNING"},
        }
    )
    daemon = Daemon(settings, "embedded", None, Namespace(data_dir=str(data_dir), duration=None))
    daemon._start()
    ready_ns = time.time_ns()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.2)  # a benchmark's measuring window, not synchronisation
        store = daemon.svc.store
        timed = [
            (o.quote_recv_ns, (o.sent_ns - o.quote_recv_ns) / 1e3)
            for o in store.orders.values()
            if o.quote_recv_ns and o.sent_ns and o.sent_ns > o.quote_recv_ns
        ]
        samples = [us for _, us in timed]
        # The first seconds after READY carry one-off costs (first REST
        # connections, analyzers finishing warm-up): reported apart.
        steady = [us for recv, us in timed if recv > ready_ns + WARMUP_NS]
        held = [p for p in store.positions.values() if p.qty]
        _progress(f"pipeline: {len(samples)} orders in {seconds:.0f}s; {len(held)} positions held; killing")
        started = time.monotonic()
        future = daemon.tree.router.ask(names.EMERGENCY_STOP, Kill("bench", "bench"), timeout=10)
        report = future.result(timeout=60)
        kill_to_flat = time.monotonic() - started
    finally:
        daemon._stop()
    return {
        "tick_to_order_us": percentiles(samples),
        "tick_to_order_steady_us": percentiles(steady),
        "orders": len(samples),
        "positions_before_kill": len(held),
        "kill_to_flat_s": round(kill_to_flat, 3),
        "kill_flat": report.flat,
        "kill_attempts": report.attempts,
        "what": "steady: orders whose quote arrived 3 s or more after READY; quote received off the websocket -> analyzer -> voter -> risk guard -> order manager "
        "-> intent journaled durably -> submit request sent; kill: ask to broker-verified flat",
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python run.py bench", description="Benchmarks, JSON on stdout.")
    parser.add_argument("--quick", action="store_true", help="smaller samples (a smoke run)")
    parser.add_argument("--settings", help="accepted for symmetry; benchmarks use their own settings")
    parser.add_argument("--data-dir", help="scratch directory (default: a temporary one)")
    parser.add_argument("--only", help="comma-separated benchmark names to run (default: all)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    quick = args.quick
    scratch = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="stockade-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)

    from stockade.bench.alert import bench_alerts
    from stockade.bench.backtest import bench_bars, bench_peer
    from stockade.bench.broker import bench_decode, bench_order_roundtrip
    from stockade.bench.dashboard import bench_dashboard
    from stockade.bench.hot_path import RUNS, bench_tick_to_wire, warm_floor
    from stockade.bench.ingest import bench_ingest, bench_scale_start
    from stockade.bench.risk import bench_risk_checks
    from stockade.bench.storage import bench_audit_records, bench_journal, bench_sync_modes
    from stockade.bench.supervisors import bench_pykka_hop, bench_restart
    from stockade.bench.sweep import bench_sweep
    from stockade.bench.telemetry import bench_tracing
    from stockade.bench.trading import bench_indicators, bench_models
    from stockade.bench.venue import bench_quote_publish, bench_rest_roundtrips

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("pipeline", lambda: bench_pipeline(8.0 if quick else 30.0, scratch / "pipeline")),
        ("tick_to_wire", lambda: bench_tick_to_wire(8.0 if quick else 30.0, scratch / "tick_to_wire")),
        ("ingest", lambda: bench_ingest(8.0 if quick else 30.0, scratch / "ingest")),
        ("scale_start", lambda: bench_scale_start(scratch / "scale_start", 100 if quick else 500)),
        ("pykka_hop", lambda: bench_pykka_hop(2_000 if quick else 20_000)),
        ("supervisor_restart", lambda: bench_restart(50 if quick else 300)),
        ("venue_quote_publish_json", lambda: bench_quote_publish(2.0 if quick else 5.0, 5, "json")),
        ("venue_quote_publish_msgpack", lambda: bench_quote_publish(2.0 if quick else 5.0, 5, "msgpack")),
        ("venue_rest_roundtrips", lambda: bench_rest_roundtrips(300 if quick else 2_000)),
        ("order_submit_roundtrip", lambda: bench_order_roundtrip(100 if quick else 1_000)),
        ("journal", lambda: bench_journal(300 if quick else 2_000, scratch)),
        ("storage_sync_modes", lambda: bench_sync_modes(200 if quick else 1_000, scratch)),
        ("audit_records", lambda: bench_audit_records(200 if quick else 1_000, scratch)),
        ("stream_decode", lambda: bench_decode(20_000 if quick else 200_000)),
        ("indicators", lambda: bench_indicators(10_000 if quick else 100_000)),
        ("models", lambda: bench_models(quick)),
        ("risk_checks", lambda: bench_risk_checks(5_000 if quick else 50_000)),
        ("tracing_per_message", lambda: bench_tracing(2_000 if quick else 20_000)),
        ("alerts", lambda: bench_alerts(2_000 if quick else 20_000, scratch)),
        ("dashboard_page_load", lambda: bench_dashboard(scratch / "dashboard", quick)),
        ("backtest_peer", lambda: bench_peer(quick, scratch)),
        ("backtest_bars", lambda: bench_bars(quick, scratch)),
        ("sweep_throughput", lambda: bench_sweep(quick, scratch)),
    ]
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "quick": quick,
        },
    }
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - {name for name, _ in steps}
        if unknown:
            print(f"bench: unknown --only name(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        steps = [(name, fn) for name, fn in steps if name in wanted]
    for name, fn in steps:
        _progress(f"{name} ...")
        started = time.monotonic()
        try:
            results[name] = fn()
        except Exception as exc:  # one broken benchmark must not hide the others
            results[name] = {"error": repr(exc)}
        _progress(f"{name} done in {time.monotonic() - started:.1f}s")
    pipe, hop = results.get("pipeline", {}), results.get("pykka_hop", {})
    wire = results.get("tick_to_wire", {})
    floor = warm_floor(results)
    if isinstance(wire, dict) and "unpinned" in wire:
        wire["warm_floor"] = floor
        for run in RUNS:
            p50 = wire.get(run, {}).get("tick_to_wire_us", {}).get("p50")
            if floor and p50:
                wire[run]["p50_over_floor"] = round(p50 / floor["floor_us"], 1)
    ingest, scale = results.get("ingest", {}), results.get("scale_start", {})
    results["summary"] = {
        "tick_to_order_p50_us": pipe.get("tick_to_order_steady_us", {}).get("p50"),
        "tick_to_order_p99_us": pipe.get("tick_to_order_steady_us", {}).get("p99"),
        "tick_to_order_orders": pipe.get("tick_to_order_steady_us", {}).get("n"),
        "pykka_hop_p50_us": hop.get("hop_p50_us", hop.get("p50_us")),
        "supervisor_restart_p50_us": results.get("supervisor_restart", {}).get("p50_us"),
        "kill_to_flat_s": pipe.get("kill_to_flat_s"),
        "analyzer_per_quote_p50_us": results.get("models", {}).get("per_quote_us", {}).get("total", {}).get("p50"),
        "order_submit_p50_us": results.get("order_submit_roundtrip", {}).get("submit_us", {}).get("p50"),
        "risk_check_p50_us": results.get("risk_checks", {}).get("risk_check_us", {}).get("p50"),
        "tracing_overhead_us": results.get("tracing_per_message", {}).get("overhead_us"),
        **{
            f"tick_to_wire{label}_{q}_us": wire.get(run, {}).get("tick_to_wire_us", {}).get(q)
            for run, label in (
                ("unpinned", ""),
                ("pinned_one_cpu", "_pinned"),
                ("independent_unpinned", "_independent"),
                ("independent_pinned_one_cpu", "_independent_pinned"),
            )
            for q in ("p50", "p99")
        },
        "tick_to_wire_floor_us": floor["floor_us"] if floor else None,
        "ingest_quote_to_state_p99_us": ingest.get("quote_to_state_us", {}).get("p99"),
        "ingest_daemon_cpu_pct": ingest.get("daemon_cpu_pct"),
        "ingest_volume_lost": ingest.get("volume", {}).get("lost"),
        "scale_ready_s": scale.get("ready_s"),
        "scale_rss_mb": scale.get("rss_mb"),
        "scale_threads": scale.get("threads"),
        "backtest_quotes_per_s_with_orders": results.get("backtest_peer", {})
        .get("with_orders", {})
        .get("quotes_per_s"),
        "backtest_quotes_per_s_signals_only": results.get("backtest_peer", {})
        .get("signals_only", {})
        .get("quotes_per_s"),
        "backtest_peer_nautilus": results.get("backtest_peer", {}).get("peer"),
        "backtest_year_100_symbols_minutes_extrapolated": results.get("backtest_bars", {}).get(
            "year_100_symbols_minutes_extrapolated"
        ),
        **{
            f"sweep_backtests_per_min_{run}": results.get("sweep_throughput", {}).get(run, {}).get("backtests_per_min")
            for run in ("in_process", "pool_1", "pool_2", "ray_1", "ray_2")
        },
    }
    print(json.dumps(results, indent=2, default=str))
    return 0 if not any(isinstance(v, dict) and "error" in v for v in results.values()) else 1
