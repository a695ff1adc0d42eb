"""Micro-benchmark of the risk check: every rule, sizing and the bracket for one proposal (no I/O)."""

from __future__ import annotations

import random
import time
from typing import Any

from stockade.codecs.messages import AccountSnapshot, Position
from stockade.trading.brackets import BracketParams
from stockade.trading.pdt import DayTradeStatus
from stockade.trading.risk_rules import RiskContext, RiskLimits, RiskRequest, evaluate
from stockade.trading.stats import percentiles

SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY", "GOOG", "META", "TSLA")


def bench_risk_checks(n: int, seed: int = 5) -> dict[str, Any]:
    """Time `evaluate` over `n` seeded proposals against a book of five positions."""
    rng = random.Random(seed)
    now = time.time_ns()
    limits = RiskLimits(
        max_positions=10,
        max_sector_pct=30.0,
        max_portfolio_risk_pct=6.0,
        confidence_floor=0.5,
        target_volatility_pct=2.0,
        day_trade_budget=10,
        sectors={"AAPL": "tech", "MSFT": "tech", "NVDA": "tech", "AMZN": "consumer", "SPY": "index"},
    )
    brackets = BracketParams(method="percent", stop_loss_pct=2.0, take_profit_pct=4.0)
    held = tuple(Position(s, 20.0, 100.0 + i, 20.0 * (100.0 + i)) for i, s in enumerate(SYMBOLS[:5]))
    ctx = RiskContext(
        now_ns=now,
        trading_state="ACTIVE",
        market_open=True,
        account=AccountSnapshot(100_000.0, 100_000.0, 90_000.0, 180_000.0, False, now),
        positions=held,
        open_order_symbols=("GOOG",),
        start_of_day_equity=100_500.0,
        orders_last_minute=3,
        day_trades=DayTradeStatus(1, frozenset({"AAPL"})),
        in_flight=("GOOG",),
        stops={s: 97.0 for s in SYMBOLS[:3]},
        minutes_to_close=120.0,
    )
    requests = []
    for _ in range(n):
        sym = rng.choice(SYMBOLS)
        px = rng.uniform(20.0, 500.0)
        half = px * rng.uniform(0.5, 20.0) / 1e4
        requests.append(
            RiskRequest(
                symbol=sym,
                side=rng.choice(("buy", "sell")),
                price=px,
                bid=px - half,
                ask=px + half,
                quote_recv_ns=now,
                atr=px * rng.uniform(0.005, 0.04),
                confidence=rng.random(),
                size_scale=rng.choice((1.0, 0.5)),
            )
        )
    for r in requests[: min(200, n)]:  # warm-up
        evaluate(r, ctx, limits, brackets)
    samples = []
    allowed = 0
    clock = time.perf_counter_ns
    started = clock()
    for r in requests:
        t0 = clock()
        v = evaluate(r, ctx, limits, brackets)
        samples.append((clock() - t0) / 1e3)
        allowed += v.allowed
    total_s = (clock() - started) / 1e9
    return {
        "risk_check_us": percentiles(samples),
        "risk_checks_per_s": round(n / total_s) if total_s > 0 else 0,
        "allowed": allowed,
        "what": "trading.risk_rules.evaluate per proposal: every rule, sizing and the bracket; "
        "the actor adds one lmdb read snapshot (see pipeline for the whole path)",
    }
