"""Shared by the sweep tests: a tiny bars file, a small grid, and a point that kills its worker once.

Importable by name from a spawned pool worker (tests/ is on sys.path, which
`spawn` hands to its children) and sent by value to Ray workers
(cloudpickle.register_pickle_by_value in the test).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
from pathlib import Path
from typing import Any

DAYS = ("2026-06-01", "2026-06-02", "2026-06-03")
BARS_PER_DAY = 60


def write_bars(path: Path, symbols: tuple[str, ...] = ("AAPL", "MSFT"), seed: int = 11) -> Path:
    """A seeded random walk of 1-minute bars from 13:30 UTC (the open) on each of DAYS."""
    rng = random.Random(seed)
    price = {s: 100.0 + 50.0 * i for i, s in enumerate(symbols)}
    lines = ["timestamp,symbol,open,high,low,close,volume"]
    for day in DAYS:
        start = dt.datetime.fromisoformat(f"{day}T13:30:00+00:00")
        for m in range(BARS_PER_DAY):
            ts = (start + dt.timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ")
            for s in symbols:
                o = price[s]
                c = o * math.exp(rng.gauss(0.0002, 0.002))
                hi, lo = max(o, c) * (1 + rng.random() * 0.001), min(o, c) * (1 - rng.random() * 0.001)
                lines.append(f"{ts},{s},{o:.2f},{hi:.2f},{lo:.2f},{c:.2f},{rng.randint(1000, 5000)}")
                price[s] = c
    path.write_text("\n".join(lines) + "\n")
    return path


def write_grid(folder: Path, extra: str = "", grid: str = "") -> Path:
    """A four-point grid over the bars file (models off: the rule members vote; fast)."""
    write_bars(folder / "bars.csv")
    (folder / "base.toml").write_text("[models]\nenabled = false\n[voter]\nmin_confidence = 0.5\n")
    path = folder / "sweep.toml"
    path.write_text(
        f"""[sweep]
start = "{DAYS[0]}"
end = "{DAYS[-1]}"
source = "file"
file = "bars.csv"
seed = 4
settings = "base.toml"
oos_fraction = 0.34
{extra}
[grid]
{grid or '"voter.threshold" = [0.02, 0.1]' + chr(10) + '"risk.stop_loss_pct" = [0.5, 2.0]'}
"""
    )
    return path


def crash_once(job: Any) -> dict[str, Any]:
    """Point 1 kills its own worker process on its first attempt (a marker file says it happened)."""
    from stockade.ops.sweep import run_point

    marker = Path(job.args["out"]).parent.parent / "crashed-once"
    if job.index == 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(17)
    return run_point(job)
