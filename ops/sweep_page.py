"""The sweep's report page: one self-contained HTML file, inline SVG, no script, nothing from the network.

Sections: the objective surface (a heatmap of the out-of-sample objective
over the two `surface` keys, the best point of each cell when other keys
vary too), the top points' out-of-sample equity curves (growth from the
side's start, percent), and every point's in-sample and out-of-sample
figures side by side, failed points with their error.
"""

from __future__ import annotations

import json
from typing import Any

from stockade.ops.tearsheet import PAD, H, W, _day, _e, _scale

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _label(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _num(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    return f"{x:,.3f}"


def _value(p: dict[str, Any], objective: str) -> float | None:
    if not p["ok"]:
        return None
    v = p["out_of_sample"][objective]
    return None if v is None or isinstance(v, str) else float(v)


def _colour(v: float, lo: float, hi: float) -> str:
    """Red (worst) through yellow to green (best)."""
    t = 0.5 if hi == lo else (v - lo) / (hi - lo)
    r = round(215 if t < 0.5 else 215 - (t - 0.5) * 2 * 170)
    g = round(60 + t * 2 * 150 if t < 0.5 else 210)
    return f"rgb({r},{g},70)"


def heatmap(doc: dict[str, Any]) -> str:
    s = doc["sweep"]
    objective = s["objective"]
    keys = list(s["surface"]) or list(s["keys"][:2])
    title = f"Objective surface: out-of-sample {objective}"
    if len(keys) < 2:
        keys = [*keys, ""]  # one key: a single row
    kx, ky = keys
    points = doc["points"]
    xs = sorted({_label(p["values"][kx]) for p in points}, key=_sort_key)
    ys = sorted({_label(p["values"][ky]) for p in points}, key=_sort_key) if ky else [""]
    best: dict[tuple[str, str], tuple[float | None, str]] = {}
    for p in points:
        cell = (_label(p["values"][kx]), _label(p["values"][ky]) if ky else "")
        v = _value(p, objective)
        if p.get("excluded") and v is not None:
            v = None  # over the drawdown limit: not a candidate
        old = best.get(cell)
        if old is None or (v is not None and (old[0] is None or v > old[0])):
            best[cell] = (v, p["point"])
    values = [v for v, _ in best.values() if v is not None and v != float("inf")]
    lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
    cw = (W - 2 * PAD - 60) / max(1, len(xs))
    ch = min(40.0, (H * 1.5 - 60) / max(1, len(ys)))
    height = 40 + ch * len(ys) + 30
    cells = []
    for j, yv in enumerate(ys):
        y = 20 + j * ch
        cells.append(f'<text x="{PAD + 55}" y="{y + ch / 2 + 4:.1f}" text-anchor="end">{_e(yv)}</text>')
        for i, xv in enumerate(xs):
            x = PAD + 60 + i * cw
            v, point = best.get((xv, yv), (None, ""))
            fill = "#ddd" if v is None else _colour(min(v, hi), lo, hi)
            tip = f"{kx}={xv}" + (f", {ky}={yv}" if ky else "") + f": {objective} {_num(v)} ({point or 'no point'})"
            cells.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{cw - 2:.1f}" height="{ch - 2:.1f}" fill="{fill}">'
                f"<title>{_e(tip)}</title></rect>"
                f'<text x="{x + cw / 2:.1f}" y="{y + ch / 2 + 4:.1f}" text-anchor="middle">{_e(_num(v))}</text>'
            )
    for i, xv in enumerate(xs):
        cells.append(
            f'<text x="{PAD + 60 + i * cw + cw / 2:.1f}" y="{20 + ch * len(ys) + 16:.1f}" '
            f'text-anchor="middle">{_e(xv)}</text>'
        )
    axis = (
        f'<text x="{W / 2:.0f}" y="{height - 2:.0f}" text-anchor="middle">{_e(kx)}</text>'
        f'<text x="4" y="12">{_e(ky)}</text>'
    )
    return (
        f"<figure><figcaption>{_e(title)} (grey: failed, no figure or over the drawdown limit)</figcaption>"
        f'<svg class="chart" viewBox="0 0 {W} {height:.0f}" role="img" aria-label="{_e(title)}">'
        f"{axis}{''.join(cells)}</svg></figure>"
    )


def _sort_key(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def curves(doc: dict[str, Any]) -> str:
    top = [p for p in doc["points"] if p.get("rank") and p["rank"] <= doc["sweep"]["top"]]
    top.sort(key=lambda p: p["rank"])
    title = f"Top {len(top)} points: out-of-sample equity (growth from the side's start, %)"
    series = []
    for p in top:
        c = p["out_of_sample"]["curve"]
        if c:
            first = c[0][1]
            series.append((p, [(t, (v / first - 1.0) * 100.0 if first else 0.0) for t, v in c]))
    if not series:
        return f'<figure><figcaption>{_e(title)}</figcaption><p class="empty">no ranked point</p></figure>'
    # x is the snapshot's position, not its time: nights and weekends take no room.
    longest = max(len(s) for _, s in series)
    ts = [t for _, s in series for t, _ in s]
    vs = [v for _, s in series for _, v in s]
    sx = _scale(0, max(1, longest - 1), PAD, W - 10)
    lo, hi = min(vs), max(vs)
    sy = _scale(lo, hi, H - 25, 10)
    paths, legend = [], []
    for n, (p, s) in enumerate(series):
        colour = COLORS[n % len(COLORS)]
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(i):.1f},{sy(v):.1f}" for i, (_, v) in enumerate(s))
        name = f"#{p['rank']} {p['point']} " + ", ".join(f"{k}={_label(v)}" for k, v in p["values"].items())
        paths.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.5"><title>{_e(name)}</title></path>')
        legend.append(f'<li><span style="color:{colour}">&#9632;</span> {_e(name)}</li>')
    axis = (
        f'<text x="2" y="14">{hi:+.2f}%</text><text x="2" y="{H - 25}">{lo:+.2f}%</text>'
        f'<text x="{PAD}" y="{H - 5}">{_day(min(ts))}</text>'
        f'<text x="{W - 10}" y="{H - 5}" text-anchor="end">{_day(max(ts))}</text>'
    )
    return (
        f'<figure><figcaption>{_e(title)}</figcaption><svg class="chart" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{_e(title)}">{axis}{"".join(paths)}</svg><ul class="legend">{"".join(legend)}</ul></figure>'
    )


def points_table(doc: dict[str, Any]) -> str:
    from stockade.ops.sweep import ranked

    keys = doc["sweep"]["keys"]
    cols = ("return_pct", "sharpe", "sortino", "profit_factor", "max_drawdown_pct", "trades")
    head = (
        "<tr><th>rank</th><th>point</th>"
        + "".join(f"<th>{_e(k)}</th>" for k in keys)
        + "".join(f"<th>IS {_e(c)}</th><th>OOS {_e(c)}</th>" for c in cols)
        + "<th>tries</th><th>note</th></tr>"
    )
    rows = []
    for p in ranked(doc["points"]):
        vals = "".join(f"<td>{_e(_label(p['values'][k]))}</td>" for k in keys)
        lead = f"<td>{p['rank'] or '-'}</td><td>{_e(p['point'])}</td>{vals}"
        if not p["ok"]:
            rows.append(
                f'<tr class="failed">{lead}<td colspan="{2 * len(cols)}">failed: {_e(p["error"])}</td>'
                f"<td>{p['attempts']}</td><td></td></tr>"
            )
            continue
        figs = "".join(
            f"<td>{_e(_num(p['in_sample'][c]))}</td><td><b>{_e(_num(p['out_of_sample'][c]))}</b></td>" for c in cols
        )
        rows.append(f"<tr>{lead}{figs}<td>{p['attempts']}</td><td>{_e(p.get('excluded', ''))}</td></tr>")
    return f"<h3>Every point: in-sample (IS) beside out-of-sample (OOS)</h3><table>{head}{''.join(rows)}</table>"


def render(doc: dict[str, Any]) -> str:
    s = doc["sweep"]
    run = doc["run"]
    side = (
        f"walk-forward, {s['walk_forward']} folds"
        if s["walk_forward"]
        else f"last {s['oos_fraction']:g} of the sessions out-of-sample"
    )
    headline = (
        f"{_e(s['start'])} to {_e(s['end'])}: {s['points']} points ({_e(s['mode'])}), objective "
        f"{_e(s['objective'])} out-of-sample ({_e(side)}), max drawdown "
        f"{_e(str(s['max_drawdown_pct']) + '%' if s['max_drawdown_pct'] else 'no limit')}; "
        f"{run['failed']} failed, {run['retries']} retried; {_e(run['backend'])}"
    )
    settings = {k: v for k, v in s.items()}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>stockade sweep</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;max-width:1100px;margin:1em auto;color:#222}}
figure{{margin:1em 0}} figcaption{{font-weight:600}} svg.chart{{width:100%;height:auto;background:#fafafa}}
svg text{{font-size:11px;fill:#222}} table{{border-collapse:collapse;font-size:12px}} td,th{{padding:2px 6px;text-align:right}}
tr:nth-child(even){{background:#f3f3f3}} tr.failed td{{color:#a00}} pre{{background:#f6f6f6;padding:8px;
overflow:auto;font-size:12px}} .empty{{color:#888}} ul.legend{{list-style:none;padding:0;font-size:12px}}
div.wide{{overflow-x:auto}}
</style></head><body>
<h1>Sweep</h1><p>{headline}</p>
{heatmap(doc)}
{curves(doc)}
<div class="wide">{points_table(doc)}</div>
<h3>Sweep file</h3><pre>{_e(json.dumps(settings, indent=1, sort_keys=True, default=str))}</pre>
<h3>Base settings</h3><pre>{_e(json.dumps(doc["base_settings"], indent=1, sort_keys=True, default=str))}</pre>
</body></html>
"""
