"""The ensemble's learned track record round-trips through `store.voter_weights`
exactly: decayed counts, weights, the pooled hit rate, and what comes after."""

from __future__ import annotations

import random

import pytest

from stockade.codecs.records import VoterWeightRecord
from stockade.storage.store import Store
from stockade.trading.voting import POOLED, Ensemble, EnsembleParams

MEMBERS = ("momentum", "mean_reversion", "breakout", "ml_gbm")
PARAMS = EnsembleParams(decay=0.97, defensive_min_outcomes=5.0)


def feed(ensemble: Ensemble, rng: random.Random, n: int) -> None:
    skill = {"momentum": 0.7, "mean_reversion": 0.5, "breakout": 0.3, "ml_gbm": 0.55}
    for _ in range(n):
        m = rng.choice(MEMBERS)
        ensemble.record_outcome(m, rng.random() < skill[m])


def save(store: Store, ensemble: Ensemble) -> None:
    store.voter_weights.put_many(
        {m: VoterWeightRecord(hits=h, misses=x, ts_ns=1) for m, (h, x) in ensemble.track_record().items()}
    )


def load(store: Store) -> dict[str, tuple[float, float]]:
    return {m: (r.hits, r.misses) for m, r in store.voter_weights.items()}


def test_track_record_round_trips_exactly_through_lmdb(tmp_path):
    rng = random.Random(7)
    before = Ensemble(PARAMS)
    feed(before, rng, 733)
    with Store.open(tmp_path / "data") as store:
        save(store, before)
    with Store.open(tmp_path / "data") as store:  # a new process would see the same
        counts = load(store)
    after = Ensemble(PARAMS)
    after.restore_track_record(counts)

    assert after.track_record() == before.track_record()  # bit for bit, pooled counts included
    assert POOLED in counts and set(counts) == {*MEMBERS, POOLED}
    assert all(h != int(h) for h, _ in counts.values())  # really decayed (not whole numbers)
    assert after.weights(MEMBERS) == before.weights(MEMBERS)
    assert after.defensive_reason() == before.defensive_reason()
    # And it learns on from there exactly as the original does.
    feed(before, random.Random(8), 50)
    feed(after, random.Random(8), 50)
    assert after.track_record() == before.track_record()


def test_restore_replaces_what_was_learned():
    e = Ensemble(PARAMS)
    e.record_outcome("breakout", False)
    e.restore_track_record({"momentum": (3.5, 0.25)})
    assert e.track_record() == {"momentum": (3.5, 0.25), POOLED: (0.0, 0.0)}
    assert e.hit_rate("breakout") == 0.5  # back to the prior
    e.restore_track_record({})
    assert e.track_record() == {POOLED: (0.0, 0.0)}


@pytest.mark.parametrize("bad", [(-1.0, 0.0), (float("nan"), 1.0), (1.0, float("inf"))])
def test_restore_refuses_impossible_counts(bad):
    e = Ensemble(PARAMS)
    e.record_outcome("breakout", True)
    before = e.track_record()
    with pytest.raises(ValueError, match="momentum"):
        e.restore_track_record({"breakout": (1.0, 2.0), "momentum": bad})
    assert e.track_record() == before  # nothing half-restored
