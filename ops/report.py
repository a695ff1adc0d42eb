"""`python run.py report [--data-dir DIR] [--json]`: trading results from the data dir.

Reads the lmdb storage read-only (no lock), so it works beside a running
daemon. Sections:

- portfolio: from the equity snapshots (the reconciler's), the last one of
  each UTC day: daily returns, Sharpe and Sortino annualised with sqrt(252),
  VaR/ES(95%) of a daily return, max drawdown over every snapshot.
- members (rule strategies and ML models alike) and symbols: closed
  round-trip trades (`trading.trades`), a trade counting for each member
  that voted on its side; Sharpe, Sortino, VaR and ES on per-trade returns
  (P&L over entry value, not annualised), max drawdown of the cumulative P&L.
- open trades: unrealised P&L at the latest known price.
- proposals: the ensemble voter's decisions by outcome.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from stockade.codecs.records import EquitySnapshot
from stockade.config.names import STRATEGY_NAMES
from stockade.config.paths import data_dir as resolve_data_dir
from stockade.storage.environment import ENV_DIRNAME, StorageError
from stockade.storage.store import Store
from stockade.trading import performance as perf
from stockade.trading.trades import UNATTRIBUTED, Trade, build_trades, group, members_by_proposal

TRADING_DAYS = 252


def daily_closes(snapshots: list[EquitySnapshot]) -> list[tuple[str, float]]:
    """(UTC date, equity) of the last snapshot of each day, in date order."""
    last: dict[str, float] = {}
    for s in sorted(snapshots, key=lambda s: s.ts_ns):
        day = datetime.fromtimestamp(s.ts_ns / 1e9, UTC).strftime("%Y-%m-%d")
        last[day] = s.equity
    return sorted(last.items())


def portfolio(snapshots: list[EquitySnapshot]) -> dict[str, Any]:
    closes = daily_closes(snapshots)
    returns = perf.simple_returns([e for _, e in closes])
    dd = perf.max_drawdown(s.equity for s in sorted(snapshots, key=lambda s: s.ts_ns))
    return {
        "snapshots": len(snapshots),
        "days": len(closes),
        "first_equity": closes[0][1] if closes else None,
        "last_equity": closes[-1][1] if closes else None,
        "daily_returns": len(returns),
        "sharpe": perf.sharpe(returns, TRADING_DAYS),
        "sortino": perf.sortino(returns, TRADING_DAYS),
        "max_drawdown": dd.amount if dd else None,
        "max_drawdown_pct": dd.pct if dd else None,
        "var_95": perf.value_at_risk(returns),
        "es_95": perf.expected_shortfall(returns),
    }


def _stats(trades: list[Trade]) -> dict[str, Any]:
    closed = sorted((t for t in trades if t.closed_qty > 0), key=lambda t: t.exit_ns)
    stats = perf.trade_stats([t.realized_pnl for t in closed], [t.ret for t in closed])
    return msgspec.to_builtins(stats) | {"unrealized_pnl": sum(t.unrealized_pnl for t in trades)}


def _kind(member: str) -> str:
    if member == UNATTRIBUTED:
        return "none"  # orders from no proposal: adopted positions, manual closes
    return "rule" if member in STRATEGY_NAMES else "model"


def build_report(store: Store) -> dict[str, Any]:
    """The whole report as plain data (what --json prints)."""
    with store.read() as txn:
        fills = list(store.fills.values(txn=txn))
        orders = dict(store.orders.items(txn=txn))
        decisions = [r for _, r in store.voter_decisions.items(txn=txn)]
        snapshots = [r for _, r in store.equity.items(txn=txn)]
    marks: dict[str, tuple[int, float]] = {}
    for r in decisions:  # the newest price seen per symbol, fills included below
        if r.price > 0 and r.ts_ns >= marks.get(r.symbol, (0, 0.0))[0]:
            marks[r.symbol] = (r.ts_ns, r.price)
    for f in fills:
        if f.ts_ns >= marks.get(f.symbol, (0, 0.0))[0]:
            marks[f.symbol] = (f.ts_ns, f.price)
    trades = build_trades(fills, orders, members_by_proposal(decisions), {s: p for s, (_, p) in marks.items()})
    last_step: dict[str, str] = {}
    for r in decisions:
        last_step[r.proposal_id] = r.outcome
    return {
        "portfolio": portfolio(snapshots),
        "overall": _stats(trades),
        "members": {name: {"kind": _kind(name), **_stats(ts)} for name, ts in group(trades, "member").items()},
        "symbols": {name: _stats(ts) for name, ts in group(trades, "symbol").items()},
        "open_trades": [
            {
                "symbol": t.symbol,
                "direction": t.direction,
                "open_qty": t.open_qty,
                "entry_price": t.entry_price,
                "mark": t.mark,
                "unrealized_pnl": t.unrealized_pnl,
                "members": list(t.members),
            }
            for t in trades
            if t.open_qty > 0
        ],
        "proposals": {
            "total": len(last_step),
            "by_outcome": dict(sorted(Counter(last_step.values()).items())),
            "defensive": len({r.proposal_id for r in decisions if r.defensive}),
        },
        "fills": len(fills),
    }


# ---- text ------------------------------------------------------------------------


def _fmt(x: Any, kind: str = "num") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if kind == "pct":
        return f"{x * 100:.1f}%"
    if kind == "money":
        return f"{x:,.2f}"
    if kind == "int":
        return str(x)
    return f"{x:.3f}"


COLUMNS = (
    ("trades", "int"),
    ("win_rate", "pct"),
    ("profit_factor", "num"),
    ("expectancy", "money"),
    ("net_pnl", "money"),
    ("sharpe", "num"),
    ("sortino", "num"),
    ("max_drawdown", "money"),
    ("var_95", "pct"),
    ("es_95", "pct"),
    ("unrealized_pnl", "money"),
)


def _table(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    header = [title] + [c for c, _ in COLUMNS]
    body = [[name] + [_fmt(row.get(c), k) for c, k in COLUMNS] for name, row in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(header), *(line(r) for r in body)] if body else [line(header), "(no trades)"]


def render(rep: dict[str, Any]) -> str:
    p = rep["portfolio"]
    out = ["== portfolio (daily equity snapshots; Sharpe/Sortino annualised, VaR/ES of a daily return) =="]
    if p["days"]:
        out.append(
            f"days {p['days']}  equity {_fmt(p['first_equity'], 'money')} -> {_fmt(p['last_equity'], 'money')}"
            f"  sharpe {_fmt(p['sharpe'])}  sortino {_fmt(p['sortino'])}"
            f"  max drawdown {_fmt(p['max_drawdown'], 'money')} ({_fmt(p['max_drawdown_pct'], 'num')}%)"
            f"  VaR95 {_fmt(p['var_95'], 'pct')}  ES95 {_fmt(p['es_95'], 'pct')}"
        )
        if p["daily_returns"] < 2:
            out.append("(Sharpe, Sortino need at least 2 daily returns)")
    else:
        out.append("no equity snapshots yet")
    out.append("")
    out.append("== closed trades (per-trade returns; a trade counts for every member that voted its side) ==")
    out += _table("all", {"all": rep["overall"]})
    out.append("")
    out += _table("member", rep["members"])
    out.append("")
    out += _table("symbol", rep["symbols"])
    if rep["open_trades"]:
        out.append("")
        out.append("== open trades ==")
        for t in rep["open_trades"]:
            out.append(
                f"{t['symbol']:<6} {t['direction']:<5} {t['open_qty']:>6} @ {t['entry_price']:.2f}"
                f"  mark {_fmt(t['mark'], 'money')}  unrealised {_fmt(t['unrealized_pnl'], 'money')}"
                f"  members {','.join(t['members']) or '-'}"
            )
    pr = rep["proposals"]
    out.append("")
    by = ", ".join(f"{k} {v}" for k, v in pr["by_outcome"].items()) or "none"
    out.append(f"== proposals == {pr['total']} ({by}); defensive {pr['defensive']}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python run.py report", description="Trading results from a data dir.")
    parser.add_argument("--data-dir", help="the daemon's data dir (default: $STATE_DIRECTORY or ./var)")
    parser.add_argument("--settings", help="accepted for symmetry with the other commands; unused")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    data = resolve_data_dir(args.data_dir)
    if not (Path(data) / ENV_DIRNAME / "data.mdb").exists():
        print(f"report: no stockade data in {data} (nothing has run with this data dir yet)", file=sys.stderr)
        return 1
    try:
        store = Store.open(data, readonly=True)
    except StorageError as exc:
        print(f"report: cannot read {data}: {exc}", file=sys.stderr)
        return 1
    try:
        rep = build_report(store)
    finally:
        store.close()
    if args.json:
        print(_json(rep))
    else:
        print(render(rep))
    return 0


def _json(rep: dict[str, Any]) -> str:
    # JSON has no infinity: a profit factor with no losing trade is written "inf".
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return "inf" if x > 0 else "-inf" if x < 0 else None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return msgspec.json.encode(clean(rep)).decode()
