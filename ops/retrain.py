"""One challenger training job, run by the model keeper in its own process.

    python -m stockade.ops.retrain JOB_DIR

Reads JOB_DIR/job.json (trading/model_lifecycle.RetrainJob), fetches the
recent one-minute bars from the broker's data API (keys from
APCA_API_KEY_ID / APCA_API_SECRET_KEY in the environment, never the command
line), and cuts the labelled rows in time: the newest `eval_fraction` are
the evaluation window, the challenger trains on the rows before it (minus
a purge of one label horizon, so no training label looks into the window)
with `train`'s own code (walk-forward folds, hold-out, ONNX export, parity
check). Then the champion and the challenger are both loaded as the daemon
loads models (checksums, feature version and periods) and scored on the
same window: per member, the accuracy of its calls. JOB_DIR/result.json
says what happened (RetrainResult), written last and atomically: a job
killed on its timeout leaves none.

The process lowers its own priority first: training must not take CPU from
the daemon's quote path.

Exit status: 0 result written (ok or not), 1 failed before writing one.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

NICE = 10


def _window(ts_ns: np.ndarray) -> str:
    def iso(ns: int) -> str:
        return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")

    return f"{iso(int(ts_ns[0]))}..{iso(int(ts_ns[-1]))} ({len(ts_ns)} rows)"


def _scores(folder: Path, names: tuple[str, ...], params, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from stockade.trading.model_store import ModelError, load_models

    loaded, errors = load_models(folder, names, params)
    if errors:
        raise ModelError(errors[0].path, errors[0].reason)
    got = {m.name for m in loaded}
    if got != set(names):
        raise ModelError(folder, f"has members {sorted(got)}, the set is {sorted(names)}")
    return {m.name: float(np.mean((m.p_up_batch(X) > 0.5).astype(np.int64) == y)) for m in loaded}


def run_job(job_dir: Path) -> int:
    from stockade.broker.rest import make_data_client, redact
    from stockade.ops.bar_sources import rest_bars
    from stockade.trading.datasets import build_dataset
    from stockade.trading.model_lifecycle import REFERENCE_NAME, RetrainJob, RetrainResult, reference_of, set_score
    from stockade.trading.model_store import ModelError
    from stockade.trading.training import TrainingError, train_models

    started = time.perf_counter()
    job = msgspec.json.decode((job_dir / "job.json").read_bytes(), type=RetrainJob)

    def finish(result: RetrainResult) -> int:
        tmp = job_dir / "result.json.tmp"
        tmp.write_bytes(msgspec.json.encode(msgspec.structs.replace(result, seconds=time.perf_counter() - started)))
        tmp.replace(job_dir / "result.json")
        return 0

    key, secret = os.environ.get("APCA_API_KEY_ID", ""), os.environ.get("APCA_API_SECRET_KEY", "")
    if not key or not secret:
        return finish(RetrainResult(ok=False, error="no API keys in the environment"))
    try:
        client = make_data_client(key, secret, job.data_url)
        start = job.end_ns - int(job.days * 86_400) * 1_000_000_000
        bars: Any = rest_bars(client, job.symbols, start, job.end_ns, job.feed)
    except Exception as exc:  # alpaca-py raises many types; one line for the record
        return finish(RetrainResult(ok=False, error=f"fetching bars from {job.data_url} failed: {redact(exc)}"))
    try:
        data = build_dataset(bars, job.horizon_bars, job.label_threshold_bps, job.params)
        cut = int(data.rows * (1.0 - job.eval_fraction))
        purge = job.horizon_bars * len(set(data.symbols))
        if cut - purge <= 0 or cut >= data.rows:
            raise ValueError(f"{data.rows} rows cannot be cut into training and evaluation")
        train = msgspec.structs.replace(
            data,
            X=data.X[: cut - purge],
            y=data.y[: cut - purge],
            ts_ns=data.ts_ns[: cut - purge],
            symbols=data.symbols[: cut - purge],
        )
        X_eval, y_eval = data.X[cut:], data.y[cut:]
        out = Path(job.out)
        train_models(train, out, job.names, job.seed, "live retrain", n_splits=job.folds)
        reference = msgspec.json.encode(reference_of(train.X))
        (out / REFERENCE_NAME).write_bytes(reference)
    except (TrainingError, ValueError, OSError) as exc:
        return finish(RetrainResult(ok=False, error=f"training failed: {exc}"))
    window = _window(data.ts_ns[cut:])
    try:
        champion = set_score(_scores(Path(job.champion), job.names, job.params, X_eval, y_eval), len(y_eval))
    except ModelError as exc:
        return finish(RetrainResult(ok=False, error=f"cannot score the champion: {exc}", window=window))
    try:
        challenger = set_score(_scores(out, job.names, job.params, X_eval, y_eval), len(y_eval))
    except ModelError as exc:
        return finish(RetrainResult(ok=False, error=f"challenger refused: {exc}", window=window))
    return finish(
        RetrainResult(ok=True, champion=champion, challenger=challenger, window=window, train_rows=train.rows)
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m stockade.ops.retrain JOB_DIR", file=sys.stderr)
        return 1
    try:
        os.nice(NICE)
    except OSError:
        pass  # already as low as allowed
    return run_job(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
