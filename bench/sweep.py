"""Sweep throughput for `python run.py bench`: backtests per minute, 1 and 2 workers, local pool and Ray.

The same small sweep every time (a grid of `points` settings over a seeded
file of 1-minute bars, models off so the rule members vote): run on the
local process pool with 1 and 2 workers, then on a local Ray with 1 and 2
CPUs, and in this process as the baseline. The wall time counts what a user
waits for, worker start-up included (spawned processes import stockade; Ray
starts its workers), which is why the 1-worker pool is slower than in-process
on a sweep this small. Ray runs only with the [cluster] extra installed.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

DAYS = ("2026-06-01", "2026-06-02", "2026-06-03")


def write_bars(path: Path, symbols: tuple[str, ...], days: tuple[str, ...], per_day: int, seed: int = 11) -> Path:
    """A seeded random walk of 1-minute bars from 13:30 UTC (the open) on each day (the file source's CSV)."""
    rng = random.Random(seed)
    price = {s: 100.0 + 50.0 * i for i, s in enumerate(symbols)}
    lines = ["timestamp,symbol,open,high,low,close,volume"]
    for day in days:
        start = dt.datetime.fromisoformat(f"{day}T13:30:00+00:00")
        for m in range(per_day):
            ts = (start + dt.timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ")
            for s in symbols:
                o = price[s]
                c = o * math.exp(rng.gauss(0.0002, 0.002))
                hi, lo = max(o, c) * (1 + rng.random() * 0.001), min(o, c) * (1 - rng.random() * 0.001)
                lines.append(f"{ts},{s},{o:.2f},{hi:.2f},{lo:.2f},{c:.2f},{rng.randint(1000, 5000)}")
                price[s] = c
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sweep(folder: Path, points: int, per_day: int) -> Path:
    write_bars(folder / "bars.csv", ("AAPL", "MSFT"), DAYS, per_day)
    (folder / "base.toml").write_text('[models]\nenabled = false\n[logging]\nlevel = "WARNING"\n')
    thresholds = ", ".join(f"{0.02 + 0.02 * i:.2f}" for i in range(points))
    path = folder / "sweep.toml"
    path.write_text(
        f'[sweep]\nstart = "{DAYS[0]}"\nend = "{DAYS[-1]}"\nsource = "file"\nfile = "bars.csv"\nseed = 4\n'
        f'settings = "base.toml"\noos_fraction = 0.34\n[grid]\n"voter.threshold" = [{thresholds}]\n'
    )
    return path


def _timed(grid_file: Path, out: Path, backend: Any) -> dict[str, Any]:
    from stockade.ops.sweep import plan, run_sweep
    from stockade.ops.sweep_grid import load_grid

    grid = load_grid(grid_file)
    jobs = plan(grid, out, str(out.parent / "data"))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    doc = run_sweep(grid, jobs, backend, out)
    wall = time.perf_counter() - started
    return {
        "backtests": len(jobs),
        "seconds": round(wall, 2),
        "backtests_per_min": round(len(jobs) / wall * 60, 1),
        "failed": doc["run"]["failed"],
        # On a shared machine the other processes' load says how far the figure can be trusted.
        "load_average_1m_before": round(load, 2),
        "_points": [{k: v for k, v in p.items() if k != "attempts"} for p in doc["points"]],
    }


def bench_sweep(quick: bool = False, scratch: Path | None = None) -> dict[str, Any]:
    import logging

    from stockade.ops.workers import Backend

    logging.getLogger("stockade").setLevel(logging.ERROR)  # the backtests' warnings are not the figure
    points, per_day = (2, 60) if quick else (8, 120)
    root = Path(tempfile.mkdtemp(prefix="stockade-sweep-bench-", dir=scratch))
    grid = write_sweep(root, points, per_day)
    runs: dict[str, Any] = {"in_process": _timed(grid, root / "inline", Backend(kind="inline"))}
    for n in (1, 2):
        runs[f"pool_{n}"] = _timed(grid, root / f"pool{n}", Backend(kind="pool", workers=n))
    try:
        import ray
    except ImportError:
        runs["ray"] = {"skipped": "Ray is not installed (pip install -c constraints.txt -e '.[cluster]')"}
    else:
        for n in (1, 2):
            ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
            try:
                runs[f"ray_{n}"] = _timed(grid, root / f"ray{n}", Backend(kind="ray", workers=n))
            finally:
                ray.shutdown()
    baseline = runs["in_process"].pop("_points")
    same = all(r.pop("_points", baseline) == baseline for r in runs.values() if isinstance(r, dict))
    return {
        "points": points,
        "bars_per_symbol_day": per_day,
        "symbols": 2,
        "sessions": len(DAYS),
        **runs,
        "results_identical": same,
        "note": "backtests per minute of wall time, worker start-up included; one sweep of small backtests",
    }
