"""Micro-benchmark of the per-quote analysis path (no actors, no I/O)."""

from __future__ import annotations

import time

import numpy as np

from stockade.codecs.messages import Bar, Quote
from stockade.quant.features import FeatureParams, FeatureState
from stockade.quant.stats import percentiles
from stockade.quant.strategies import build_strategies, strategy_names

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
        for i, (c, v) in enumerate(zip(closes, rng.lognormal(10, 0.5, warm)))
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


if __name__ == "__main__":
    import json

    print(json.dumps(bench_indicators(), indent=2))
