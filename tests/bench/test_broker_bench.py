"""bench/broker.py: the figures are produced and consistent (not a speed assertion)."""

from stockade.bench.broker import bench_decode


def test_bench_decode_small():
    r = bench_decode(400, per_frame=8)
    for name in ("json", "json_peer", "msgpack", "msgpack_peer"):
        assert r[name]["quotes_per_s"] > 0
        assert r[name]["us_per_frame"] > 0 and r[name]["us_per_quote"] > 0
    assert r["speedup_json"] > 0 and r["speedup_msgpack"] > 0


def test_bench_order_roundtrip_small():
    from stockade.bench.broker import bench_order_roundtrip

    r = bench_order_roundtrip(10)
    assert r["submit_us"]["n"] == 10 and r["get_account_us"]["n"] == 10
    assert 0 < r["submit_us"]["p50"] <= r["submit_us"]["max"]
