"""Micro-benchmark of the per-quote analysis path (no actors, no I/O)."""

from __future__ import annotations

import time

import numpy as np

from stockade.codecs.messages import Bar, Quote
from stockade.trading.features import FeatureParams, FeatureState
from stockade.trading.stats import percentiles
from stockade.trading.strategies import build_strategies, strategy_names

_MIN_NS = 60_000_000_000


def bench_indicators(n: int = 100_000, seed: int = 7, quotes_per_bar: int = 100) -> dict:
    """Per-quote cost of FeatureState.on_quote + features(), and of running every strategy.

    Warms up from 300 one-minute bars of a seeded random walk, then feeds `n`
    quotes, `quotes_per_bar` per minute so bar closes are part of the mix.
    Returns latencies in microseconds (p50/p99) and updates per second.
    """
    rng = np.random.default_rng(seed)
    params = FeatureParams()
    fs = FeatureState("BENCH", params)
    t0 = 1_700_000_000 * 1_000_000_000
    t0 -= t0 % _MIN_NS
    warm = 300
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, warm)))
    bars = [
        Bar("BENCH", c, c * 1.001, c * 0.999, c, float(v), t0 + i * _MIN_NS)
        for i, (c, v) in enumerate(zip(closes, rng.lognormal(10, 0.5, warm), strict=True))
    ]
    fs.warm_up(bars)
    start = t0 + warm * _MIN_NS
    step = _MIN_NS // quotes_per_bar
    mids = closes[-1] * np.exp(np.cumsum(rng.normal(0, 0.0001, n)))
    quotes = [
        Quote("BENCH", m - 0.01, m + 0.01, 100.0, 100.0, start + i * step, start + i * step)
        for i, m in enumerate(mids.tolist())
    ]
    strategies = build_strategies(strategy_names())

    feature_ns: list[int] = []
    strategy_ns: list[int] = []
    clock = time.perf_counter_ns
    t_begin = clock()
    for q in quotes:
        a = clock()
        fs.on_quote(q)
        f = fs.features()
        b = clock()
        if f is not None:  # None only before the first price
            for s in strategies:
                s.evaluate(f)
        c = clock()
        feature_ns.append(b - a)
        strategy_ns.append(c - b)
    elapsed_s = (clock() - t_begin) / 1e9
    feature_total_s = sum(feature_ns) / 1e9
    return {
        "quotes": n,
        "bars_closed": fs.bars_seen - warm,
        "feature_update_us": percentiles(feature_ns, scale=1e-3, digits=2),
        "strategies_us": {**percentiles(strategy_ns, scale=1e-3, digits=2), "count": len(strategies)},
        "feature_updates_per_s": n / feature_total_s if feature_total_s > 0 else float("inf"),
        "quotes_per_s_with_strategies": n / elapsed_s if elapsed_s > 0 else float("inf"),
    }


def bench_models(quick: bool = False, seed: int = 7) -> dict:
    """The ML members: training time, ONNX vs scikit-learn single-row inference side
    by side, and the analyzer's whole per-evaluation cost (indicators + rules + all models).

    Models are trained here on the simulator (quick: 1 day of 2 symbols, 3 folds;
    else the shipped defaults' 2 days of 5 symbols, 5 folds), so both runtimes
    serve the very same fitted models.
    """
    import tempfile
    from pathlib import Path

    from stockade.ops.bar_sources import sim_bars
    from stockade.trading.datasets import build_dataset
    from stockade.trading.feature_vector import columns, vector
    from stockade.trading.model_member import ModelMember
    from stockade.trading.model_panel import panel_of
    from stockade.trading.model_store import LoadedModel, new_session
    from stockade.trading.training import DEFAULT_MODELS, train_one

    symbols = ("AAPL", "MSFT") if quick else ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")
    days, folds, rows_timed, quotes = (1.0, 3, 300, 3_000) if quick else (2.0, 5, 3_000, 30_000)
    clock = time.perf_counter_ns
    t = clock()
    data = build_dataset(sim_bars(symbols, seed, days), horizon=5)
    dataset_s = (clock() - t) / 1e9
    out: dict = {"rows": data.rows, "symbols": len(symbols), "folds": folds, "dataset_build_s": round(dataset_s, 3)}
    trained = {}
    for name in DEFAULT_MODELS:
        t = clock()
        trained[name] = train_one(name, data, seed, n_splits=folds)
        out[f"train_{name}_s"] = round((clock() - t) / 1e9, 3)  # walk-forward + fit + export + parity
    out["train_total_s"] = round(dataset_s + sum(out[f"train_{n}_s"] for n in DEFAULT_MODELS), 3)

    # Single-row inference, the analyzer's case: one float32 row per call.
    # The files are written out: the merged panel reads (and checks) them.
    folder = Path(tempfile.mkdtemp(prefix="stockade-bench-models-"))
    for tr in trained.values():
        (folder / tr.entry.file).write_bytes(tr.onnx)
    loaded = {
        name: LoadedModel(name, tr.entry, folder / tr.entry.file, new_session(tr.onnx)) for name, tr in trained.items()
    }
    rows = data.X[-rows_timed:]
    for name, tr in trained.items():
        cols = columns(tr.entry.features)
        sk_ns, ort_ns = [], []
        session_model = loaded[name]
        for x in rows:
            row = x[cols].reshape(1, -1)
            a = clock()
            tr.model.predict_proba(row)
            b = clock()
            session_model.p_up(x)
            c = clock()
            sk_ns.append(b - a)
            ort_ns.append(c - b)
        sk, ort = percentiles(sk_ns, scale=1e-3, digits=2), percentiles(ort_ns, scale=1e-3, digits=2)
        out[f"infer_{name}_us"] = {
            "onnxruntime": ort,
            "sklearn": sk,
            "speedup_p50": round(sk["p50"] / ort["p50"], 1) if ort.get("p50") else None,
        }

    # The analyzer's evaluation: quote into the features, rules, vector, every model.
    rng = np.random.default_rng(seed)
    fs = FeatureState("BENCH", FeatureParams())
    bars = sim_bars(("AAPL",), seed, 0.25)["AAPL"]
    fs.warm_up(bars)
    strategies = build_strategies(strategy_names())
    members = [ModelMember(m) for m in loaded.values()]
    panel = panel_of(list(loaded.values()))
    start = bars[-1].ts_ns + _MIN_NS
    step = _MIN_NS // 100
    mids = bars[-1].close * np.exp(np.cumsum(rng.normal(0, 0.0001, quotes)))
    indicator_ns, rules_ns, models_ns, separate_ns = [], [], [], []
    for i, m in enumerate(mids.tolist()):
        q = Quote("BENCH", m - 0.01, m + 0.01, 100.0, 100.0, start + i * step, start + i * step)
        a = clock()
        fs.on_quote(q)
        f = fs.features()
        b = clock()
        if f is not None:  # None only before the first price
            for s in strategies:
                s.evaluate(f)
        c = clock()
        x = vector(f) if f is not None else None
        if x is not None and panel is not None:
            panel.p_up(x)  # what the analyzer runs: one call for all members
        d = clock()
        if x is not None:
            for member in members:  # the peer: one call per member, as before the panel
                member.evaluate(x)
        e = clock()
        indicator_ns.append(b - a)
        rules_ns.append(c - b)
        models_ns.append(d - c)
        separate_ns.append(e - d)
    total = [a + b + c for a, b, c in zip(indicator_ns, rules_ns, models_ns, strict=True)]
    # The merged call's cost by the number of members (the first 1, 2, ... of the
    # set): what one more model adds to every evaluation (docs/ARCHITECTURE.md).
    last = fs.features()
    if last is None:
        raise RuntimeError("bench_models: no features after the warm-up bars")
    x_last = vector(last)
    by_members: dict[str, float] = {}
    for k in range(1, len(loaded) + 1):
        subset = list(loaded.values())[:k]
        call = panel_of(subset) if k > 1 else None
        run = call.p_up if call is not None else subset[0].p_up
        if x_last is None or (k > 1 and call is None):
            continue
        for _ in range(200):
            run(x_last)
        ns = []
        for _ in range(rows_timed):
            a = clock()
            run(x_last)
            ns.append(clock() - a)
        by_members[str(k)] = percentiles(ns, scale=1e-3, digits=2)["p50"]
    out["per_quote_us"] = {
        "indicators": percentiles(indicator_ns, scale=1e-3, digits=2),
        "rules": percentiles(rules_ns, scale=1e-3, digits=2),
        "vector_and_models": {
            **percentiles(models_ns, scale=1e-3, digits=2),
            "count": len(members),
            "merged": panel is not None,
        },
        "models_one_call_each": percentiles(separate_ns, scale=1e-3, digits=2),
        "total": percentiles(total, scale=1e-3, digits=2),
    }
    out["merged_call_p50_us_by_members"] = by_members
    out["what"] = (
        "train_*_s: walk-forward folds + final fit + ONNX export + parity check per model; infer_*: one "
        "float32 row per call, the same fitted model in onnxruntime and scikit-learn; per_quote_us: every "
        "quote evaluated (the analyzer evaluates at most every analyzer.evaluate_every_s); vector_and_models: the "
        "vector and one merged call for all members (trading/model_panel.py), models_one_call_each: its "
        "peer, the same members one session call each; merged_call_p50_us_by_members: one model call for the "
        "first N members (one session for N = 1, the merged panel above), p50"
    )
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(bench_indicators(), indent=2))
