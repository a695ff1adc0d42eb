"""A sweep point's figures, in-sample and out-of-sample, from its backtests' records.

A segment is a stretch of one backtest: its equity snapshots (the
reconciler's, in time order) and the realised P&L of the trades closed in it.
A side (in-sample or out-of-sample) is one segment, or the segments of the
walk-forward folds chained (each fold restarts from the initial cash, so its
curve is scaled to start where the previous fold ended).

- return_pct: the chained growth of the side, percent;
- sharpe, sortino: of the returns between consecutive snapshots, annualised
  with sqrt(252 x snapshots per session day) (the same definitions as
  `trading/performance.py`; a short run has few days, so daily returns would
  leave most points without a figure);
- profit_factor: gross profit / gross loss of the trades closed in the side;
- max_drawdown_pct: of the chained curve.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import msgspec

from stockade.trading import performance as perf

TRADING_DAYS = 252
CURVE_POINTS = 200  # an equity curve kept for the page: enough for a small chart


class Segment(msgspec.Struct, frozen=True):
    equity: list[tuple[int, float]]
    pnls: list[float]


def read_run(out: str | Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(equity snapshots, (exit time, realised P&L) of each closed trade) of one backtest's out dir."""
    from stockade.storage.store import Store
    from stockade.trading.trades import build_trades, members_by_proposal

    store = Store.open(Path(out), readonly=True)
    try:
        with store.read() as txn:
            equity = sorted((r.ts_ns, r.equity) for _, r in store.equity.items(txn=txn))
            fills = list(store.fills.values(txn=txn))
            orders = dict(store.orders.items(txn=txn))
            decisions = [r for _, r in store.voter_decisions.items(txn=txn)]
    finally:
        store.close()
    # Closed trades only: no marks needed (they price the open ones).
    trades = build_trades(fills, orders, members_by_proposal(decisions))
    closed = sorted((t.exit_ns, t.realized_pnl) for t in trades if t.closed_qty > 0)
    return equity, closed


def day_of(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%d")


def split(equity: list[tuple[int, float]], closed: list[tuple[int, float]], oos_start: str) -> tuple[Segment, Segment]:
    """In-sample (days before `oos_start`) and out-of-sample (from it; starting at the last in-sample equity)."""
    is_eq = [p for p in equity if day_of(p[0]) < oos_start]
    oos_eq = [p for p in equity if day_of(p[0]) >= oos_start]
    if is_eq and oos_eq:
        oos_eq = [is_eq[-1], *oos_eq]
    is_pnl = [pnl for t, pnl in closed if day_of(t) < oos_start]
    oos_pnl = [pnl for t, pnl in closed if day_of(t) >= oos_start]
    return Segment(is_eq, is_pnl), Segment(oos_eq, oos_pnl)


def figures(segments: list[Segment]) -> dict[str, Any]:
    """The side's figures (see the module docstring); None where there is nothing to compute on."""
    curve: list[tuple[int, float]] = []
    returns: list[float] = []
    pnls: list[float] = []
    days: set[str] = set()
    level = None
    for seg in segments:
        pnls.extend(seg.pnls)
        if not seg.equity:
            continue
        first = seg.equity[0][1]
        scale = 1.0 if level is None or first <= 0 else level / first
        for t, v in seg.equity:
            curve.append((t, v * scale))
            days.add(day_of(t))
        returns.extend(perf.simple_returns([v for _, v in seg.equity]))
        level = curve[-1][1]
    per_year = TRADING_DAYS * (len(curve) / len(days)) if days else 1.0
    dd = perf.max_drawdown(v for _, v in curve)
    growth = 1.0
    for seg in segments:
        if seg.equity and seg.equity[0][1] > 0:
            growth *= seg.equity[-1][1] / seg.equity[0][1]
    return {
        "return_pct": round((growth - 1.0) * 100.0, 6) if curve else None,
        "sharpe": _r(perf.sharpe(returns, per_year)),
        "sortino": _r(perf.sortino(returns, per_year)),
        "profit_factor": _r(perf.profit_factor(pnls)),
        "max_drawdown_pct": _r(dd.pct if dd else None),
        "trades": len(pnls),
        "snapshots": len(curve),
        "curve": thin(curve),
    }


def _r(x: float | None) -> float | None:
    return x if x is None or math.isinf(x) else round(x, 9)


def thin(points: list[tuple[int, float]], n: int = CURVE_POINTS) -> list[tuple[int, float]]:
    if len(points) <= n:
        return [(t, round(v, 4)) for t, v in points]
    step = (len(points) - 1) / (n - 1)
    return [(points[round(i * step)][0], round(points[round(i * step)][1], 4)) for i in range(n)]
