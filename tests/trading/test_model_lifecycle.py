"""The model lifecycle's pure rules: PSI, hit-rate scoring, the schedule and the promote rule."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from stockade.trading.model_lifecycle import (
    NEW_YORK,
    HitCounter,
    SetScore,
    degraded,
    drift,
    feature_psi,
    parse_hhmm,
    promote_rule,
    psi,
    reference_of,
    scheduled_due,
    set_score,
)


def test_psi_is_zero_for_the_same_distribution_and_matches_the_formula():
    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    e, a = [0.5, 0.5], [0.8, 0.2]
    assert psi(e, a) == pytest.approx((0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5))
    # An empty bin is floored, not infinite.
    assert math.isfinite(psi([0.5, 0.5], [1.0, 0.0]))
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [1.0])


def test_feature_psi_small_for_a_sample_of_the_training_distribution_large_for_a_shifted_one():
    rng = np.random.default_rng(7)
    train = rng.normal(size=(5000, 3))
    ref = reference_of(train)
    assert ref.rows == 5000 and all(len(e) == 9 for e in ref.edges)
    assert all(sum(f) == pytest.approx(1.0) for f in ref.expected)
    same = feature_psi(ref, rng.normal(size=(2000, 3)))
    assert max(same) < 0.02
    shifted = rng.normal(size=(2000, 3))
    shifted[:, 1] += 1.0  # one feature moves by a standard deviation
    values = feature_psi(ref, shifted)
    assert values[1] > 0.25 and values[0] < 0.02 and values[2] < 0.02
    found = drift(ref, shifted, ("a", "b", "c"))
    assert found.feature == "b" and found.psi == values[1] and found.rows == 2000


def test_reference_of_a_constant_feature_and_bad_shapes():
    X = np.column_stack([np.zeros(100), np.arange(100.0)])
    ref = reference_of(X)
    assert ref.edges[0] == (0.0,)  # ties merge bins
    assert feature_psi(ref, np.column_stack([np.zeros(50), np.arange(50.0) * 2]))[0] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        reference_of(np.zeros((5, 2)))
    with pytest.raises(ValueError):
        feature_psi(ref, np.zeros((10, 3)))


def test_hit_rate_degraded_only_past_the_margin_and_the_minimum_of_scored_calls():
    c = HitCounter()
    trained = {"gbm": 0.60, "logit": 0.58}
    for i in range(40):
        c.record("gbm", i % 2 == 0)  # 0.50
        c.record("logit", i % 20 != 0)  # 0.95
    assert c.rate("gbm") == 0.5 and c.scored("gbm") == 40 and c.rate("mlp") is None
    assert degraded(c, trained, 0.05, 41) == []  # not judged yet
    (d,) = degraded(c, trained, 0.05, 40)
    assert (d.member, d.live, d.trained, d.scored) == ("gbm", 0.5, 0.60, 40)
    assert degraded(c, trained, 0.10, 40) == []  # 0.50 is not below 0.60 - 0.10
    c.reset()
    assert degraded(c, trained, 0.0, 1) == []


def _ns(y, m, d, hh, mm):
    return int(dt.datetime(y, m, d, hh, mm, tzinfo=NEW_YORK).timestamp() * 1e9)


def test_scheduled_retrain_once_a_day_after_its_new_york_time():
    at = parse_hhmm("16:30")
    assert not scheduled_due(_ns(2026, 12, 3, 16, 29), at, 0)
    assert scheduled_due(_ns(2026, 12, 3, 16, 30), at, 0)
    ran = _ns(2026, 12, 3, 16, 31)
    assert not scheduled_due(_ns(2026, 12, 3, 23, 0), at, ran)
    assert scheduled_due(_ns(2026, 12, 4, 16, 45), at, ran)  # the next day
    assert not scheduled_due(_ns(2026, 12, 4, 16, 45), at, ran, trading_day=False)
    for bad in ("1630", "16:3", "ab:cd", "25:00"):
        with pytest.raises(ValueError):
            parse_hhmm(bad)


def test_promote_rule_needs_the_margin_the_same_members_and_the_same_window():
    champ = set_score({"gbm": 0.52, "logit": 0.50}, 800)
    assert champ.score == pytest.approx(0.51)
    better = set_score({"gbm": 0.56, "logit": 0.54}, 800)
    assert promote_rule(champ, better, 0.01).promote
    assert not promote_rule(champ, better, 0.05).promote  # +0.04 is not more than 0.05
    worse = set_score({"gbm": 0.50, "logit": 0.50}, 800)
    verdict = promote_rule(champ, worse, 0.0)
    assert not verdict.promote and "needs > 0" in verdict.reason
    partial = SetScore(members={"gbm": 0.9}, score=0.9, rows=800)
    assert not promote_rule(champ, partial, 0.0).promote
    other_window = set_score({"gbm": 0.9, "logit": 0.9}, 700)
    assert "same window" in promote_rule(champ, other_window, 0.0).reason
    with pytest.raises(ValueError):
        set_score({}, 10)
    with pytest.raises(ValueError):
        set_score({"gbm": float("nan")}, 10)
