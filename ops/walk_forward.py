"""`python run.py backtest --walk-forward K`: train on a window, test on the next, K times.

The run's trading sessions are cut into K+1 contiguous windows. Fold i
trains the ML members on window i-1 with `train`'s own code
(trading/datasets.build_dataset, trading/training.train_models: the same
features, labels, walk-forward evaluation and ONNX export) into
OUT/fold-i/models, then backtests window i with them (OUT/fold-i holds its
records and tearsheet, like any backtest's out dir). No fold sees its test
window while training. The out-of-sample results are stitched by chaining
each fold's return (every fold starts from the same initial cash).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import msgspec

from stockade.ops.backtest_data import BadInput


def sessions(start: dt.date, end: dt.date) -> list[dt.date]:
    from stockade.venue.clock import is_nyse_trading_day

    return [d for d in (start + dt.timedelta(days=i) for i in range((end - start).days + 1)) if is_nyse_trading_day(d)]


def windows(days: list[dt.date], k: int) -> list[list[dt.date]]:
    """`days` cut into k+1 contiguous windows as equal as they can be (earlier ones get the extra day)."""
    n = k + 1
    if len(days) < n:
        raise BadInput(
            f"--walk-forward {k} needs at least {n} trading sessions; {days[0] if days else '?'}.."
            f"{days[-1] if days else '?'} has {len(days)}"
        )
    size, extra = divmod(len(days), n)
    out, at = [], 0
    for i in range(n):
        width = size + (1 if i < extra else 0)
        out.append(days[at : at + width])
        at += width
    return out


class FoldJob(msgspec.Struct, frozen=True, kw_only=True):
    """One fold, all a worker needs to run it alone: the run's inputs, its windows, where to write."""

    settings: Any  # Settings (msgspec Structs pickle; kept Any so this module stays light)
    args: dict[str, Any]  # the backtest's flags (Backtest.prepare rebuilds the run from them)
    fold: int
    train: tuple[str, str]
    test: tuple[str, str]
    in_sample: bool = False  # also backtest the training window with the fold's models


def walk_forward(
    run: Any, k: int, progress: bool = False, backend: Any = None, in_sample: bool = False, on_fold: Any = None
) -> dict[str, Any]:
    """Every fold's training and test; returns (and writes OUT/walk_forward.json) the results.

    The folds are independent units (fold i trains on window i-1 and tests on
    window i), so `backend` (ops/workers.Backend) may spread them over
    processes or Ray; the results are merged in fold order whatever ran them.
    """
    from stockade.ops.workers import Backend, run_units

    settings, request = run.settings, run.request
    if not hasattr(run.source, "bars_between"):
        raise BadInput(f"--walk-forward is not available for --source {request.source}")
    days = sessions(dt.date.fromisoformat(request.start), dt.date.fromisoformat(request.end))
    wins = windows(days, k)
    args = {
        "start": request.start,
        "end": request.end,
        "symbols": ",".join(request.symbols),
        "source": request.source,
        "file": request.file,
        "seed": request.seed,
        "out": str(run.out),
        "data_dir": run.models_dir,
        "walk_forward": k,
    }
    jobs = [
        FoldJob(
            settings=settings,
            args=args,
            fold=i,
            train=(wins[i - 1][0].isoformat(), wins[i - 1][-1].isoformat()),
            test=(wins[i][0].isoformat(), wins[i][-1].isoformat()),
            in_sample=in_sample,
        )
        for i in range(1, k + 1)
    ]
    backend = backend or Backend()
    inline = backend.kind == "inline"
    units = [(f"fold-{j.fold}", (j, progress and inline)) for j in jobs]
    results = run_units(run_fold_unit, units, backend, on_done=on_fold or (lambda _: None))
    folds: list[dict[str, Any]] = []
    growth = 1.0
    initial = settings.venue.initial_cash
    for r in results:
        if not r.ok:
            raise BadInput(str(r.error).removeprefix("BadInput: "))
        fold = r.value
        ret = (fold["final_equity"] / initial - 1.0) if initial > 0 else 0.0
        growth *= 1.0 + ret
        folds.append(fold)
    summary = {
        "walk_forward": k,
        "start": request.start,
        "end": request.end,
        "symbols": list(request.symbols),
        "source": request.source,
        "seed": request.seed,
        "folds": folds,
        "stitched_oos_return_pct": round((growth - 1.0) * 100, 4),
        "stitched_oos_window": [folds[0]["test"][0], folds[-1]["test"][1]],
    }
    (Path(run.out) / "walk_forward.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def run_fold_unit(unit: tuple[FoldJob, bool]) -> dict[str, Any]:
    """A worker's entry point: (job, progress) -> the fold's entry of walk_forward.json."""
    job, progress = unit
    return run_fold(job, progress)


def run_fold(job: FoldJob, progress: bool = False) -> dict[str, Any]:
    """Train fold `job.fold` on its training window, backtest its test window; BadInput on failure."""
    import argparse

    from stockade.ops.backtest import Backtest
    from stockade.trading.datasets import build_dataset
    from stockade.trading.training import DEFAULT_MODELS, TrainingError, train_models

    run = Backtest.prepare(job.settings, argparse.Namespace(**job.args))
    settings = run.settings
    m = settings.models
    names = tuple(m.names) or tuple(DEFAULT_MODELS)
    train_w = tuple(dt.date.fromisoformat(d) for d in job.train)
    test_w = tuple(dt.date.fromisoformat(d) for d in job.test)
    i = job.fold
    fold_dir = Path(run.out) / f"fold-{i}"
    bars = run.source.bars_between(train_w[0], train_w[-1])
    try:
        data = build_dataset(bars, m.horizon_bars, m.label_threshold_bps, settings.analyzer.to_params())
        manifest = train_models(data, fold_dir / "models", names, m.seed, f"walk-forward fold {i}", n_splits=3)
    except (TrainingError, ValueError) as exc:
        raise BadInput(f"--walk-forward fold {i}: training on {train_w[0]}..{train_w[-1]} failed: {exc}") from None
    result = run.run(progress=progress, window=(test_w[0], test_w[-1]), out=fold_dir, models_dir=str(fold_dir))
    initial = settings.venue.initial_cash
    ret = (result["final_equity"] / initial - 1.0) if initial > 0 else 0.0
    fold = {
        "fold": i,
        "train": [train_w[0].isoformat(), train_w[-1].isoformat()],
        "test": [test_w[0].isoformat(), test_w[-1].isoformat()],
        "train_rows": manifest.training.rows,
        "models_holdout_auc": {e.name: e.holdout.auc for e in manifest.models},
        "orders": result["orders"],
        "fills": result["fills"],
        "final_equity": result["final_equity"],
        "return_pct": round(ret * 100, 4),
        "data_fingerprint": result["data_fingerprint"],
        "out": str(fold_dir),
    }
    if job.in_sample:
        # The fold's models on the very window they were trained on: the in-sample side.
        is_dir = fold_dir / "in-sample"
        run.run(progress=False, window=(train_w[0], train_w[-1]), out=is_dir, models_dir=str(fold_dir))
        fold["in_sample_out"] = str(is_dir)
    return fold
