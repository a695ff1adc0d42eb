"""Ensemble maths: weighted score, adaptive weights, defensive mode, cool-down."""

from __future__ import annotations

import pytest

from stockade.codecs.messages import Vote
from stockade.quant.voting import Ensemble, EnsembleParams, tally

S = 1_000_000_000


class FakeClock:
    def __init__(self, t: int = 1_000 * S) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def v(model, d, c, symbol="X", recv=1, price=100.0):
    return Vote(symbol, model, d, c, price, recv, recv, price - 0.01, price + 0.01)


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
    e = Ensemble(EnsembleParams(threshold=0.3, cooldown_s=0), clock=FakeClock())
    assert e.vote("X", [v("a", 1, 0.5), v("b", 0, 0)]) is None  # 0.25 < 0.3
    assert "below threshold" in e.last_skip
    d = e.vote("X", [v("a", 1, 0.9, recv=5, price=101.0), v("b", 1, 0.5, recv=7, price=102.0)])
    assert d.side == "buy" and d.score == pytest.approx(0.7) and d.confidence == 1.0
    assert d.models == ("a", "b") and d.price == 102.0 and d.quote_recv_ns == 7
    p = d.to_proposal("p1")
    assert p.side == "buy" and p.models == ("a", "b") and p.bid == pytest.approx(101.99)
    d = e.vote("X", [v("a", -1, 1), v("b", -1, 1)])
    assert d.side == "sell" and d.score == -1.0


def test_vote_needs_agreement_and_voters():
    e = Ensemble(EnsembleParams(threshold=0.1, min_agreement=0.8, cooldown_s=0), clock=FakeClock())
    assert e.vote("X", [v("a", 1, 1), v("b", -1, 0.5)]) is None  # agreement 0.67
    assert "agreement" in e.last_skip
    e = Ensemble(EnsembleParams(min_voters=2), clock=FakeClock())
    assert e.vote("X", [v("a", 1, 1)]) is None
    assert e.vote("Y", [v("a", 1, 1, symbol="X")]) is None  # other symbol's votes ignored


def test_adaptive_weights_follow_hit_rate():
    e = Ensemble(EnsembleParams(decay=1.0, prior_hits=2, prior_misses=2, weight_floor=0.05))
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
    e = Ensemble(EnsembleParams(base_weights={"onnx": 3.0}))
    assert e.weights(["onnx", "rule"]) == {"onnx": pytest.approx(0.75), "rule": pytest.approx(0.25)}


def test_defensive_mode_on_poor_hit_rate_raises_threshold():
    p = EnsembleParams(threshold=0.3, defensive_threshold_add=0.2, defensive_min_outcomes=10, decay=1.0, cooldown_s=0)
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
