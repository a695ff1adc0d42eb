"""The whole pure path an Analyzer -> EnsembleVoter -> RiskGuard chain drives, plus the bench."""

from __future__ import annotations

from stockade.bench.trading import bench_indicators
from stockade.codecs.messages import AccountSnapshot, Bar, Quote, Vote
from stockade.trading.features import FeatureState
from stockade.trading.risk_rules import RiskContext, RiskLimits, RiskRequest, evaluate
from stockade.trading.strategies import build_strategies, strategy_names
from stockade.trading.voting import Ensemble, EnsembleParams

MIN = 60_000_000_000
T0 = 1_700_000_040 * 1_000_000_000


def test_bars_to_order_verdict():
    fs = FeatureState("X")
    p, prev, bars = 100.0, 100.0, []
    for i in range(120):  # accelerating zig-zag uptrend
        step = 0.02 + 0.002 * i
        p += 2 * step if i % 2 == 0 else -step
        bars.append(Bar("X", prev, max(prev, p) + 0.05, min(prev, p) - 0.05, p, 1000.0, T0 + i * MIN))
        prev = p
    fs.warm_up(bars)
    t = T0 + 120 * MIN + 1
    fs.on_quote(Quote("X", p - 0.01, p + 0.01, 100, 100, t, t))
    f = fs.features()

    votes = []
    for s in build_strategies(strategy_names()):
        sig = s.evaluate(f)
        votes.append(Vote("X", s.name, sig.direction, sig.confidence, f.price, t, t, f.bid, f.ask, atr=f.atr))

    ens = Ensemble(EnsembleParams(threshold=0.25), clock=lambda: t)
    d = ens.vote("X", votes)
    assert d is not None and d.side == "buy" and d.models == ("momentum",)

    acct = AccountSnapshot(100_000.0, 100_000.0, 100_000.0, 200_000.0, False, t)
    ctx = RiskContext(now_ns=t + 1_000_000, trading_state="ACTIVE", market_open=True, account=acct)
    proposal = d.to_proposal("p1")
    assert proposal.atr == f.atr > 0  # the analyzer's ATR reaches the risk guard with the proposal
    v = evaluate(RiskRequest.from_proposal(proposal), ctx)
    assert v.allowed and v.qty > 0
    assert v.stop_loss < v.entry < v.take_profit
    # Volatility scaling: a target of half the bars' ATR (as % of price) halves the
    # size (no position cap here, so the risk-based size shows).
    half = f.atr / v.entry * 100.0 / 2
    base = evaluate(RiskRequest.from_proposal(proposal), ctx, RiskLimits(max_position_pct=100.0))
    scaled = evaluate(
        RiskRequest.from_proposal(proposal), ctx, RiskLimits(max_position_pct=100.0, target_volatility_pct=half)
    )
    assert base.allowed and scaled.allowed and base.qty > v.qty
    assert abs(scaled.qty - base.qty / 2) <= 1


def test_bench_runs_small():
    r = bench_indicators(2_000)
    assert r["quotes"] == 2_000 and r["bars_closed"] >= 19
    assert 0 < r["feature_update_us"]["p50"] <= r["feature_update_us"]["p99"]
    assert r["feature_updates_per_s"] > 0
