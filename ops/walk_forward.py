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


def walk_forward(run: Any, k: int, progress: bool = False) -> dict[str, Any]:
    """Every fold's training and test; returns (and writes OUT/walk_forward.json) the results."""
    from stockade.trading.datasets import build_dataset
    from stockade.trading.training import DEFAULT_MODELS, TrainingError, train_models

    settings, request = run.settings, run.request
    if not hasattr(run.source, "bars_between"):
        raise BadInput(f"--walk-forward is not available for --source {request.source}")
    days = sessions(dt.date.fromisoformat(request.start), dt.date.fromisoformat(request.end))
    wins = windows(days, k)
    m = settings.models
    names = tuple(m.names) or tuple(DEFAULT_MODELS)
    folds: list[dict[str, Any]] = []
    growth = 1.0
    initial = settings.venue.initial_cash
    for i in range(1, k + 1):
        train_w, test_w = wins[i - 1], wins[i]
        fold_dir = Path(run.out) / f"fold-{i}"
        bars = run.source.bars_between(train_w[0], train_w[-1])
        try:
            data = build_dataset(bars, m.horizon_bars, m.label_threshold_bps, settings.analyzer.to_params())
            manifest = train_models(data, fold_dir / "models", names, m.seed, f"walk-forward fold {i}", n_splits=3)
        except (TrainingError, ValueError) as exc:
            raise BadInput(f"--walk-forward fold {i}: training on {train_w[0]}..{train_w[-1]} failed: {exc}") from None
        result = run.run(progress=progress, window=(test_w[0], test_w[-1]), out=fold_dir, models_dir=str(fold_dir))
        ret = (result["final_equity"] / initial - 1.0) if initial > 0 else 0.0
        growth *= 1.0 + ret
        folds.append(
            {
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
        )
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
