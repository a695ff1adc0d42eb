"""Shared by the sweep tests: a tiny bars file, a small grid, and a point that kills its worker once.

Importable by name from a spawned pool worker (tests/ is on sys.path, which
`spawn` hands to its children) and sent by value to Ray workers
(cloudpickle.register_pickle_by_value in the test).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DAYS = ("2026-06-01", "2026-06-02", "2026-06-03")
BARS_PER_DAY = 60


def write_bars(path: Path, symbols: tuple[str, ...] = ("AAPL", "MSFT"), seed: int = 11) -> Path:
    """A seeded random walk of BARS_PER_DAY 1-minute bars from the open on each of DAYS (bench/sweep.py's)."""
    from stockade.bench.sweep import write_bars as bench_bars

    return bench_bars(path, symbols, DAYS, BARS_PER_DAY, seed)


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


def square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


def exit_on_seven(x: int) -> int:
    """Kills its worker process whenever it is given 7."""
    if x == 7:
        os._exit(9)
    return x * x
