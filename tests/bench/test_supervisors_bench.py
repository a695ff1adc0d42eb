"""The benchmarks run and report what `run.py bench` expects (tiny n: a smoke test)."""

from stockade.bench.supervisors import bench_pykka_hop, bench_restart


def test_bench_pykka_hop():
    result = bench_pykka_hop(50)
    assert result["n"] == 50
    assert 0 < result["p50_us"] <= result["p99_us"] <= result["max_us"]
    assert result["hop_p50_us"] == round(result["p50_us"] / 2, 2)


def test_bench_restart():
    result = bench_restart(10)
    assert result["n"] == 10
    assert 0 < result["p50_us"] <= result["p99_us"]
