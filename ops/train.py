"""`python run.py train`: fit the ensemble's machine-learned members.

    python run.py train [--source sim|venue|alpaca] [--out DIR] [--settings FILE] [--data-dir DIR]
                        [--symbols A,B] [--days N] [--seed N] [--horizon N] [--models gbm,logit]

Builds labelled rows from one-minute bars (trading/datasets.py), evaluates
every model walk-forward, fits it, exports it to ONNX, checks onnxruntime
against scikit-learn on the held-out rows and writes the models and
`manifest.json` to `--out` (default <data_dir>/models, which the daemon
then prefers over the shipped models). Progress on stderr, a summary on
stdout.

Sources: `sim` is the paper venue's market simulator, offline and a pure
function of the seed (the shipped models come from it); `venue` reads bars
from a running venue (`--data-url`, keys from APCA_API_KEY_ID /
APCA_API_SECRET_KEY); `alpaca` from Alpaca's data API (alpaca.data_url,
the same keys). Defaults for the horizon, days and seed are in `[models]`,
the indicator periods in `[analyzer]`: the daemon refuses models trained
with other periods than it computes.

Exit status: 0 written, 2 bad settings or usage, 1 training failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stockade.config.settings import DEFAULT_DATA_URL, SettingsError, load_settings

NS_PER_MIN = 60_000_000_000


def _progress(text: str) -> None:
    print(f"train: {text}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    from stockade.trading.training import DEFAULT_MODELS, MODELS

    parser = argparse.ArgumentParser(prog="python run.py train", description="Train the ensemble's ML models.")
    parser.add_argument(
        "--source",
        choices=("sim", "venue", "alpaca"),
        default="sim",
        help="where the bars come from (default: sim, offline)",
    )
    parser.add_argument("--out", help="output folder (default: <data_dir>/models)")
    parser.add_argument("--settings", help="settings file ([models], [analyzer], [trading], [alpaca])")
    parser.add_argument("--data-dir", help="data directory (for the default --out)")
    parser.add_argument("--symbols", help="comma-separated (default: trading.symbols)")
    parser.add_argument("--days", type=float, help="days of history per symbol (default: models.train_days)")
    parser.add_argument("--seed", type=int, help="seed of the sim data and every estimator (default: models.seed)")
    parser.add_argument("--horizon", type=int, help="label horizon in bars (default: models.horizon_bars)")
    parser.add_argument("--threshold-bps", type=float, help="label threshold (default: models.label_threshold_bps)")
    parser.add_argument(
        "--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated, from {', '.join(MODELS)} (default: all)"
    )
    parser.add_argument("--folds", type=int, default=5, help="walk-forward folds (default: 5)")
    parser.add_argument("--data-url", help="the venue's REST URL for --source venue")
    parser.add_argument("--ray", metavar="auto|ADDRESS", help="spread symbols and models over Ray ([cluster] extra)")
    parser.add_argument("--workers", type=int, help="spread symbols and models over N local processes")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    from stockade.ops.workers import WorkersError, backend_from_args

    try:
        settings = load_settings(args.settings)
        plan = _plan(args, settings)
        plan["backend"] = backend_from_args(args.ray, args.workers)
    except (SettingsError, WorkersError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    return _run(args, settings, plan)


def _plan(args: argparse.Namespace, settings) -> dict:
    from stockade.trading.training import MODELS

    m = settings.models
    symbols = (
        tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
        if args.symbols
        else tuple(settings.trading.symbols)
    )
    names = tuple(n.strip() for n in args.models.split(",") if n.strip())
    unknown = [n for n in names if n not in MODELS]
    if not symbols:
        raise SettingsError("--symbols: no symbol given")
    if not names or unknown:
        raise SettingsError(f"--models {args.models!r}: unknown {unknown} (known: {', '.join(MODELS)})")
    days = m.train_days if args.days is None else args.days
    horizon = m.horizon_bars if args.horizon is None else args.horizon
    threshold = m.label_threshold_bps if args.threshold_bps is None else args.threshold_bps
    seed = m.seed if args.seed is None else args.seed
    if not days > 0:
        raise SettingsError(f"--days {days!r}: must be > 0")
    if horizon < 1:
        raise SettingsError(f"--horizon {horizon!r}: must be >= 1 bar")
    if seed < 0:
        raise SettingsError(f"--seed {seed!r}: must be >= 0")
    if args.folds < 2:
        raise SettingsError(f"--folds {args.folds!r}: must be >= 2")
    return {"symbols": symbols, "names": names, "days": days, "horizon": horizon, "threshold": threshold, "seed": seed}


def _bars(args: argparse.Namespace, settings, plan: dict) -> dict:
    from stockade.ops.bar_sources import rest_bars, sim_bars

    if args.source == "sim":
        return sim_bars(plan["symbols"], plan["seed"], plan["days"])
    from stockade.broker.rest import make_data_client, redact
    from stockade.config import secrets as ops_secrets

    keys = ops_secrets.alpaca_keys()
    if keys is None:
        raise SettingsError(f"--source {args.source} needs APCA_API_KEY_ID and APCA_API_SECRET_KEY")
    if args.source == "venue":
        url = args.data_url or (settings.alpaca.data_url if settings.alpaca.data_url != DEFAULT_DATA_URL else "")
        if not url:
            raise SettingsError(
                "--source venue needs --data-url (the venue's REST URL) or alpaca.data_url in the settings"
            )
    else:
        url = args.data_url or settings.alpaca.data_url
    client = make_data_client(keys[0], keys[1], url)
    end = time.time_ns()
    end -= end % NS_PER_MIN
    start = end - int(plan["days"] * 24 * 60) * NS_PER_MIN
    try:
        return rest_bars(client, plan["symbols"], start, end, settings.alpaca.feed)
    except Exception as exc:  # alpaca-py raises many types; one line for the user
        raise RuntimeError(f"fetching bars from {url} failed: {redact(exc)}") from None


def _run(args: argparse.Namespace, settings, plan: dict) -> int:
    import msgspec

    from stockade.config import paths
    from stockade.ops.workers import ClusterLost, WorkersError
    from stockade.trading.datasets import build_dataset
    from stockade.trading.model_lifecycle import REFERENCE_NAME, reference_of
    from stockade.trading.training import TrainingError, train_models

    out = Path(args.out).expanduser() if args.out else paths.models_dir(paths.data_dir(args.data_dir))
    started = time.perf_counter()
    try:
        _progress(f"fetching {plan['days']:g} days of 1-minute bars for {','.join(plan['symbols'])} from {args.source}")
        bars = _bars(args, settings, plan)
        for symbol, rows in sorted(bars.items()):
            _progress(f"{symbol}: {len(rows)} bars")
        backend = plan["backend"]
        if backend.kind == "inline":
            data = build_dataset(bars, plan["horizon"], plan["threshold"], settings.analyzer.to_params())
            trainer = None
        else:
            _progress(f"features and models spread over {backend.describe()}")
            data = _spread_dataset(bars, plan["horizon"], plan["threshold"], settings.analyzer.to_params(), backend)
            trainer = _spread_trainer(data, plan["seed"], args.folds, backend)
        manifest = train_models(
            data,
            out,
            plan["names"],
            plan["seed"],
            args.source,
            n_splits=args.folds,
            progress=_progress,
            trainer=trainer,
        )
        # The rows' distribution, for the lifecycle's drift check (as a retrain writes it).
        (out / REFERENCE_NAME).write_bytes(msgspec.json.encode(reference_of(data.X)))
    except SettingsError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    except WorkersError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ClusterLost) else 2
    except (TrainingError, ValueError, RuntimeError, OSError) as exc:
        print(f"train: failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"models written to {out} (feature version {manifest.feature_version}, "
        f"{manifest.training.rows} rows, {time.perf_counter() - started:.1f}s)"
    )
    for e in manifest.models:
        h = e.holdout
        mean_auc = [f.auc for f in e.folds if f.auc is not None]
        print(
            f"  {e.name:7s} hold-out acc {h.accuracy:.3f} prec {h.precision:.3f} rec {h.recall:.3f} "
            f"f1 {h.f1:.3f} auc {h.auc if h.auc is not None else float('nan'):.3f}; "
            f"walk-forward mean auc {sum(mean_auc) / max(1, len(mean_auc)):.3f}; "
            f"parity {e.parity_max_abs_diff:.1e}; {e.bytes} bytes"
        )
    return 0


# ---- spread over workers (--workers N, --ray): one unit per symbol, then one per model ----


def symbol_rows_unit(unit: tuple) -> tuple:
    """A worker's entry point: (symbol, bars, horizon, threshold, params) -> (symbol, X, y, ts_ns)."""
    from stockade.trading.datasets import symbol_rows

    symbol, bars, horizon, threshold, params = unit
    return (symbol, *symbol_rows(symbol, bars, horizon, threshold, params))


def train_one_unit(unit: tuple):
    """A worker's entry point: (name, data, seed, folds) -> the trained model, its estimator left behind."""
    import msgspec

    from stockade.trading.training import train_one

    name, data, seed, folds = unit
    return msgspec.structs.replace(train_one(name, data, seed, folds), model=None)


def _spread_dataset(bars: dict, horizon: int, threshold: float, params, backend):
    """build_dataset with each symbol's rows made by a worker, merged in symbol order (the same data set)."""
    from stockade.ops.workers import run_units
    from stockade.trading.datasets import merge_rows

    units = [(s, (s, bars[s], horizon, threshold, params)) for s in sorted(bars)]
    results = run_units(symbol_rows_unit, units, backend)
    failed = [r for r in results if not r.ok]
    if failed:
        raise ValueError(f"{failed[0].key}: {failed[0].error}")
    return merge_rows([r.value for r in results], horizon, threshold, params)


def _spread_trainer(data, seed: int, folds: int, backend):
    """A `train_models` trainer: every model trained by a worker, returned in the order asked."""
    from stockade.ops.workers import run_units
    from stockade.trading.training import TrainingError

    def trainer(names):
        def done(r):
            _progress(f"{r.key}: trained" if r.ok else f"{r.key}: {r.error}")

        results = run_units(train_one_unit, [(n, (n, data, seed, folds)) for n in names], backend, done)
        failed = [r for r in results if not r.ok]
        if failed:
            raise TrainingError(f"{failed[0].key}: {failed[0].error}")
        return [r.value for r in results]

    return trainer
