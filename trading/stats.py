"""Sample statistics for benchmarks and latency reports. Pure."""

from __future__ import annotations

from collections.abc import Iterable


def percentiles(samples: Iterable[float], scale: float = 1.0, digits: int = 1) -> dict[str, float]:
    """{"n", "p50", "p99", "max"} of `samples` times `scale` (nearest-rank); zeros when empty."""
    ordered = sorted(samples)
    n = len(ordered)
    if not n:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))] * scale, digits)

    return {"n": n, "p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1] * scale, digits)}
