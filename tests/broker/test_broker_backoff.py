"""broker/backoff.py."""

from __future__ import annotations

import random

import pytest

from stockade.broker.backoff import Backoff


def test_seeded_rng_is_reproducible():
    a = Backoff(0.5, 30, rng=random.Random(11))
    b = Backoff(0.5, 30, rng=random.Random(11))
    assert [a.next_delay() for _ in range(20)] == [b.next_delay() for _ in range(20)]


def test_full_jitter_within_growing_capped_ceiling():
    bo = Backoff(0.5, 8.0, rng=random.Random(1))
    ceilings = []
    for _ in range(10):
        ceil = bo.ceiling()
        d = bo.next_delay()
        assert 0.0 <= d <= ceil
        ceilings.append(ceil)
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    assert bo.attempts == 10


def test_jitter_spreads_draws():
    bo = Backoff(1.0, 1.0, rng=random.Random(5))
    draws = [bo.next_delay() for _ in range(200)]
    assert min(draws) < 0.1 and max(draws) > 0.9  # full jitter uses the whole range


def test_huge_attempt_counts_do_not_overflow():
    bo = Backoff(0.5, 30, rng=random.Random(1))
    bo.attempts = 10_000
    assert bo.ceiling() == 30 and 0 <= bo.next_delay() <= 30


def test_reset_only_after_a_stable_connection():
    bo = Backoff(0.5, 30, stable_after_s=10, rng=random.Random(1))
    for _ in range(5):
        bo.next_delay()
    bo.mark_up(now=100.0)
    assert bo.mark_down(now=105.0) is False and bo.attempts == 5  # flapping: keep growing
    bo.mark_up(now=200.0)
    assert bo.mark_down(now=210.0) is True and bo.attempts == 0
    assert bo.mark_down(now=300.0) is False  # down without up: nothing to judge


@pytest.mark.parametrize("kw", [dict(base_s=0), dict(base_s=2, cap_s=1), dict(factor=0.5), dict(stable_after_s=-1)])
def test_rejects_bad_parameters(kw):
    args = dict(base_s=0.5, cap_s=30.0)
    args.update(kw)
    with pytest.raises(ValueError):
        Backoff(args.pop("base_s"), args.pop("cap_s"), **args)
