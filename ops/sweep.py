"""`python run.py sweep --grid sweep.toml [--ray auto|ADDRESS] [--workers N] [--out DIR]`.

Each point of the grid (ops/sweep_grid.py) is one backtest of the same data
with its own settings, or a walk-forward run when the grid file asks. The
sessions are cut in two: in-sample first, out-of-sample last
(`oos_fraction`); with `walk_forward = K` the out-of-sample side is the folds'
test windows and the in-sample side the folds' models on their own training
windows. Points are ranked by the objective on the out-of-sample side only,
points deeper than the drawdown limit are not ranked; the in-sample figures
stand beside them so an overfit point shows (great in-sample, poor out).

Results: a table on stdout, OUT/sweep.json, OUT/sweep.html (the objective
surface over two keys and the top points' equity curves), and each point's
backtest records in OUT/points/pNNNN (readable by `python run.py report`).

The points are independent units (ops/workers.py): run in this process, on a
local process pool (`--workers N`) or on Ray (`--ray`), the results are the
same bit for bit (each point is a pure function of its settings and the
data's seed, and the results are merged in point order).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from stockade.config.settings import Settings, SettingsError
from stockade.ops.backtest_data import BadInput
from stockade.ops.sweep_grid import Grid, GridError, load_grid
from stockade.ops.workers import Backend, Bar, ClusterLost, UnitResult, WorkersError, backend_from_args, run_units

SWEEP_JSON = "sweep.json"
SWEEP_HTML = "sweep.html"


class PointJob(msgspec.Struct, frozen=True, kw_only=True):
    """One point, all a worker needs: its settings, the data's flags, where to write, how to split."""

    index: int
    values: dict[str, Any]
    settings: Settings
    args: dict[str, Any]  # Backtest.prepare's flags; out is the point's own dir
    oos_start: str  # the first out-of-sample session (plain runs)
    walk_forward: int  # K folds (0: a plain run split at oos_start)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python run.py sweep", description="Backtest every point of a settings grid; rank out-of-sample."
    )
    p.add_argument("--grid", required=True, help="the sweep file (TOML: [sweep] and [grid]; README, Sweeps)")
    p.add_argument("--ray", metavar="auto|ADDRESS", help="run the points on Ray (needs the [cluster] extra)")
    p.add_argument("--workers", type=int, help="local worker processes (default 1: in this process)")
    p.add_argument("--out", default="sweep-out", help="results dir (must not hold an earlier sweep)")
    p.add_argument("--data-dir", help="where backtest data are cached (default: $STATE_DIRECTORY or ./var)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    # A point's warnings (one per backtest, times every point) would bury the table: errors only.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        grid = load_grid(args.grid)
        backend = backend_from_args(args.ray, args.workers)
        jobs = plan(grid, Path(args.out), args.data_dir)
    except (GridError, WorkersError, BadInput, SettingsError) as exc:
        print(f"sweep: {exc}", file=sys.stderr)
        return 2
    bar = Bar(len(jobs), sys.stderr)
    try:
        result = run_sweep(grid, jobs, backend, Path(args.out), on_done=bar.update)
    except ClusterLost as exc:
        print(f"sweep: {exc}", file=sys.stderr)
        return 1
    except WorkersError as exc:
        print(f"sweep: {exc}", file=sys.stderr)
        return 2
    print(table(result))
    print(f"results: {Path(args.out) / SWEEP_JSON}, {Path(args.out) / SWEEP_HTML}")
    return 0 if any(p["ok"] for p in result["points"]) else 1


def plan(grid: Grid, out: Path, data_dir: str | None) -> list[PointJob]:
    """Every point's job, the data checked once here (BadInput: one line, nothing written)."""
    from stockade.ops.backtest import Backtest
    from stockade.ops.walk_forward import sessions, windows

    if (out / SWEEP_JSON).exists() or (out / "points").exists():
        raise BadInput(f"--out {out}: already holds a sweep; give a new directory")
    s = grid.spec
    file = str(Path(grid.folder) / s.file) if s.file else None
    args = {
        "start": s.start,
        "end": s.end,
        "symbols": ",".join(s.symbols) if s.symbols else None,
        "source": s.source,
        "file": file,
        "seed": s.seed,
        "data_dir": data_dir,
        "walk_forward": s.walk_forward or None,
    }
    first = Backtest.prepare(grid.settings[0], argparse.Namespace(**args, out=str(out / "points" / "p0000")))
    days = sessions(dt.date.fromisoformat(first.request.start), dt.date.fromisoformat(first.request.end))
    oos_start = ""
    if s.walk_forward:
        windows(days, s.walk_forward)  # enough sessions for K folds, or BadInput
    else:
        n_is = len(days) - max(1, round(len(days) * s.oos_fraction))
        if n_is < 1:
            raise BadInput(
                f"{s.start}..{s.end}: {len(days)} session(s) cannot be split into in-sample and out-of-sample"
            )
        oos_start = days[n_is].isoformat()
    # The same data for every point: the first point's resolved request (symbols, seed).
    args.update(symbols=",".join(first.request.symbols), seed=first.request.seed, data_dir=first.models_dir)
    return [
        PointJob(
            index=i,
            values=values,
            settings=settings,
            args={**args, "out": str(out / "points" / f"p{i:04d}")},
            oos_start=oos_start,
            walk_forward=s.walk_forward,
        )
        for i, (values, settings) in enumerate(zip(grid.points, grid.settings, strict=True))
    ]


def run_point(job: PointJob) -> dict[str, Any]:
    """A worker's entry point: backtest one point, return its in- and out-of-sample figures."""
    from stockade.ops.backtest import Backtest
    from stockade.ops.sweep_metrics import Segment, figures, read_run, split

    if not logging.getLogger().handlers:  # a fresh worker process: as quiet as the CLI
        logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    run = Backtest.prepare(job.settings, argparse.Namespace(**job.args))
    if job.walk_forward:
        from stockade.ops.walk_forward import walk_forward

        summary = walk_forward(run, job.walk_forward, in_sample=True)
        oos, ins = [], []
        for fold in summary["folds"]:
            eq, closed = read_run(fold["out"])
            oos.append(Segment(eq, [p for _, p in closed]))
            eq, closed = read_run(fold["in_sample_out"])
            ins.append(Segment(eq, [p for _, p in closed]))
        counts = {k: sum(f[k] for f in summary["folds"]) for k in ("orders", "fills")}
    else:
        result = run.run()
        eq, closed = read_run(run.out)
        is_seg, oos_seg = split(eq, closed, job.oos_start)
        ins, oos = [is_seg], [oos_seg]
        counts = {k: result[k] for k in ("orders", "fills")}
    return {"in_sample": figures(ins), "out_of_sample": figures(oos), **counts}


def run_sweep(
    grid: Grid,
    jobs: list[PointJob],
    backend: Backend,
    out: Path,
    on_done: Callable[[UnitResult], None] = lambda _: None,
    point_fn: Callable[[PointJob], dict[str, Any]] = run_point,
) -> dict[str, Any]:
    """Run every point on `backend`, rank them, write OUT/sweep.json and OUT/sweep.html; return the JSON's data."""
    from stockade.ops.sweep_page import render

    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = run_units(point_fn, [(f"p{j.index:04d}", j) for j in jobs], backend, on_done)
    points = [_point(grid, job, r) for job, r in zip(jobs, results, strict=True)]
    rank(points, grid.spec.objective, grid.spec.max_drawdown_pct)
    s = grid.spec
    doc = {
        "sweep": {**msgspec.to_builtins(s), "keys": list(grid.keys), "points": len(points)},
        "base_settings": grid.base,
        "points": points,
        "run": {
            "backend": backend.describe(),
            "wall_s": round(time.monotonic() - started, 3),
            "failed": sum(1 for p in points if not p["ok"]),
            "retries": sum(p["attempts"] - 1 for p in points),
        },
    }
    (out / SWEEP_JSON).write_text(json.dumps(jsonable(doc), indent=1, sort_keys=True) + "\n")
    (out / SWEEP_HTML).write_text(render(doc))
    return doc


def _point(grid: Grid, job: PointJob, r: UnitResult) -> dict[str, Any]:
    base = {
        "point": f"p{job.index:04d}",
        "values": job.values,
        "ok": r.ok,
        "attempts": r.attempts,
        "out": f"points/p{job.index:04d}",  # relative: the same whatever --out was
    }
    if not r.ok:
        return {**base, "error": r.error, "rank": None}
    return {**base, **r.value, "rank": None}


def rank(points: list[dict[str, Any]], objective: str, max_dd: float) -> None:
    """Number the eligible points by the out-of-sample objective, best first (ties: point order)."""
    eligible = []
    for p in points:
        p["rank"] = None
        if not p["ok"]:
            continue
        oos = p["out_of_sample"]
        value, dd = oos[objective], oos["max_drawdown_pct"]
        if value is None:
            p["excluded"] = f"no out-of-sample {objective}"
        elif max_dd > 0 and dd is not None and dd > max_dd:
            p["excluded"] = f"out-of-sample drawdown {dd:.2f}% > limit {max_dd:g}%"
        else:
            eligible.append(p)
    eligible.sort(key=lambda p: -p["out_of_sample"][objective])  # stable: equal values keep point order
    for n, p in enumerate(eligible, 1):
        p["rank"] = n


def ranked(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ranked points first (by rank), then the unranked, then the failed, each in point order."""
    return sorted(points, key=lambda p: (p["rank"] is None, p["rank"] or 0, not p["ok"]))


def jsonable(x: Any) -> Any:
    """JSON without NaN/Infinity (not JSON): an infinite profit factor is written "inf"."""
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "-inf" if x < 0 else None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def _f(x: Any, width: int = 8) -> str:
    if x is None:
        return "n/a".rjust(width)
    if isinstance(x, float) and math.isinf(x):
        return "inf".rjust(width)
    return f"{x:{width}.3f}"


def table(doc: dict[str, Any]) -> str:
    """The ranked points, in-sample beside out-of-sample, failed points with their error."""
    s = doc["sweep"]
    obj = s["objective"]
    keys = s["keys"]
    head = (
        f"{'rank':>4} {'point':6} "
        + " ".join(f"{k[:18]:>18}" for k in keys)
        + f" {'IS ' + obj[:6]:>10} {'OOS ' + obj[:6]:>10} {'IS ret%':>8} {'OOS ret%':>8} {'OOS dd%':>8}"
        f" {'trades':>6} {'tries':>5}"
    )
    lines = [
        f"sweep: {s['points']} points, objective {obj} (out-of-sample), max drawdown "
        + (f"{s['max_drawdown_pct']:g}%" if s["max_drawdown_pct"] else "no limit")
        + f", {doc['run']['backend']}, {doc['run']['wall_s']:.1f}s, {doc['run']['failed']} failed, "
        f"{doc['run']['retries']} retried",
        head,
    ]
    for p in ranked(doc["points"]):
        vals = " ".join(f"{_short(p['values'][k]):>18}" for k in keys)
        rank_s = str(p["rank"]) if p["rank"] else "-"
        if not p["ok"]:
            lines.append(f"{rank_s:>4} {p['point']:6} {vals} FAILED ({p['attempts']} tries): {p['error']}")
            continue
        i, o = p["in_sample"], p["out_of_sample"]
        note = f"  ({p['excluded']})" if p.get("excluded") else ""
        lines.append(
            f"{rank_s:>4} {p['point']:6} {vals} {_f(i[obj], 10)} {_f(o[obj], 10)} {_f(i['return_pct'])} "
            f"{_f(o['return_pct'])} {_f(o['max_drawdown_pct'])} {o['trades']:>6} {p['attempts']:>5}{note}"
        )
    return "\n".join(lines)


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 18 else text[:17] + "~"
