"""Backtest benchmarks for `python run.py bench`.

`bench_peer`: the workload NautilusTrader's BacktestEngine is timed on, run
through stockade's backtest: 50 symbols, 10,000 seeded quotes each
(500,000), an EMA(12)/EMA(26) crossover evaluated on every quote
(`actors/crossover.py`), its orders through the risk guard and the order
manager to the venue's matching engine. Two figures: quotes/s with orders,
and signals only (the strategy counts crossings, nothing is proposed).

Differences from the peer's script, said here so the figures are read
right: quantities are the risk guard's sizing (the peer buys a fixed 10),
and the order path is the daemon's whole one (risk rules, a journaled
intent per order, the alpaca-py client's request and response models).

`bench_bars`: minute bars of the seeded market through the default
ensemble (rules and ONNX models), the `python run.py backtest` path, for
the "year of 1-minute bars for 100 symbols" figure (extrapolated from the
bars replayed, and said so).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from stockade.codecs.messages import Quote

NS = 1_000_000_000
PEER = {
    "nautilus_trader": "1.221",
    "quotes_per_s_with_orders": 71_000,
    "quotes_per_s_signals_only": 249_000,
    "source": "issue 13: NautilusTrader's BacktestEngine, Python EMACross strategy, this machine",
}
# A weekday session: the risk guard's market-hours rule holds (10:00 New York).
START = int(dt.datetime(2026, 6, 2, 14, 0, tzinfo=dt.UTC).timestamp()) * NS


def peer_quotes(n_symbols: int = 50, per_symbol: int = 10_000, seed: int = 42) -> tuple[tuple[str, ...], list[Quote]]:
    """Seeded random-walk quotes, one per symbol every 100 ms, interleaved in time order."""
    rng = random.Random(seed)
    symbols = tuple(f"S{i:03d}" for i in range(n_symbols))
    prices = [rng.uniform(20.0, 200.0) for _ in symbols]
    out: list[Quote] = []
    for i in range(per_symbol):
        base = START + i * 100_000_000
        for j, symbol in enumerate(symbols):
            p = prices[j] = prices[j] * math.exp(rng.gauss(0.0, 0.0004))
            half = max(0.005, p * 0.0001)
            ts = base + j * 1000
            out.append(Quote(symbol, round(p - half, 2), round(p + half, 2), 500.0, 500.0, ts, ts))
    return symbols, out


def _peer_settings() -> Any:
    from stockade.config.settings import settings_from_dict

    # Wide open limits: the figure is throughput, not what the default risk rules allow.
    return settings_from_dict(
        {
            "venue": {"initial_cash": 10_000_000.0},
            "risk": {
                "max_positions": 50,
                "max_position_pct": 1.0,
                "risk_per_trade_pct": 0.005,
                "max_orders_per_min": 1_000_000,
                "circuit_breaker_failures": 1_000_000,
                "max_spread_bps": 100.0,
                "confidence_floor": 0.0,
            },
            "orders": {"rate_limit_per_min": 1_000_000},
            "logging": {"level": "WARNING"},
        }
    )


def bench_peer(quick: bool = False, scratch: Path | None = None, per_symbol: int | None = None) -> dict[str, Any]:
    from stockade.ops.backtest import Engine

    per_symbol = per_symbol or (1_000 if quick else 10_000)
    symbols, quotes = peer_quotes(50, per_symbol)
    settings = _peer_settings()
    out: dict[str, Any] = {"symbols": len(symbols), "quotes": len(quotes), "peer": PEER}
    for label, signals_only in (("signals_only", True), ("with_orders", False)):
        root = Path(tempfile.mkdtemp(prefix="stockade-bt-bench-", dir=scratch))
        engine = Engine(settings, symbols, 7, root / "out", None, strategy="crossover", signals_only=signals_only)
        try:
            # The actors and venue start before the clock: one-time work (the first
            # run also imports alpaca-py, ~0.5 s) is not per-quote throughput.
            engine.start(quotes[0].ts_ns)
            started, cpu = time.perf_counter(), time.process_time()
            engine.replay(quotes)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            signals = sum(a.signals for n, a in engine.dispatcher.actors.items() if n.startswith("crossover:"))
            figures = engine.finish()
        finally:
            engine.close()
        # CPU seconds too: on a shared machine wall time also counts other processes' turns.
        out[label] = {
            "quotes_per_s": round(len(quotes) / elapsed),
            "seconds": round(elapsed, 2),
            "quotes_per_cpu_s": round(len(quotes) / cpu) if cpu > 0 else None,
            "signals": signals,
            "orders": figures["orders"],
            "fills": figures["fills"],
            "messages": figures["messages"],
        }
    out["ratio_to_peer_with_orders"] = round(out["with_orders"]["quotes_per_s"] / PEER["quotes_per_s_with_orders"], 3)
    out["ratio_to_peer_signals_only"] = round(
        out["signals_only"]["quotes_per_s"] / PEER["quotes_per_s_signals_only"], 3
    )
    return out


def bench_bars(
    quick: bool = False, scratch: Path | None = None, n_symbols: int | None = None, n_days: int | None = None
) -> dict[str, Any]:
    """Minute bars through the default ensemble; a year of 100 symbols extrapolated from a slice of it.

    The slice is 5 trading days of 100 symbols (quick: 1 day of 10): several
    days, so the per-day figures show whether the cost stays flat as records
    and orders accumulate (a linear extrapolation assumes it does).
    """
    from stockade.config.settings import settings_from_dict
    from stockade.ops.backtest import Engine
    from stockade.ops.backtest_data import SimSource

    n_symbols = n_symbols or (10 if quick else 100)
    n_days = n_days or (1 if quick else 5)
    symbols = tuple(f"S{i:03d}" for i in range(n_symbols))
    first = dt.date(2026, 6, 1)  # a Monday: five sessions in a row
    last = first + dt.timedelta(days=n_days + 2 * (n_days // 5) - 1)
    settings = settings_from_dict({"logging": {"level": "WARNING"}})
    source = SimSource(symbols, 4, first, last)
    b = settings.backtest
    root = Path(tempfile.mkdtemp(prefix="stockade-bt-bars-", dir=scratch))
    engine = Engine(
        settings, symbols, 4, root / "out", str(Path(__file__).resolve().parents[1] / "quant"), market=source.market
    )
    bars, per_day = 0, []
    try:
        elapsed, cpu = 0.0, 0.0
        for d in source.days(b.bar_spread_bps, b.quote_size):  # building a day's events is not timed
            started, cpu0 = time.perf_counter(), time.process_time()
            engine.replay(d.events)
            took = time.perf_counter() - started
            elapsed, cpu = elapsed + took, cpu + time.process_time() - cpu0
            bars += d.bars
            per_day.append({"date": d.date, "bars": d.bars, "bars_per_s": round(d.bars / took)})
            if len(per_day) == n_days:
                break
        figures = engine.finish()
    finally:
        engine.close()
    year_bars = 252 * 390 * 100
    return {
        "symbols": n_symbols,
        "days": len(per_day),
        "bars": bars,
        "events": engine.events,
        "seconds": round(elapsed, 2),
        "bars_per_s": round(bars / elapsed),
        # CPU seconds too: on a shared machine wall time also counts other processes' turns.
        "bars_per_cpu_s": round(bars / cpu) if cpu > 0 else None,
        "per_day": per_day,
        "orders": figures["orders"],
        "year_100_symbols_minutes_extrapolated": round(year_bars / (bars / elapsed) / 60, 1),
        "note": f"{len(per_day)} trading day(s) of {n_symbols} symbols replayed (the first includes the actors' "
        "start-up and model loading); the year of 100 symbols (252 x 390 x 100 bars) is extrapolated "
        "linearly from the slice's bars/s",
    }
