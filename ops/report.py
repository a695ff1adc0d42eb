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
- refusals: the risk guard's refusals by rule (as far as retention keeps them).
- alerts: how many by level, and the newest (a backtest's are recorded, never delivered).

`--compare-data-dir OTHER` puts a second data dir's figures beside the first
(a backtest next to a live period, or two backtests), column by column;
`--html FILE` writes the comparison as a page with both equity curves.
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
RECENT_ALERTS = 20


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
        "first_day": closes[0][0] if closes else None,
        "last_day": closes[-1][0] if closes else None,
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
        refusals = Counter(r.rule for _, r in store.decisions.items(txn=txn) if not r.allowed)
        alerts = [r for _, r in store.alerts.items(txn=txn)]
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
        "refusals": {"total": sum(refusals.values()), "by_rule": dict(sorted(refusals.items()))},
        "alerts": {
            "total": len(alerts),
            "by_level": dict(sorted(Counter(a.level for a in alerts).items())),
            "recent": [
                {"ts_ns": a.ts_ns, "level": a.level, "key": a.key, "text": a.text}
                for a in sorted(alerts, key=lambda a: a.ts_ns, reverse=True)[:RECENT_ALERTS]
            ],
        },
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
    rf = rep["refusals"]
    by = ", ".join(f"{k} {v}" for k, v in rf["by_rule"].items()) or "none"
    out.append(f"== risk refusals == {rf['total']} ({by})")
    al = rep["alerts"]
    by = ", ".join(f"{k} {v}" for k, v in al["by_level"].items()) or "none"
    out.append(f"== alerts == {al['total']} ({by})")
    for a in al["recent"][:5]:
        when = datetime.fromtimestamp(a["ts_ns"] / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
        out.append(f"  {when}Z {a['level']:<9} {a['key']}: {a['text']}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python run.py report", description="Trading results from a data dir.")
    parser.add_argument("--data-dir", help="the daemon's data dir (default: $STATE_DIRECTORY or ./var)")
    parser.add_argument(
        "--compare-data-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="another data dir (a backtest's --out, or a live one) shown in a column beside --data-dir; repeatable",
    )
    parser.add_argument("--html", metavar="FILE", help="with --compare-data-dir: also write the comparison page")
    parser.add_argument("--settings", help="accepted for symmetry with the other commands; unused")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    if args.html and not args.compare_data_dir:
        print("report: --html is for a comparison; give --compare-data-dir DIR too", file=sys.stderr)
        return 2
    columns: list[Column] = []
    for data in (resolve_data_dir(args.data_dir), *map(Path, args.compare_data_dir)):
        read = _read(Path(data))
        if isinstance(read, str):
            print(read, file=sys.stderr)
            return 1
        columns.append(read)
    if len(columns) > 1:
        if args.html:
            from stockade.ops.tearsheet import compare_page

            Path(args.html).write_text(compare_page(columns))
        if args.json:
            print(_json({"periods": [{"label": c.label, "data_dir": c.data_dir, **c.report} for c in columns]}))
        else:
            print(render_compare(columns))
        return 0
    rep = columns[0].report
    if args.json:
        print(_json(rep))
    else:
        print(render(rep))
    return 0


class Column(msgspec.Struct, frozen=True):
    """One data dir's figures in a comparison: its label, path, report and equity curve."""

    label: str
    data_dir: str
    report: dict[str, Any]
    equity: list[tuple[int, float]]


def _read(data: Path) -> Column | str:
    """The report of `data` and its equity curve, or the line saying why not."""
    if not (data / ENV_DIRNAME / "data.mdb").exists():
        return f"report: no stockade data in {data} (nothing has run with this data dir yet)"
    try:
        store = Store.open(data, readonly=True)
    except StorageError as exc:
        return f"report: cannot read {data}: {exc}"
    try:
        rep = build_report(store)
        with store.read() as txn:
            equity = sorted((r.ts_ns, r.equity) for _, r in store.equity.items(txn=txn))
    finally:
        store.close()
    return Column(_label(data, rep), str(data), rep, equity)


def _label(data: Path, rep: dict[str, Any]) -> str:
    """ "backtest" for a backtest's out dir (its backtest.json), else "live"; then its period."""
    kind = "backtest" if (data / "backtest.json").exists() or (data / "walk_forward.json").exists() else "live"
    p = rep["portfolio"]
    return f"{kind} {p['first_day'] or '?'}..{p['last_day'] or '?'}"


# (row label, getter, format) of the comparison; the per-rule, per-level and per-member rows are added per run.
_COMPARE_ROWS: tuple[tuple[str, Any, str], ...] = (
    ("days", lambda r: r["portfolio"]["days"], "int"),
    ("equity first", lambda r: r["portfolio"]["first_equity"], "money"),
    ("equity last", lambda r: r["portfolio"]["last_equity"], "money"),
    ("net P&L (closed trades)", lambda r: r["overall"]["net_pnl"], "money"),
    ("unrealised P&L", lambda r: r["overall"]["unrealized_pnl"], "money"),
    ("trades", lambda r: r["overall"]["trades"], "int"),
    ("hit rate", lambda r: r["overall"]["win_rate"], "pct"),
    ("profit factor", lambda r: r["overall"]["profit_factor"], "num"),
    ("expectancy", lambda r: r["overall"]["expectancy"], "money"),
    ("max drawdown", lambda r: r["portfolio"]["max_drawdown"], "money"),
    ("max drawdown %", lambda r: r["portfolio"]["max_drawdown_pct"], "num"),
    ("sharpe (daily, annualised)", lambda r: r["portfolio"]["sharpe"], "num"),
    ("fills", lambda r: r["fills"], "int"),
    ("proposals", lambda r: r["proposals"]["total"], "int"),
    ("risk refusals", lambda r: r["refusals"]["total"], "int"),
    ("alerts", lambda r: r["alerts"]["total"], "int"),
)


def compare_rows(reps: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """The comparison as (row label, one formatted cell per report) rows."""
    rows = [(name, [_fmt(get(r), kind) for r in reps]) for name, get, kind in _COMPARE_ROWS]
    for rule in sorted({k for r in reps for k in r["refusals"]["by_rule"]}):
        rows.append((f"refused by {rule}", [str(r["refusals"]["by_rule"].get(rule, 0)) for r in reps]))
    for level in sorted({k for r in reps for k in r["alerts"]["by_level"]}):
        rows.append((f"alerts {level}", [str(r["alerts"]["by_level"].get(level, 0)) for r in reps]))
    for member in sorted({m for r in reps for m in r["members"]}):
        for col, kind in (("net_pnl", "money"), ("trades", "int"), ("win_rate", "pct")):
            cells = [_fmt(r["members"][member].get(col), kind) if member in r["members"] else "-" for r in reps]
            rows.append((f"member {member}: {col}", cells))
    return rows


def render_compare(columns: list[Column]) -> str:
    """The periods side by side, one column each."""
    header = ["", *(c.label for c in columns)]
    body = [[name, *cells] for name, cells in compare_rows([c.report for c in columns])]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [f"== comparison: {len(columns)} periods (a trade counts for every member that voted its side) =="]
    for i, c in enumerate(columns, start=1):
        lines.append(f"  [{i}] {c.label}: {c.data_dir}")
    for row in [header, *body]:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


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
