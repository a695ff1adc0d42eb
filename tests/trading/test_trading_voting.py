"""Ensemble maths: weighted score, adaptive weights, defensive mode, cool-down."""

from __future__ import annotations

import math

import pytest

from stockade.codecs.messages import Vote
from stockade.trading.voting import Ensemble, EnsembleParams, HorizonScorer, needs_approval, tally

S = 1_000_000_000


def logit(p):
    return math.log(p / (1 - p))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


class FakeClock:
    def __init__(self, t: int = 1_000 * S) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def v(model, d, c, symbol="X", recv=1, price=100.0, hv=False):
    return Vote(symbol, model, d, c, price, recv, recv, price - 0.01, price + 0.01, high_volatility=hv)


def test_tally_formula():
    t = tally([v("a", 1, 0.8), v("b", -1, 0.4), v("c", 0, 0)], {"a": 2.0, "b": 1.0, "c": 1.0})
    assert t.score == pytest.approx((2 * 0.8 - 0.4) / 4)
    assert t.agreement == pytest.approx(1.6 / 2.0)
    assert t.agreeing == ("a",)
    assert t.voters == ("a", "b", "c")


def test_tally_latest_vote_per_model_and_bad_values():
    t = tally([v("a", -1, 1, recv=1), v("a", 1, 1, recv=2), v("b", float("nan"), 1)], {"a": 1.0, "b": 1.0})
    assert t.score == pytest.approx(0.5)  # a's newer long; b abstains but counts
    t = tally([v("a", 5, 3)], {"a": 1.0})  # clipped to [-1,1] x [0,1]
    assert t.score == 1.0


def test_vote_threshold_side_and_decision_fields():
    e = Ensemble(EnsembleParams(threshold=0.3, min_confidence=0.5, cooldown_s=0), clock=FakeClock())
    assert e.vote("X", [v("a", 1, 0.5), v("b", 0, 0)]) is None  # 0.25 < 0.3
    assert "below threshold" in e.last_skip
    d = e.vote("X", [v("a", 1, 0.9, recv=5, price=101.0), v("b", 1, 0.5, recv=7, price=102.0)])
    # Both long: p_up 0.95 and 0.75, log-odds added.
    assert d.side == "buy" and d.score == pytest.approx(0.7)
    assert d.confidence == pytest.approx(sigmoid(logit(0.95) + logit(0.75))) and d.confidence == pytest.approx(
        0.9828, abs=1e-4
    )
    assert d.models == ("a", "b") and d.price == 102.0 and d.quote_recv_ns == 7
    p = d.to_proposal("p1")
    assert p.side == "buy" and p.models == ("a", "b") and p.bid == pytest.approx(101.99)
    d = e.vote("X", [v("a", -1, 1), v("b", -1, 1)])
    assert d.side == "sell" and d.score == -1.0


def test_vote_needs_agreement_and_voters():
    e = Ensemble(EnsembleParams(threshold=0.1, min_confidence=0.0, min_agreement=0.8, cooldown_s=0), clock=FakeClock())
    assert e.vote("X", [v("a", 1, 1), v("b", -1, 0.5)]) is None  # agreement 0.67
    assert "agreement" in e.last_skip
    e = Ensemble(EnsembleParams(min_voters=2), clock=FakeClock())
    assert e.vote("X", [v("a", 1, 1)]) is None
    assert e.vote("Y", [v("a", 1, 1, symbol="X")]) is None  # other symbol's votes ignored


def test_adaptive_weights_follow_hit_rate():
    e = Ensemble(EnsembleParams(decay=1.0, prior_hits=2, prior_misses=2, min_weight=0.05))
    w = e.weights(["good", "bad"])
    assert w == {"good": 0.5, "bad": 0.5}  # symmetric prior: equal
    for _ in range(8):
        e.record_outcome("good", True)
        e.record_outcome("bad", False)
    assert e.hit_rate("good") == pytest.approx(10 / 12)
    assert e.weight("good") == pytest.approx(2 * 10 / 12 - 1)
    assert e.weight("bad") == pytest.approx(0.05)  # floored, still votes
    w = e.weights(["good", "bad"])
    assert sum(w.values()) == pytest.approx(1.0) and w["good"] > 0.9
    # the good model now outvotes the bad one
    d = e.vote("X", [v("good", 1, 1), v("bad", -1, 1)], now_ns=0)
    assert d is not None and d.side == "buy"


def test_decay_forgets_old_record():
    e = Ensemble(EnsembleParams(decay=0.5))
    for _ in range(20):
        e.record_outcome("m", True)
    for _ in range(5):
        e.record_outcome("m", False)
    # with memory ~2 outcomes the recent misses dominate
    assert e.hit_rate("m") < 0.5


def test_base_weights_multiply():
    e = Ensemble(EnsembleParams(weights={"onnx": 3.0}))
    assert e.weights(["onnx", "rule"]) == {"onnx": pytest.approx(0.75), "rule": pytest.approx(0.25)}


def test_defensive_mode_on_poor_hit_rate_raises_threshold():
    p = EnsembleParams(
        threshold=0.3,
        min_confidence=0.0,
        defensive_confidence_add=0.0,
        defensive_threshold_add=0.2,
        defensive_min_outcomes=10,
        decay=1.0,
        cooldown_s=0,
    )
    e = Ensemble(p, clock=FakeClock())
    votes = [v("a", 1, 0.4)]
    assert not e.defensive and e.vote("X", votes) is not None  # 0.4 >= 0.3
    for i in range(10):
        e.record_outcome("a" if i % 2 else "b", i % 5 == 0)  # 20% hits
    assert e.defensive and "hit rate 20%" in e.defensive_reason()
    assert e.threshold == pytest.approx(0.5)
    assert e.vote("X", votes) is None and "defensive" in e.last_skip


def test_defensive_mode_on_drawdown():
    e = Ensemble(EnsembleParams(defensive_drawdown_pct=3.0))
    e.record_equity(100_000)
    e.record_equity(98_000)
    assert not e.defensive
    e.record_equity(96_900)
    assert "drawdown 3.10%" in e.defensive_reason()
    e.record_equity(101_000)
    assert not e.defensive


def test_cooldown_and_in_flight():
    clock = FakeClock()
    e = Ensemble(EnsembleParams(cooldown_s=30), clock=clock)
    up, down = [v("a", 1, 1)], [v("a", -1, 1)]
    assert e.vote("X", up).side == "buy"
    assert e.vote("X", up) is None and "cooling down" in e.last_skip
    assert e.vote("Y", [v("a", 1, 1, symbol="Y")]) is not None  # per symbol
    e.mark_in_flight("X")
    assert e.in_flight("X") == "buy"
    clock.t += 31 * S
    assert e.vote("X", up) is None and "in flight" in e.last_skip
    d = e.vote("X", down)  # the other direction may still be proposed
    assert d.side == "sell"
    clock.t += 31 * S
    e.clear("X")
    assert e.vote("X", up).side == "buy"


def test_mark_in_flight_without_decision_needs_side():
    e = Ensemble()
    with pytest.raises(ValueError):
        e.mark_in_flight("Z")
    e.mark_in_flight("Z", "sell")
    assert e.in_flight("Z") == "sell"


def test_bad_params_rejected():
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"decay": 0}, EnsembleParams)


def test_in_flight_mark_expires_when_its_answer_never_comes():
    # The answer (fill or rejection) can die with a crashed actor: the symbol
    # must not stay blocked forever.
    clock = FakeClock()
    e = Ensemble(EnsembleParams(cooldown_s=1, in_flight_timeout_s=120), clock=clock)
    up = [v("a", 1, 1)]
    assert e.vote("X", up).side == "buy"
    e.mark_in_flight("X")
    clock.t += 60 * S
    assert e.vote("X", up) is None and "in flight" in e.last_skip
    clock.t += 61 * S
    assert e.in_flight("X") is None
    assert e.vote("X", up).side == "buy"


# ---- confidence ----------------------------------------------------------------


def test_confidence_pools_the_members_log_odds():
    # Hand-worked: weights a=2, b=1, c=1, mean 4/3, scaled a=1.5, b=0.75, c=0.75. p_up: a 0.9, b 0.3, c 0.5.
    # L = 1.5 * ln(9) + 0.75 * ln(3/7) + 0 = 3.2958 - 0.6355 = 2.6603; confidence = sigmoid(L) = 0.9346.
    # The score counts the abstainer: (1.6 - 0.4) / 4 = 0.3.
    t = tally([v("a", 1, 0.8), v("b", -1, 0.4), v("c", 0, 0)], {"a": 2.0, "b": 1.0, "c": 1.0})
    assert t.confidence == pytest.approx(0.9346, abs=1e-4) and t.score == pytest.approx(0.3)
    # Weights only matter relative to each other (scaled to mean 1 over the batch).
    t2 = tally([v("a", 1, 0.8), v("b", -1, 0.4), v("c", 0, 0)], {"a": 0.2, "b": 0.1, "c": 0.1})
    assert t2.confidence == pytest.approx(t.confidence)
    # One member alone at 0.4, short: p_down 0.7, however many abstain.
    t = tally([v("a", -1, 0.4), v("b", 0, 0), v("c", 0, 0)], {"a": 1.0, "b": 1.0, "c": 1.0})
    assert t.confidence == pytest.approx(0.7) and t.score == pytest.approx(-0.4 / 3)
    assert tally([v("a", 1, 0.6)], {"a": 1.0}).confidence == pytest.approx(0.8)
    # Two agreeing at 0.4: odds 7/3 each, multiplied: 49/9 -> 49/58 = 0.845.
    assert tally([v("a", 1, 0.4), v("b", 1, 0.4)], {"a": 1.0, "b": 1.0}).confidence == pytest.approx(49 / 58)
    # No member is certain: conviction 1 reads as p 0.99.
    assert tally([v("a", 1, 1.0)], {"a": 1.0}).confidence == pytest.approx(0.99)
    assert tally([v("a", 0, 0)], {"a": 1.0}).confidence == 0.0


def test_min_confidence_gates_proposals():
    e = Ensemble(EnsembleParams(threshold=0.05, min_confidence=0.65, cooldown_s=0), clock=FakeClock())
    flat = [v("b", 0, 0), v("c", 0, 0)]
    assert e.vote("X", [v("a", 1, 0.2), *flat]) is None  # score 0.067 clears 0.05, confidence 0.60 does not
    assert "confidence 0.60 below 0.65" in e.last_skip
    d = e.vote("X", [v("a", 1, 0.4), *flat])
    assert d is not None and d.confidence == pytest.approx(0.7) and d.min_confidence == 0.65
    # Dissent lowers confidence below the bar although the score clears its threshold:
    # L = ln(3) - ln(13/7) = 0.4796 -> 0.6177.
    assert e.vote("X", [v("a", 1, 0.5), v("b", -1, 0.3), v("c", 0, 0)]) is None
    assert "confidence 0.62 below 0.65" in e.last_skip


def test_decision_carries_weights_and_votes():
    e = Ensemble(EnsembleParams(threshold=0.1, min_confidence=0.5, cooldown_s=0, weights={"a": 3.0}), clock=FakeClock())
    d = e.vote("X", [v("b", 0, 0), v("a", 1, 0.9)])
    assert d.weights == {"a": pytest.approx(0.75), "b": pytest.approx(0.25)}
    assert [x.model for x in d.votes] == ["a", "b"]
    assert d.size_scale == 1.0 and not d.defensive and d.defensive_reason == ""


# ---- defensive regime from the analyzer's volatility flag ---------------------------


def test_high_volatility_vote_makes_the_batch_defensive():
    p = EnsembleParams(
        threshold=0.1,
        min_confidence=0.6,
        defensive_threshold_add=0.05,
        defensive_confidence_add=0.1,
        defensive_size_scale=0.5,
        cooldown_s=0,
    )
    e = Ensemble(p, clock=FakeClock())
    d = e.vote("X", [v("a", 1, 0.34), v("b", 0, 0)])  # score 0.17 >= 0.1, confidence 0.67 >= 0.6
    assert d is not None and not d.defensive and d.to_proposal("p").size_scale == 1.0
    assert e.vote("X", [v("a", 1, 0.34), v("b", 0, 0, hv=True)]) is None  # 0.67 < 0.6 + 0.1
    assert e.last_skip == "confidence 0.67 below 0.70 (defensive: high volatility (flagged by b))"
    d = e.vote("X", [v("a", 1, 0.5), v("b", 0, 0, hv=True)])  # score 0.25 >= 0.15, confidence 0.75 >= 0.7
    assert d.defensive and d.threshold == pytest.approx(0.15) and d.min_confidence == pytest.approx(0.7)
    assert d.defensive_reason == "high volatility (flagged by b)"
    proposal = d.to_proposal("p2")
    assert proposal.defensive and proposal.size_scale == 0.5
    assert not e.defensive  # the flag belongs to the batch, not to the ensemble's state


# ---- modes ---------------------------------------------------------------------------


def test_modes_route_proposals():
    assert needs_approval("auto", 0.66, 0.8) is False
    assert needs_approval("manual", 0.99, 0.8) is True
    assert needs_approval("hybrid", 0.79, 0.8) is True
    assert needs_approval("hybrid", 0.80, 0.8) is False


# ---- scoring votes at their horizon -----------------------------------------------------


def test_horizon_scorer_hit_miss_dead_band():
    sc = HorizonScorer(horizon_s=60, dead_band_bps=10)
    assert sc.add(v("up", 1, 0.8, recv=0, price=100.0))
    assert sc.add(v("down", -1, 0.8, recv=0, price=100.0))
    assert sc.add(v("quiet", 1, 0.8, recv=0, price=100.0, symbol="Y"))
    assert not sc.add(v("up", 1, 0.9, recv=5 * S, price=100.0))  # one pending per member and symbol
    assert not sc.add(v("flat", 0, 0, recv=0))  # no opinion, nothing to score
    assert sc.observe("X", 101.0, 59 * S) == []  # horizon not reached
    assert sorted(sc.observe("X", 100.5, 60 * S)) == [("down", False), ("up", True)]  # +50 bps
    assert sc.observe("Y", 100.05, 61 * S) == []  # +5 bps: inside the 10 bps band, no outcome
    assert len(sc) == 0
    assert sc.add(v("up", 1, 0.9, recv=61 * S))  # scored, so a new one may wait


def test_horizon_scorer_memory_is_bounded():
    sc = HorizonScorer(horizon_s=1, dead_band_bps=0, max_pending=3)
    for i in range(10):
        sc.add(v(f"m{i}", 1, 1, recv=i))
    assert len(sc) == 3
    assert [m for m, _ in sc.observe("X", 200.0, 100 * S)] == ["m7", "m8", "m9"]  # the oldest went


def test_weights_adapt_to_votes_scored_at_their_horizon():
    # A member that keeps calling the move right gains weight over one that keeps
    # calling it wrong, with votes scored by the horizon scorer (decay ~ window 10).
    e = Ensemble(EnsembleParams(decay=0.9, threshold=0.01, min_confidence=0.0, cooldown_s=0), clock=FakeClock())
    sc = HorizonScorer(horizon_s=60, dead_band_bps=2)
    price = 100.0
    for step in range(30):
        t = step * 61 * S
        for model, hit in sc.observe("X", price, t):
            e.record_outcome(model, hit)
        sc.add(v("right", 1, 1, recv=t, price=price))
        sc.add(v("wrong", -1, 1, recv=t, price=price))
        price *= 1.001  # +10 bps per step: "right" is right
    w = e.weights(["right", "wrong"])
    assert w["right"] > 0.9 and w["wrong"] < 0.1
    assert e.hit_rate("right") > 0.8 and e.hit_rate("wrong") < 0.2  # prior 2:2 plus ~9.5 decayed outcomes
    # The learned weights decide a split vote.
    d = e.vote("X", [v("right", 1, 1), v("wrong", -1, 1)])
    assert d is not None and d.side == "buy"
    # Rolling window: the regime flips and the weights follow within ~a window.
    for step in range(30, 60):
        t = step * 61 * S
        for model, hit in sc.observe("X", price, t):
            e.record_outcome(model, hit)
        sc.add(v("right", 1, 1, recv=t, price=price))
        sc.add(v("wrong", -1, 1, recv=t, price=price))
        price *= 0.999
    w = e.weights(["right", "wrong"])
    assert w["wrong"] > 0.9
