"""bench/backtest.py: the peer workload runs and its figures agree (not a speed assertion)."""

from stockade.bench.backtest import bench_peer, peer_quotes


def test_peer_quotes_are_seeded_and_in_time_order():
    symbols, quotes = peer_quotes(5, 100)
    assert len(symbols) == 5 and len(quotes) == 500
    assert [q.ts_ns for q in quotes] == sorted(q.ts_ns for q in quotes)
    assert peer_quotes(5, 100) == (symbols, quotes)


def test_bench_peer_small(tmp_path):
    r = bench_peer(per_symbol=150, scratch=tmp_path)
    assert r["quotes"] == 50 * 150
    signals, orders = r["signals_only"], r["with_orders"]
    assert signals["signals"] == orders["signals"] > 0  # the same crossings either way
    assert signals["orders"] == 0 and orders["orders"] > 0
    assert orders["quotes_per_s"] > 0 and r["peer"]["quotes_per_s_with_orders"] == 71_000
