"""The backtest tearsheet: one self-contained HTML file, charts drawn as inline SVG.

No script, font or style sheet from the network: the file opens offline,
and is the same bytes for the same run. Sections: equity and drawdown,
monthly returns, each symbol's price with its fills, attribution per
ensemble member and per symbol (`ops/report.py`'s figures), risk refusals
by rule, the alerts the run raised (recorded, never delivered), and the
run's request, settings and data fingerprints.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from stockade.storage.store import Store

W, H = 900, 220
PAD = 40
MAX_POINTS = 1500


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _thin(points: Sequence[tuple[int, float]], n: int = MAX_POINTS) -> list[tuple[int, float]]:
    """At most `n` points, evenly picked, first and last kept (a chart needs no more)."""
    if len(points) <= n:
        return list(points)
    step = (len(points) - 1) / (n - 1)
    return [points[round(i * step)] for i in range(n)]


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _day(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%d")


def line_chart(
    title: str,
    series: Sequence[tuple[int, float]],
    color: str = "#1f77b4",
    fill: bool = False,
    marks: Sequence[tuple[int, float, str, str]] = (),
    fmt: str = "{:,.2f}",
) -> str:
    """An SVG line chart of (ts_ns, value); `marks` are (ts_ns, value, colour, tooltip) dots."""
    pts = _thin(series)
    if not pts:
        return f'<figure><figcaption>{_e(title)}</figcaption><p class="empty">no data</p></figure>'
    xs = [t for t, _ in pts] + [t for t, *_ in marks]
    ys = [v for _, v in pts] + [v for _, v, *_ in marks]
    sx = _scale(min(xs), max(xs), PAD, W - 10)
    lo, hi = min(ys), max(ys)
    sy = _scale(lo, hi, H - 25, 10)
    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(t):.1f},{sy(v):.1f}" for i, (t, v) in enumerate(pts))
    area = ""
    if fill:
        base = sy(max(lo, min(0.0, hi)))
        area = (
            f'<path d="{path} L{sx(pts[-1][0]):.1f},{base:.1f} L{sx(pts[0][0]):.1f},{base:.1f} Z" '
            f'fill="{color}" fill-opacity="0.25" stroke="none"/>'
        )
    dots = "".join(
        f'<circle cx="{sx(t):.1f}" cy="{sy(v):.1f}" r="3.5" fill="{c}"><title>{_e(tip)}</title></circle>'
        for t, v, c, tip in marks
    )
    axis = (
        f'<text x="2" y="14">{_e(fmt.format(hi))}</text><text x="2" y="{H - 25}">{_e(fmt.format(lo))}</text>'
        f'<text x="{PAD}" y="{H - 5}">{_day(min(xs))}</text>'
        f'<text x="{W - 10}" y="{H - 5}" text-anchor="end">{_day(max(xs))}</text>'
    )
    return (
        f'<figure><figcaption>{_e(title)}</figcaption><svg class="chart" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{_e(title)}">{axis}{area}<path d="{path}" fill="none" stroke="{color}" '
        f'stroke-width="1.5"/>{dots}</svg></figure>'
    )


def bar_chart(title: str, bars: Sequence[tuple[str, float]], fmt: str = "{:+.2f}%") -> str:
    """An SVG bar chart of (label, value): green up, red down, labelled."""
    if not bars:
        return f'<figure><figcaption>{_e(title)}</figcaption><p class="empty">no data</p></figure>'
    top = max(abs(v) for _, v in bars) or 1.0
    bw = (W - PAD - 10) / len(bars)
    mid = H / 2
    out = []
    for i, (label, v) in enumerate(bars):
        h = abs(v) / top * (mid - 25)
        x = PAD + i * bw
        y = mid - h if v >= 0 else mid
        out.append(
            f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{max(1.0, bw - 4):.1f}" height="{h:.1f}" '
            f'fill="{"#2ca02c" if v >= 0 else "#d62728"}"><title>{_e(label)}: {_e(fmt.format(v))}</title></rect>'
            f'<text x="{x + bw / 2:.1f}" y="{H - 5}" text-anchor="middle">{_e(label)}</text>'
            f'<text x="{x + bw / 2:.1f}" y="{(y - 3) if v >= 0 else (y + h + 12):.1f}" '
            f'text-anchor="middle">{_e(fmt.format(v))}</text>'
        )
    return (
        f'<figure><figcaption>{_e(title)}</figcaption><svg class="chart" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{_e(title)}"><line x1="{PAD}" y1="{mid}" x2="{W - 10}" y2="{mid}" stroke="#999"/>'
        f"{''.join(out)}</svg></figure>"
    )


def drawdown(equity: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """Percent below the running peak at each point."""
    peak = float("-inf")
    out = []
    for t, v in equity:
        peak = max(peak, v)
        out.append((t, (v / peak - 1.0) * 100.0 if peak > 0 else 0.0))
    return out


def monthly_returns(equity: Sequence[tuple[int, float]]) -> list[tuple[str, float]]:
    """(YYYY-MM, percent return) from each month's last equity over the previous month's (or the first)."""
    last: dict[str, float] = {}
    first = equity[0][1] if equity else 0.0
    for t, v in equity:
        last[_day(t)[:7]] = v
    out, prev = [], first
    for month in sorted(last):
        out.append((month, (last[month] / prev - 1.0) * 100.0 if prev > 0 else 0.0))
        prev = last[month]
    return out


def _table(title: str, rows: dict[str, dict[str, Any]], cols: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in ("", *cols))
    body = (
        "".join(
            "<tr><td>" + _e(name) + "</td>" + "".join(f"<td>{_e(_num(r.get(c)))}</td>" for c in cols) + "</tr>"
            for name, r in rows.items()
        )
        or f'<tr><td colspan="{len(cols) + 1}">none</td></tr>'
    )
    return f"<h3>{_e(title)}</h3><table><tr>{head}</tr>{body}</table>"


def _num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:,.4f}" if abs(x) < 10 else f"{x:,.2f}"
    return "" if x is None else str(x)


def alerts_section(alerts: dict[str, Any]) -> str:
    """The alerts a run raised: counts by level (a chart) and the newest, as `report` gives them."""
    title = "<h3>Alerts (recorded in the run's data; a backtest delivers none)</h3>"
    if not alerts["total"]:
        return title + "<p>none</p>"
    rows = "".join(
        f"<tr><td>{_e(dt.datetime.fromtimestamp(a['ts_ns'] / 1e9, dt.UTC).strftime('%Y-%m-%d %H:%M:%S'))}Z</td>"
        f'<td>{_e(a["level"])}</td><td>{_e(a["key"])}</td><td style="text-align:left">{_e(a["text"])}</td></tr>'
        for a in alerts["recent"]
    )
    return (
        title
        + bar_chart(f"Alerts by level ({alerts['total']})", sorted(alerts["by_level"].items()), fmt="{:.0f}")
        + f"<table><tr><th>time</th><th>level</th><th>key</th><th>text</th></tr>{rows}</table>"
    )


def render(
    store: Store, summary: dict[str, Any], settings: dict[str, Any], prices: dict[str, list[tuple[int, float]]]
) -> str:
    """The tearsheet of the run in `store` (see the module docstring)."""
    from stockade.ops.report import build_report

    with store.read() as txn:
        equity = [(r.ts_ns, r.equity) for _, r in store.equity.items(txn=txn)]
        fills = list(store.fills.values(txn=txn))
        refusals = Counter(r.rule for _, r in store.decisions.items(txn=txn) if not r.allowed)
    rep = build_report(store)
    cols = ("trades", "win_rate", "profit_factor", "expectancy", "net_pnl", "max_drawdown")
    parts = [
        line_chart("Equity (USD)", equity, fill=False),
        line_chart("Drawdown (% below peak)", drawdown(equity), color="#d62728", fill=True, fmt="{:.2f}%"),
        bar_chart("Monthly returns", monthly_returns(equity)),
    ]
    for symbol in sorted(prices):
        marks = [
            (
                f.ts_ns,
                f.price,
                "#2ca02c" if f.side == "buy" else "#d62728",
                f"{f.side} {f.qty} @ {f.price:.2f} {_day(f.ts_ns)}",
            )
            for f in fills
            if f.symbol == symbol
        ]
        parts.append(
            line_chart(f"{symbol}: price and fills (green buy, red sell)", prices[symbol], color="#555", marks=marks)
        )
    parts.append(_table("Attribution per ensemble member", rep["members"], cols))
    parts.append(_table("Attribution per symbol", rep["symbols"], cols))
    parts.append(
        bar_chart("Risk refusals by rule", sorted(refusals.items()), fmt="{:.0f}")
        if refusals
        else "<h3>Risk refusals by rule</h3><p>none</p>"
    )
    parts.append(alerts_section(rep["alerts"]))
    run = {k: v for k, v in summary.items() if k not in ("wall_s", "events_per_s", "out")}
    parts.append("<h3>Run</h3><pre>" + _e(json.dumps(run, indent=1, sort_keys=True)) + "</pre>")
    parts.append("<h3>Settings</h3><pre>" + _e(json.dumps(settings, indent=1, sort_keys=True)) + "</pre>")
    p = rep["portfolio"]
    first, last = (equity[0][1], equity[-1][1]) if equity else (None, None)
    headline = (
        f"{_e(summary.get('start'))} to {_e(summary.get('end'))}, {_e(', '.join(summary.get('symbols', ())))}"
        f": equity {_e(_num(first))} &rarr; {_e(_num(last))}, Sharpe {_e(_num(p.get('sharpe')) or 'n/a')}, "
        f"max drawdown {_e(_num(p.get('max_drawdown_pct')))}%, {rep['fills']} fills"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>stockade backtest</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;max-width:960px;margin:1em auto;color:#222}}
figure{{margin:1em 0}} figcaption{{font-weight:600}} svg.chart{{width:100%;height:auto;background:#fafafa}}
svg text{{font-size:11px;fill:#444}} table{{border-collapse:collapse}} td,th{{padding:2px 8px;text-align:right}}
td:first-child{{text-align:left}} tr:nth-child(even){{background:#f3f3f3}} pre{{background:#f6f6f6;padding:8px;
overflow:auto;font-size:12px}} .empty{{color:#888}}
</style></head><body>
<h1>Backtest tearsheet</h1><p>{headline}</p>
{"".join(parts)}
</body></html>
"""


COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")


def overlay_chart(title: str, series: Sequence[tuple[str, Sequence[tuple[int, float]]]]) -> str:
    """Equity curves of different periods on one chart: % from each one's start, over its share of its period."""
    lines, legend = [], []
    norm: list[list[tuple[float, float]]] = []
    for _, curve in series:
        pts = _thin(curve)
        if not pts or pts[0][1] <= 0:
            norm.append([])
            continue
        t0, t1, e0 = pts[0][0], pts[-1][0], pts[0][1]
        norm.append([((t - t0) / ((t1 - t0) or 1), (v / e0 - 1.0) * 100.0) for t, v in pts])
    ys = [y for n in norm for _, y in n]
    if not ys:
        return f'<figure><figcaption>{_e(title)}</figcaption><p class="empty">no data</p></figure>'
    sx = _scale(0.0, 1.0, PAD, W - 10)
    lo, hi = min(ys), max(ys)
    sy = _scale(lo, hi, H - 25, 10)
    for i, ((label, _), scaled) in enumerate(zip(series, norm, strict=True)):
        color = COLORS[i % len(COLORS)]
        legend.append(f'<text x="{W - 10}" y="{14 + 13 * i}" text-anchor="end" style="fill:{color}">{_e(label)}</text>')
        if scaled:
            path = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(scaled))
            lines.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    axis = (
        f'<text x="2" y="14">{hi:+.2f}%</text><text x="2" y="{H - 25}">{lo:+.2f}%</text>'
        f'<text x="{PAD}" y="{H - 5}">start</text><text x="{W / 2:.0f}" y="{H - 5}" text-anchor="middle">'
        f'share of each period</text><text x="{W - 10}" y="{H - 5}" text-anchor="end">end</text>'
    )
    return (
        f'<figure><figcaption>{_e(title)}</figcaption><svg class="chart" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{_e(title)}">{axis}{"".join(lines)}{"".join(legend)}</svg></figure>'
    )


def compare_page(columns: Sequence[Any]) -> str:
    """Periods side by side (`report --compare-data-dir --html`): both equity curves, the figures in columns."""
    from stockade.ops.report import compare_rows

    parts = [overlay_chart("Equity, % from each period's start", [(c.label, c.equity) for c in columns])]
    for i, c in enumerate(columns):
        parts.append(line_chart(f"Equity (USD): {c.label}", c.equity, color=COLORS[i % len(COLORS)]))
    head = "".join(f"<th>{_e(h)}</th>" for h in ("", *(c.label for c in columns)))
    body = "".join(
        "<tr><td>" + _e(name) + "</td>" + "".join(f"<td>{_e(x)}</td>" for x in cells) + "</tr>"
        for name, cells in compare_rows([c.report for c in columns])
    )
    parts.append(f"<h3>Figures</h3><table><tr>{head}</tr>{body}</table>")
    dirs = "".join(f"<li>{_e(c.label)}: <code>{_e(c.data_dir)}</code></li>" for c in columns)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>stockade comparison</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;max-width:960px;margin:1em auto;color:#222}}
figure{{margin:1em 0}} figcaption{{font-weight:600}} svg.chart{{width:100%;height:auto;background:#fafafa}}
svg text{{font-size:11px;fill:#444}} table{{border-collapse:collapse}} td,th{{padding:2px 8px;text-align:right}}
td:first-child{{text-align:left}} tr:nth-child(even){{background:#f3f3f3}} .empty{{color:#888}}
</style></head><body>
<h1>Comparison</h1><ul>{dirs}</ul>
{"".join(parts)}
</body></html>
"""
