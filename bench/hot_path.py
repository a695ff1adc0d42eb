"""Tick-to-wire: quote received to the order's HTTP request at the venue, for `python run.py bench`.

The real daemon runs in-process on its embedded venue with `symbols` symbols
quoting `quotes_per_s` in all, and a strategy busy enough to trade. For each
order the venue accepted: the quote's receive stamp (`quote_recv_ns`, taken
when the frame came off the websocket) to the venue's `created_at_ns` (its
handler taking the POST /v2/orders). Both are wall-clock nanoseconds on one
machine. The run is made twice back to back, unpinned and pinned to one CPU
(runtime.cpu_affinity's effect), so the two stand side by side.

The warm floor (main's summary) is the same path's work measured warm in the
same bench run: four bare pykka hops (streamer -> analyzer -> voter -> risk
guard -> order manager), the analyzer's per-quote cost, one risk check and
one durable journal append.
"""

from __future__ import annotations

import itertools
import os
import string
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

from stockade.storage.store import Store
from stockade.trading.stats import percentiles

WARMUP_NS = 3_000_000_000
# streamer -> analyzer -> voter (one Votes message) -> risk guard -> order manager
HOPS_TO_WIRE = 4
# (quote_arrivals, key prefix): lock-step keeps the historic keys.
ARRIVALS = (("lockstep", ""), ("poisson", "independent_"))
RUNS = tuple(p + run for _, p in ARRIVALS for run in ("unpinned", "pinned_one_cpu"))


def bench_symbols(n: int) -> list[str]:
    """`n` made-up tickers (XAAA, XAAB, ...): the simulator quotes any symbol."""
    names = ("X" + "".join(p) for p in itertools.product(string.ascii_uppercase, repeat=3))
    return list(itertools.islice(names, n))


def _busy_settings(
    symbols: list[str], quotes_per_s: float, cpus: tuple[int, ...] = (), arrivals: str = "lockstep"
) -> Any:
    from stockade.config.settings import settings_from_dict

    return settings_from_dict(
        {
            "trading": {"symbols": symbols},
            "venue": {
                "quote_rate_hz": quotes_per_s / len(symbols),
                "quote_arrivals": arrivals,
                "initial_cash": 10_000_000.0,
            },
            "analyzer": {"evaluate_every_s": 0.05},
            "voter": {"threshold": 0.02, "cooldown_s": 0.2},
            # Tight brackets: positions open and close all the time, so orders keep coming.
            "risk": {
                "max_positions": len(symbols),
                "max_position_pct": 1.0,
                "stop_loss_pct": 0.1,
                "take_profit_pct": 0.1,
                "risk_per_trade_pct": 0.05,
                "max_orders_per_min": 1000,
                "circuit_breaker_failures": 1000,
            },
            "orders": {"rate_limit_per_min": 160},
            "logging": {"level": "WARNING"},
            "runtime": {"cpu_affinity": list(cpus)},
        }
    )


def _one_run(
    seconds: float,
    data_dir: Path,
    symbols: list[str],
    quotes_per_s: float,
    cpus: tuple[int, ...],
    arrivals: str = "lockstep",
) -> dict[str, Any]:
    from stockade.ops.affinity import apply_cpu_affinity
    from stockade.ops.daemon import Daemon

    settings = _busy_settings(symbols, quotes_per_s, cpus, arrivals)
    before = os.sched_getaffinity(0)
    # As the daemon's main() does: on this thread before the daemon's threads start.
    apply_cpu_affinity(settings.runtime.cpu_affinity)
    daemon = Daemon(settings, "embedded", None, Namespace(data_dir=str(data_dir), duration=None))
    try:
        daemon._start()
        ready_ns = time.time_ns()
        cpu0 = os.times()
        wall0 = time.monotonic()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.2)  # a benchmark's measuring window, not synchronisation
        cpu1 = os.times()
        cpu_pct = 100.0 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (time.monotonic() - wall0)
        at_venue = daemon.venue.call(
            lambda: {o.client_order_id: o.created_at_ns for o in daemon.venue.ctx.exchange.orders.values()}
        )
        ours = {o.client_order_id: o for o in daemon.svc.store.orders.values() if o.intent_id and o.quote_recv_ns}
    finally:
        daemon._stop()
        os.sched_setaffinity(0, before)
    # After the stop (every record flushed): when the voter and the risk guard handled each proposal.
    store = Store.open(data_dir, readonly=True)
    try:
        voted = {r.proposal_id: r for _, r in store.voter_decisions.items() if r.outcome == "proposed"}
        risked = {r.proposal_id: r.ts_ns for _, r in store.decisions.items() if r.allowed}
    finally:
        store.close()
    # Lock-step: the venue quotes the symbols in this order, all at one instant,
    # so a symbol's index is its quote's place in the burst.
    place = {s: i for i, s in enumerate(symbols)}
    wire, order, to_om, commit, http = [], [], [], [], []
    to_voter, voter_to_risk, risk_to_om, venue_to_recv, ahead = [], [], [], [], []
    for coid, rec in ours.items():
        if rec.quote_recv_ns <= ready_ns + WARMUP_NS:
            continue  # first REST connections, analyzers finishing warm-up
        created = at_venue.get(coid)
        if not (created and rec.sent_ns and created > rec.sent_ns > rec.created_ns > rec.quote_recv_ns):
            continue  # refused or rejected orders never reached the venue's book
        wire.append((created - rec.quote_recv_ns) / 1e3)
        order.append((rec.sent_ns - rec.quote_recv_ns) / 1e3)
        to_om.append((rec.created_ns - rec.quote_recv_ns) / 1e3)
        commit.append((rec.sent_ns - rec.created_ns) / 1e3)
        http.append((created - rec.sent_ns) / 1e3)
        v, r = voted.get(rec.proposal_id), risked.get(rec.proposal_id)
        if v is not None and r is not None:
            to_voter.append((v.proposed_ns - rec.quote_recv_ns) / 1e3)
            voter_to_risk.append((r - v.proposed_ns) / 1e3)
            risk_to_om.append((rec.created_ns - r) / 1e3)
            venue_to_recv.append((rec.quote_recv_ns - v.quote_ts_ns) / 1e3)
        ahead.append(place[rec.symbol])
    return {
        "tick_to_wire_us": percentiles(wire),
        "tick_to_order_us": percentiles(order),
        # The same orders stage by stage: quote -> the order manager taking the intent
        # (hops, analyzer, voter, risk guard); the intent's durable commit; the REST call.
        "stages_us": {
            "quote_to_order_manager": percentiles(to_om),
            "intent_durable_commit": percentiles(commit),
            "request_to_venue": percentiles(http),
            # quote_to_order_manager split: quote -> voter's proposal (streamer, analyzer,
            # two hops, voter); -> risk guard's verdict; -> the order manager's intent.
            "quote_to_voter": percentiles(to_voter),
            "voter_to_risk": percentiles(voter_to_risk),
            "risk_to_order_manager": percentiles(risk_to_om),
            # Before quote_recv_ns, not in tick_to_wire: the venue's quote stamp to our receive.
            "venue_quote_to_recv": percentiles(venue_to_recv),
        },
        # Lock-step only: how many quotes of its burst the venue sent before the
        # order's, and what each costs the order (least-squares slope of the
        # quote -> order manager time over that place; ~0 without bursts).
        "burst": {
            "quotes_ahead": percentiles(ahead),
            "us_per_quote_ahead": _slope(ahead, to_om),
        }
        if arrivals == "lockstep"
        else None,
        "process_cpu_pct": round(cpu_pct, 1),
    }


def _slope(xs: list[int], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (None if xs do not vary)."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var, 1) if var else None


def bench_tick_to_wire(
    seconds: float,
    data_dir: Path,
    n_symbols: int = 50,
    quotes_per_s: float = 2_000.0,
) -> dict[str, Any]:
    """Tick-to-wire at `n_symbols` and `quotes_per_s`, unpinned then pinned to one CPU, for each
    quote schedule: every symbol quoting at once (lock-step) and independently (Poisson)."""
    symbols = bench_symbols(n_symbols)
    out: dict[str, Any] = {"symbols": n_symbols, "quotes_per_s": quotes_per_s, "seconds": seconds}
    cpus = sorted(os.sched_getaffinity(0))
    for arrivals, prefix in ARRIVALS:
        print(f"bench: tick_to_wire: quote_arrivals = {arrivals}", file=sys.stderr, flush=True)
        out[f"{prefix}unpinned"] = {
            "quote_arrivals": arrivals,
            **_one_run(seconds, data_dir / f"{arrivals}-unpinned", symbols, quotes_per_s, (), arrivals),
        }
        if len(cpus) > 1:
            print(f"bench: tick_to_wire: pinned to CPU {cpus[-1]}", file=sys.stderr, flush=True)
            out[f"{prefix}pinned_one_cpu"] = {
                "quote_arrivals": arrivals,
                "cpu": cpus[-1],
                **_one_run(seconds, data_dir / f"{arrivals}-pinned", symbols, quotes_per_s, (cpus[-1],), arrivals),
            }
    out["what"] = (
        "quote received off the websocket (quote_recv_ns) -> analyzer -> voter -> risk guard -> order "
        "manager -> intent journaled durably -> POST /v2/orders taken by the venue (its created_at_ns); "
        "orders whose quote came 3 s or more after READY; tick_to_order: the same, to sent_ns; "
        "pinned_one_cpu: the same run with runtime.cpu_affinity = [cpu]; unpinned/pinned_one_cpu: every "
        "symbol quotes at the same instant (quote_arrivals = lockstep, a synchronised open: the worst case); "
        "independent_*: each symbol quotes on its own (quote_arrivals = poisson), as a real SIP feed"
    )
    return out


def warm_floor(results: dict[str, Any]) -> dict[str, Any] | None:
    """The tick-to-wire path's work measured warm in the same run, from the other steps' figures."""
    try:
        hop = results["pykka_hop"]["hop_p50_us"]
        analyzer = results["models"]["per_quote_us"]["total"]["p50"]
        risk = results["risk_checks"]["risk_check_us"]["p50"]
        commit = results["journal"]["journal_durable_append_us"]["p50"]
    except (KeyError, TypeError):
        return None
    total = HOPS_TO_WIRE * hop + analyzer + risk + commit
    return {
        "hops": HOPS_TO_WIRE,
        "hop_p50_us": hop,
        "analyzer_p50_us": analyzer,
        "risk_check_p50_us": risk,
        "durable_commit_p50_us": commit,
        "floor_us": round(total, 1),
    }
