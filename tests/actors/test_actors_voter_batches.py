"""A `Votes` batch is taken in one pass: the same decisions, records and learned
weights as its votes sent one by one, on the backtest's calling-thread dispatcher
(deterministic: seeded ids, simulated clock), odd batches included."""

from __future__ import annotations

import random

from actor_probes import services

from stockade.actors import names
from stockade.actors.ensemble_voter import EnsembleVoter
from stockade.codecs.messages import Proposal, Vote, Votes
from stockade.config.settings import Settings, VoterSettings
from stockade.storage.store import Store
from stockade.supervisors.base import StockadeActor, handles
from stockade.supervisors.clock import SimClock
from stockade.supervisors.context import ActorContext
from stockade.supervisors.dispatcher import CallingThreadDispatcher

S = 1_000_000_000
T0 = 1_780_000_000 * S  # June 2026
SYMBOLS = ("AAPL", "MSFT", "NVDA")
MODELS = ("momentum", "mean_reversion", "breakout", "gbm", "mlp")


class Sink(StockadeActor):
    def setup(self) -> None:
        self.got: list[Proposal] = []

    @handles(Proposal)
    def on_proposal(self, proposal: Proposal) -> None:
        self.got.append(proposal)


def _batches(seed: int, n: int) -> list[tuple[int, tuple[Vote, ...]]]:
    """Seeded evaluations; one in five is odd: mixed symbols, a model twice, a short
    batch_size, prices that differ inside the batch, or the previous batch's quote time."""
    rng = random.Random(seed)
    out: list[tuple[int, tuple[Vote, ...]]] = []
    prices = dict.fromkeys(SYMBOLS, 100.0)
    t = T0 + 1_000 * S
    for _ in range(n):
        t += rng.choice((1, 1, 2, 15)) * S // 4
        symbol = rng.choice(SYMBOLS)
        prices[symbol] *= 1.0 + rng.gauss(0.0, 0.002)
        odd = rng.choice(("", "", "", "", "mixed", "twice", "short", "prices", "same_time"))
        recv = out[-1][1][0].quote_recv_ns if odd == "same_time" and out else t
        votes = []
        for model in MODELS:
            d = rng.choice((-1.0, 0.0, 1.0, 1.0))
            sym = rng.choice(SYMBOLS) if odd == "mixed" else symbol
            price = prices[symbol] * (1.0 + rng.gauss(0.0, 0.001)) if odd == "prices" else prices[symbol]
            votes.append(
                Vote(
                    sym,
                    model,
                    d,
                    rng.uniform(0.2, 1.0) if d else 0.0,
                    price,
                    recv,
                    recv,
                    price - 0.01,
                    price + 0.01,
                    batch_size=len(MODELS) - (2 if odd == "short" else 0),
                    high_volatility=rng.random() < 0.1,
                )
            )
        if odd == "twice":
            votes.insert(2, votes[0])
        out.append((max(recv, t), tuple(votes)))
    return out


def _run(tmp_path, name: str, batched: bool, batches) -> tuple:
    settings = Settings(voter=VoterSettings(cooldown_s=0.0, score_horizon_s=2.0, score_dead_band_bps=0.0))
    store = Store.open(tmp_path / name)
    clock = SimClock(T0, seed=3)
    svc = services(settings, store)
    svc.clock = clock
    d = CallingThreadDispatcher()
    actors = {}
    for actor_name, cls in ((names.RISK_GUARD, Sink), (names.ENSEMBLE_VOTER, EnsembleVoter)):
        ctx = ActorContext(
            name=actor_name, generation=0, router=d.router, notify=lambda e: None, extras={"services": svc}, clock=clock
        )
        actors[actor_name] = d.spawn(cls, ctx)
        d.run_until_idle()
    try:
        for at, votes in batches:
            clock.advance_to(at, d.run_until_idle)
            if batched:
                d.router.tell(names.ENSEMBLE_VOTER, Votes(votes[0].symbol, votes), "test")
            else:
                for vote in votes:
                    d.router.tell(names.ENSEMBLE_VOTER, vote, "test")
            d.run_until_idle()
        voter = actors[names.ENSEMBLE_VOTER]
        state = (
            [(k, v) for k, v in store.voter_decisions.items()],
            actors[names.RISK_GUARD].got,
            voter.ensemble.track_record(),
            voter.outcomes,
            dict(voter.scorer._pending),
            {s: list(v.values()) for s, v in voter.latest.items()},
        )
    finally:
        d.stop_all()
        store.close()
    return state


def test_a_batch_in_one_pass_decides_exactly_as_its_votes_one_by_one(tmp_path):
    batches = _batches(seed=11, n=600)
    one_pass = _run(tmp_path, "batched", True, batches)
    one_by_one = _run(tmp_path, "single", False, batches)
    records, proposals, track, outcomes, _, _ = one_pass
    # The stream exercises what it should: proposals, scored outcomes, learned weights.
    assert len(proposals) > 20 and outcomes > 100 and len(track) > len(MODELS)
    assert len(records) >= len(proposals)
    assert one_pass == one_by_one
