"""The EnsembleVoter actor in-process: real pykka actors, a real router, real lmdb
in tmp_path; the risk guard is a recording actor. Modes, expiry, restart, weights."""

from __future__ import annotations

import time

import msgspec
import pytest
from actor_probes import add_recorder, services, start_actor
from waiting import wait_for

from stockade.actors.ensemble_voter import EnsembleVoter
from stockade.codecs.messages import ApproveProposal, ListPending, Proposal, Rejection, RejectProposal, Vote, Votes
from stockade.codecs.records import VoterDecisionRecord, VoterWeightRecord
from stockade.config.settings import Settings, VoterSettings
from stockade.storage.store import Store
from stockade.supervisors.faults import CrashNow
from stockade.supervisors.router import Router
from stockade.trading.voting import POOLED, Ensemble, EnsembleParams

S = 1_000_000_000
MODELS = ("momentum", "mean_reversion", "breakout")


class Harness:
    def __init__(self, tmp_path, one_message: bool = True, **voter) -> None:
        self.one_message = one_message
        voter.setdefault("cooldown_s", 0.0)
        self.settings = Settings(voter=VoterSettings(**voter))
        self.store = Store.open(tmp_path / "data")
        self.svc = services(self.settings, self.store)
        self.router = Router()
        self.sink, self.got = add_recorder(self.router, "risk_guard")
        self.ref = None
        self.start()

    def start(self) -> None:
        self.ref = start_actor(self.router, EnsembleVoter, "ensemble_voter", {"services": self.svc})

    def stop_voter(self) -> None:
        self.ref.stop(timeout=10)

    def batch(
        self, symbol: str, calls: dict[str, tuple[float, float]], recv_ns: int, price: float = 100.0, hv: bool = False
    ) -> None:
        """One evaluation: every configured model votes (flat unless in `calls`)."""
        votes = tuple(
            Vote(
                symbol,
                model,
                *calls.get(model, (0.0, 0.0)),
                price,
                recv_ns,
                recv_ns,
                price - 0.01,
                price + 0.01,
                batch_size=len(MODELS),
                high_volatility=hv,
            )
            for model in MODELS
        )
        if self.one_message:  # as the analyzer sends them
            self.router.tell("ensemble_voter", Votes(symbol, votes), "test")
        else:
            for vote in votes:
                self.router.tell("ensemble_voter", vote, "test")

    def ask(self, msg):
        return self.router.ask("ensemble_voter", msg, timeout=10)

    def pending(self) -> list[dict]:
        return self.ask(ListPending())

    def records(self, proposal_id: str | None = None) -> list[VoterDecisionRecord]:
        self.pending()  # the voter has handled everything sent before (its mailbox is FIFO)
        return [r for _, r in self.store.voter_decisions.items() if proposal_id in (None, r.proposal_id)]

    def next_sent(self, timeout: float = 10.0):
        return self.got.get(timeout=timeout)

    def close(self) -> None:
        if self.ref is not None and self.ref.is_alive():
            self.ref.stop(timeout=10)
        self.sink.stop(timeout=10)
        self.store.close()


@pytest.fixture(params=["one_message", "vote_by_vote"])
def make(tmp_path, request):
    """Every test twice: the evaluation as one Votes message (the analyzer's way) and
    as single Votes in a row; the voter must decide the same either way."""
    made: list[Harness] = []

    def factory(**voter) -> Harness:
        h = Harness(tmp_path, request.param == "one_message", **voter)
        made.append(h)
        return h

    yield factory
    for h in made:
        h.close()


def now_ns() -> int:
    return time.time_ns()


def test_auto_mode_proposes_and_stores_the_inputs(make):
    h = make(mode="auto")
    h.batch("AAPL", {"momentum": (1.0, 0.7)}, now_ns())
    p = h.next_sent()
    assert isinstance(p, Proposal) and p.side == "buy" and p.symbol == "AAPL"
    assert p.confidence == pytest.approx(0.85) and p.models == ("momentum",) and p.size_scale == 1.0
    assert h.pending() == []
    [rec] = h.records(p.proposal_id)
    assert rec.outcome == "proposed" and rec.mode == "auto" and rec.min_confidence == 0.65
    assert rec.score == pytest.approx(0.7 / 3) and rec.threshold == pytest.approx(0.05)
    assert [v.model for v in rec.votes] == sorted(MODELS)
    assert sum(v.weight for v in rec.votes) == pytest.approx(1.0)
    # Below the minimum confidence nothing is proposed (or stored).
    h.batch("MSFT", {"momentum": (1.0, 0.2)}, now_ns())  # score 0.067, confidence 0.6
    assert h.pending() == [] and h.got.empty() and len(h.records()) == 1


def test_defensive_batch_scales_the_size(make):
    h = make(mode="auto")
    h.batch("AAPL", {"momentum": (1.0, 0.9), "breakout": (1.0, 0.9)}, now_ns(), hv=True)
    p = h.next_sent()
    assert p.defensive and p.size_scale == 0.5
    [rec] = h.records(p.proposal_id)
    assert rec.defensive and "high volatility" in rec.defensive_reason
    assert rec.threshold == pytest.approx(0.15) and rec.min_confidence == pytest.approx(0.75)


def test_manual_mode_parks_then_approve_sends_at_the_latest_quote(make):
    h = make(mode="manual")
    t0 = now_ns()
    h.batch("AAPL", {"momentum": (1.0, 0.9)}, t0, price=100.0)
    [parked] = h.pending()
    pid = parked["proposal_id"]
    assert parked["symbol"] == "AAPL" and parked["side"] == "buy" and parked["confidence"] == pytest.approx(0.95)
    assert 0 < parked["expires_in_s"] <= 300
    # A later evaluation (flat) brings a newer quote; approval sends the proposal at it.
    h.batch("AAPL", {}, t0 + 2 * S, price=101.0)
    assert h.ask(ApproveProposal("nope")) == {"error": "no pending proposal 'nope'"}
    assert h.ask(ApproveProposal(pid))["approved"] == pid
    sent = h.next_sent()  # the first message the risk guard ever saw: nothing went out while parked
    assert sent.proposal_id == pid and sent.price == 101.0 and sent.quote_recv_ns == t0 + 2 * S
    assert h.pending() == []
    assert [r.outcome for r in h.records(pid)] == ["parked", "approved"]
    assert h.ask(ApproveProposal(pid))["error"]  # once only


def test_manual_mode_reject(make):
    h = make(mode="manual")
    h.batch("MSFT", {"breakout": (-1.0, 0.8)}, now_ns())
    [parked] = h.pending()
    assert parked["side"] == "sell"
    reply = h.ask(RejectProposal(parked["proposal_id"], "looks wrong"))
    assert reply == {"rejected": parked["proposal_id"], "reason": "looks wrong"}
    assert h.pending() == []
    recs = h.records(parked["proposal_id"])
    assert [r.outcome for r in recs] == ["parked", "rejected"] and recs[-1].reason == "looks wrong"
    assert h.got.empty()


def test_hybrid_mode_autos_confident_proposals_and_parks_the_rest(make):
    h = make(mode="hybrid")  # hybrid_auto_confidence 0.8 by default
    h.batch("AAPL", {"momentum": (1.0, 0.7)}, now_ns())  # confidence 0.85
    sent = h.next_sent()
    assert sent.symbol == "AAPL" and h.records(sent.proposal_id)[0].outcome == "proposed"
    h.batch("MSFT", {"momentum": (1.0, 0.4)}, now_ns())  # confidence 0.7
    [parked] = h.pending()
    assert parked["symbol"] == "MSFT" and parked["confidence"] == pytest.approx(0.7)
    assert h.got.empty()


def test_parked_proposal_expires(make):
    h = make(mode="manual", approval_timeout_s=0.5)
    h.batch("NVDA", {"momentum": (1.0, 0.9)}, now_ns())
    [parked] = h.pending()
    wait_for(lambda: h.pending() == [], 10, 0.05, "the parked proposal to expire")
    assert [r.outcome for r in h.records(parked["proposal_id"])] == ["parked", "expired"]
    assert "no pending proposal" in h.ask(ApproveProposal(parked["proposal_id"]))["error"]
    # The symbol is free again: a new proposal parks.
    h.batch("NVDA", {"momentum": (1.0, 0.9)}, now_ns())
    assert len(h.pending()) == 1


def test_parked_proposals_survive_a_restart_and_stale_ones_expire(make):
    h = make(mode="manual")
    h.batch("AMZN", {"momentum": (1.0, 0.9)}, now_ns())
    [parked] = h.pending()
    # A proposal parked long ago by an earlier run, never answered.
    old = h.records(parked["proposal_id"])[0]
    stale_ns = now_ns() - 1000 * S
    h.store.voter_decisions.add(
        msgspec.structs.replace(old, proposal_id="stale", symbol="SPY", ts_ns=stale_ns, proposed_ns=stale_ns),
        ts_ns=stale_ns,
    )
    h.stop_voter()
    h.start()
    [again] = h.pending()
    assert again["proposal_id"] == parked["proposal_id"] and again["symbol"] == "AMZN"
    assert again["age_s"] >= parked["age_s"]
    assert [r.outcome for r in h.records("stale")] == ["parked", "expired"]
    # The restored proposal still holds its symbol's side, and approval works.
    h.batch("AMZN", {"momentum": (1.0, 0.9)}, now_ns())
    assert len(h.pending()) == 1
    assert h.ask(ApproveProposal(parked["proposal_id"]))["approved"] == parked["proposal_id"]
    assert h.next_sent().proposal_id == parked["proposal_id"]


def test_weights_adapt_to_each_members_hit_rate_at_the_horizon(make):
    h = make(mode="manual", score_horizon_s=1.0, score_dead_band_bps=1.0, adaptive_window=10)
    t, price = now_ns(), 100.0
    for _ in range(25):
        # momentum keeps calling up, breakout keeps calling down; the price rises 10 bps a step.
        # (Leans too small to propose on: scored all the same.)
        h.batch("SPY", {"momentum": (1.0, 0.05), "breakout": (-1.0, 0.05)}, t, price=price)
        t += 2 * S
        price *= 1.001
    # Then a batch where both call their side confidently: momentum's weight wins it.
    h.batch("SPY", {"momentum": (1.0, 0.95), "breakout": (-1.0, 0.95)}, t, price=price)
    [parked] = h.pending()
    assert parked["side"] == "buy"
    rec = h.records(parked["proposal_id"])[0]
    w = {v.model: v.weight for v in rec.votes}
    # momentum: ~9 decayed hits on a 2:2 prior, p ~ 0.85, raw weight 2p-1 ~ 0.7; breakout (all
    # misses) and mean_reversion (never scored, p = 0.5) sit at the 0.1 floor.
    assert w["momentum"] > 0.7
    assert w["breakout"] == pytest.approx(w["mean_reversion"]) and w["breakout"] < 0.15


def test_learned_weights_survive_a_restart(make):
    h = make(mode="manual", score_horizon_s=1.0, score_dead_band_bps=1.0, adaptive_window=10)
    t, price = now_ns(), 100.0
    for _ in range(25):  # as above: momentum right 24 times, breakout wrong 24 times
        h.batch("SPY", {"momentum": (1.0, 0.05), "breakout": (-1.0, 0.05)}, t, price=price)
        t += 2 * S
        price *= 1.001
    # Saved while running (no stop needed), non-durably every few seconds.
    wait_for(lambda: "momentum" in set(h.store.voter_weights.keys()), 10, 0.05, "the weights to be saved")
    h.stop_voter()  # teardown saves the latest counts
    saved = {m: (r.hits, r.misses) for m, r in h.store.voter_weights.items()}
    decay = 1.0 - 1.0 / 10  # as the voter derives it from adaptive_window
    hits = 0.0
    for _ in range(24):
        hits = hits * decay + 1.0
    assert saved["momentum"] == (hits, 0.0) and saved["breakout"] == (0.0, hits)  # the decayed counts, exactly
    assert "mean_reversion" not in saved  # never scored
    pooled = 0.0  # the pooled counts decay at every one of the 48 outcomes
    for _ in range(48):
        pooled = pooled * decay + 1.0
    assert sum(saved[POOLED]) == pytest.approx(pooled, rel=1e-12)

    h.start()
    h.batch("SPY", {"momentum": (1.0, 0.95), "breakout": (-1.0, 0.95)}, t, price=price)
    [parked] = h.pending()
    assert parked["side"] == "buy"  # momentum's learned weight carries it, as before the restart
    w = {v.model: v.weight for v in h.records(parked["proposal_id"])[0].votes}
    expected = Ensemble(EnsembleParams(decay=decay, min_weight=h.settings.voter.min_weight))
    expected.restore_track_record(saved)
    assert w == pytest.approx(expected.weights(MODELS), rel=1e-12)
    assert w["momentum"] > 0.7 and w["breakout"] < 0.15


def test_stored_weights_are_ignored_when_adaptation_is_off(make):
    h = make(mode="manual", adaptive=False)
    # A track record from an earlier, adaptive run: breakout was always wrong.
    h.store.voter_weights.put("breakout", VoterWeightRecord(hits=0.0, misses=40.0))
    h.stop_voter()
    h.start()
    h.batch("SPY", {"momentum": (1.0, 0.9)}, now_ns())
    [parked] = h.pending()
    w = {v.model: v.weight for v in h.records(parked["proposal_id"])[0].votes}
    assert w == pytest.approx({m: 1 / 3 for m in MODELS})  # the configured (equal) weights


def test_the_cool_down_runs_on_the_quotes_not_on_the_handling_clock(make):
    # From the quote the last proposal reacted to, to the batch's quote: what a
    # backtest (whose clock is the receive time) reproduces, whatever the
    # pipeline's latency was live.
    h = make(mode="auto", cooldown_s=60.0)
    t0 = now_ns()
    h.batch("AAPL", {"momentum": (1.0, 0.9)}, t0)
    first = h.next_sent()
    h.router.tell("ensemble_voter", Rejection(first.proposal_id, "AAPL", "test", "cleared"), "test")
    h.batch("AAPL", {"momentum": (1.0, 0.9)}, t0 + 59 * S)  # 59 s of data later: still cooling down
    assert [r.quote_recv_ns for r in h.records() if r.outcome == "proposed"] == [t0]
    h.batch("AAPL", {"momentum": (1.0, 0.9)}, t0 + 60 * S)  # 60 s later, though handled at once
    assert h.next_sent().quote_recv_ns == t0 + 60 * S


@pytest.mark.parametrize("end", ["crash", "clean_stop"])
def test_a_burst_of_proposals_is_a_group_commit_kept_through_a_crash_and_a_stop(make, tmp_path, end):
    # "proposed" records are audit records: they wait in the Store's buffer
    # (not the voter's), so a crash of the voter loses none, a stop commits them.
    h = make(mode="auto")
    audit = h.store.env.audit
    audit.max_delay_s = 3600.0  # no timer commit: only the paths under test
    audit.flush()
    symbols = [f"S{i:02d}" for i in range(12)]
    for symbol in symbols:
        h.batch(symbol, {"momentum": (1.0, 0.7)}, now_ns())
    sent = [h.next_sent().proposal_id for _ in symbols]
    wait_for(lambda: audit.pending == len(symbols), 10, 0.005, "every proposal recorded")
    with h.store.read() as txn:  # none paid a commit of its own
        assert list(h.store.voter_decisions.table.items(txn=txn)) == []
    if end == "crash":
        h.ref.tell(CrashNow())
        wait_for(lambda: not h.ref.is_alive(), 10, 0.01, "the voter crashed")
        assert audit.pending == len(symbols)  # the crash took nothing with it
        h.start()  # as its supervisor would; it reads its records back at setup
        stored = [r.proposal_id for r in h.records()]
    else:
        h.stop_voter()
        h.store.close()
        h.store = Store.open(tmp_path / "data")
        with h.store.read() as txn:
            stored = [r.proposal_id for _, r in h.store.voter_decisions.table.items(txn=txn)]
    assert stored == sent  # all of them, in the order proposed
