from stockade.trading.stats import percentiles


def test_percentiles_nearest_rank_and_scale():
    samples = list(range(1, 101))  # 1..100
    p = percentiles(samples)
    assert p == {"n": 100, "p50": 51, "p99": 100, "max": 100}
    assert percentiles([1500, 2500], scale=1e-3, digits=2)["max"] == 2.5


def test_percentiles_empty_is_zeros():
    assert percentiles([]) == {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
