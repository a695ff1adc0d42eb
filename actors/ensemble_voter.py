"""EnsembleVoter: turns the members' votes into trade proposals.

Votes from one evaluation of one symbol (same quote) are tallied together
once the whole batch has arrived (`Vote.batch_size`, else one per configured
strategy). The analyzer sends a batch as one `Votes` message; single `Vote`s
are handled the same way, one after another. A decision that clears the score threshold and the minimum
confidence becomes a `Proposal`: straight to the risk guard in auto mode,
parked for an operator in manual mode, and in hybrid mode parked unless its
confidence clears `hybrid_auto_confidence` (see `trading.voting`).

Every step of a proposal (proposed, parked, approved, rejected, expired) is
appended to `store.voter_decisions` with the votes, weights, score and
confidence behind it: `python run.py report` reads it, and parked proposals
are restored from it after a restart (expiry counts from when they were made).

Every directional vote is scored at its horizon against the symbol's later
price (seen in later votes); the outcomes move the members' weights. The
learned counts behind the weights go to `store.voter_weights` (non-durably,
every WEIGHTS_SAVE_S and at teardown) and are reloaded at setup, so a restart
does not send every member back to the prior.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from stockade.actors import names, ticks
from stockade.actors.services import Services
from stockade.codecs.messages import (
    ApproveProposal,
    ListPending,
    OrderUpdate,
    Proposal,
    Rejection,
    RejectProposal,
    Tick,
    Vote,
    Votes,
)
from stockade.codecs.records import VoteEntry, VoterDecisionRecord, VoterOutcome, VoterWeightRecord
from stockade.supervisors.base import StockadeActor, handles
from stockade.trading.order_states import TERMINAL
from stockade.trading.voting import POOLED, Decision, Ensemble, HorizonScorer, needs_approval

log = logging.getLogger(__name__)

NAME = names.ENSEMBLE_VOTER
# How far back a restart looks for parked proposals (older ones are marked expired).
RESTORE_LOOKBACK_NS = 86_400 * 1_000_000_000
# Equity snapshots read at start for the drawdown high-water mark.
EQUITY_HISTORY = 2_000
# How often changed weights are saved: learnable state, so a crash may lose
# a few seconds of outcomes rather than pay a write per outcome batch.
WEIGHTS_SAVE_S = 2.0


def record_of(
    decision: Decision, proposal: Proposal, outcome: VoterOutcome, mode: str, now_ns: int
) -> VoterDecisionRecord:
    """The stored form of a decision and its proposal."""
    return VoterDecisionRecord(
        ts_ns=now_ns,
        proposal_id=proposal.proposal_id,
        symbol=proposal.symbol,
        side=proposal.side,
        outcome=outcome,
        mode=mode,
        score=decision.score,
        confidence=decision.confidence,
        threshold=decision.threshold,
        min_confidence=decision.min_confidence,
        defensive=decision.defensive,
        defensive_reason=decision.defensive_reason,
        size_scale=decision.size_scale,
        models=decision.models,
        votes=tuple(
            VoteEntry(
                model=v.model,
                direction=v.direction,
                confidence=v.confidence,
                weight=decision.weights.get(v.model, 0.0),
                high_volatility=v.high_volatility,
            )
            for v in decision.votes
        ),
        price=proposal.price,
        bid=proposal.bid,
        ask=proposal.ask,
        quote_ts_ns=proposal.quote_ts_ns,
        quote_recv_ns=proposal.quote_recv_ns,
        proposed_ns=now_ns,
    )


def proposal_of(record: VoterDecisionRecord) -> Proposal:
    """The proposal a stored record describes."""
    return Proposal(
        proposal_id=record.proposal_id,
        symbol=record.symbol,
        side=record.side,
        score=record.score,
        confidence=record.confidence,
        price=record.price,
        bid=record.bid,
        ask=record.ask,
        quote_ts_ns=record.quote_ts_ns,
        quote_recv_ns=record.quote_recv_ns,
        models=record.models,
        size_scale=record.size_scale,
        defensive=record.defensive,
    )


class EnsembleVoter(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        v = self.svc.settings.voter
        self.cfg = v
        self.models = tuple(self.svc.settings.analyzer.strategies)
        self.ensemble = Ensemble(v.to_params(), clock=self.clock.now_ns)
        self.scorer = HorizonScorer(v.score_horizon_s, v.score_dead_band_bps)
        self.latest: dict[str, dict[str, Vote]] = {}
        # Parked proposals: id -> their stored record (with proposed_ns, for expiry and age).
        self.parked: dict[str, VoterDecisionRecord] = {}
        self.proposals: dict[str, Proposal] = {}
        self.outcomes = 0  # votes scored since start (status, tests)
        self._weights_dirty = False
        self._load_equity()
        if v.adaptive:  # otherwise the configured weights are the whole story
            self._load_weights()
        self._restore_parked()
        self.every(min(5.0, max(0.25, v.approval_timeout_s / 4)), ticks.EXPIRE)
        self.every(WEIGHTS_SAVE_S, ticks.SAVE_WEIGHTS)

    def teardown(self) -> None:
        self._save_weights()

    # ---- state from storage -------------------------------------------------------

    def _load_equity(self) -> None:
        for snap in reversed(self.svc.store.equity.latest(EQUITY_HISTORY)):
            self.ensemble.record_equity(snap.equity)

    def _load_weights(self) -> None:
        counts = {m: (r.hits, r.misses) for m, r in self.svc.store.voter_weights.items()}
        if not counts:
            return
        try:
            self.ensemble.restore_track_record(counts)
        except ValueError as exc:  # learnable state: start from the prior rather than crash-loop
            log.warning("stored voter weights ignored: %s", exc)
            return
        log.info("restored the track record of %d member(s)", len(counts) - (POOLED in counts))

    def _save_weights(self) -> None:
        if not self._weights_dirty:
            return
        now = self.clock.now_ns()
        records = {
            m: VoterWeightRecord(hits=h, misses=x, ts_ns=now) for m, (h, x) in self.ensemble.track_record().items()
        }
        store = self.svc.store
        store.transact(lambda t: store.voter_weights.put_many(records, txn=t), durable=False)
        self._weights_dirty = False

    def _restore_parked(self) -> None:
        now = self.clock.now_ns()
        last: dict[str, VoterDecisionRecord] = {}
        for _, rec in self.svc.store.voter_decisions.since(now - RESTORE_LOOKBACK_NS):
            last[rec.proposal_id] = rec
        for rec in last.values():
            if rec.outcome != "parked":
                continue
            if self._expired(rec, now):
                self._write(rec, "expired", now, "expired while the voter was down")
                continue
            self.parked[rec.proposal_id] = rec
            self.proposals[rec.proposal_id] = proposal_of(rec)
            self.ensemble.mark_in_flight(rec.symbol, rec.side)
        if self.parked:
            log.info("restored %d parked proposal(s): %s", len(self.parked), ", ".join(sorted(self.parked)))

    def _expired(self, rec: VoterDecisionRecord, now_ns: int) -> bool:
        return now_ns - rec.proposed_ns > self.cfg.approval_timeout_s * 1e9

    def _write(
        self, rec: VoterDecisionRecord, outcome: VoterOutcome, now_ns: int, reason: str = ""
    ) -> VoterDecisionRecord:
        step = msgspec.structs.replace(rec, outcome=outcome, ts_ns=now_ns, reason=reason)
        self.svc.store.voter_decisions.add(step, ts_ns=now_ns)
        return step

    # ---- votes ----------------------------------------------------------------------

    @handles(Votes)
    def on_votes(self, msg: Votes) -> None:
        # Exactly as if they came one by one: the last completes the batch.
        self._take_all(msg.votes)

    @handles(Vote)
    def on_vote(self, vote: Vote) -> None:
        self._take_all((vote,))

    def _take_all(self, batch: tuple[Vote, ...]) -> None:
        """Take `batch` one vote after another, in one pass.

        The same steps and results as taking each vote alone, minus repeated
        work: the scorer is asked once per (symbol, price, quote) rather than
        once per vote (asked again with the same arguments it has nothing more
        to score: the votes added since are at that very quote), and the
        count of the symbol's votes at this quote is kept up to date rather
        than recounted for every vote.
        """
        observed: tuple[str, float, int] | None = None
        at: tuple[str, int] | None = None
        count = 0
        # A zero horizon scores a vote at its own quote: then every vote asks.
        once = self.scorer.horizon_ns > 0
        for vote in batch:
            symbol, recv = vote.symbol, vote.quote_recv_ns
            key = (symbol, vote.price, recv)
            if key != observed or not once:
                observed = key
                self._score(vote)
            self.scorer.add(vote)
            votes = self.latest.get(symbol)
            if votes is None:
                votes = self.latest[symbol] = {}
            if at != (symbol, recv):
                votes[vote.model] = vote
                at = (symbol, recv)
                count = sum(1 for x in votes.values() if x.quote_recv_ns == recv)
            else:
                prev = votes.get(vote.model)
                votes[vote.model] = vote
                if prev is None or prev.quote_recv_ns != recv:
                    count += 1
            if count < (vote.batch_size or len(self.models)):
                continue  # the rest of this evaluation is on its way
            self._decide(vote, [x for x in votes.values() if x.quote_recv_ns == recv])

    def _score(self, vote: Vote) -> None:
        """Score the pending votes on `vote`'s symbol whose horizon has passed at its quote."""
        outcomes = self.scorer.observe(vote.symbol, vote.price, vote.quote_recv_ns)
        if outcomes and self.cfg.adaptive:  # otherwise the configured weights stay as they are
            for model, hit in outcomes:
                self.ensemble.record_outcome(model, hit)
            self.outcomes += len(outcomes)
            self._weights_dirty = True

    def _decide(self, vote: Vote, same: list[Vote]) -> None:
        """Vote on the completed evaluation `same` (that of `vote`): a proposal when it clears."""
        # The cool-down is timed on the data: from the quote the last proposal
        # reacted to, to this batch's quote. On the handling clock it would
        # include the pipeline's latency and its jitter (thread hops, the
        # websocket), and with quotes on a regular grid a cool-down that ends
        # on one quote would open on it or on the next by a coin flip; a
        # backtest, whose clock is the receive time, could not reproduce it.
        decision = self.ensemble.vote(vote.symbol, same, now_ns=vote.quote_recv_ns)
        if decision is None:
            return
        proposal = decision.to_proposal(self.clock.new_id())
        self.ensemble.mark_in_flight(proposal.symbol, proposal.side)
        self.proposals[proposal.proposal_id] = proposal
        mode = self.cfg.mode
        now = self.clock.now_ns()
        parked = needs_approval(mode, proposal.confidence, self.cfg.hybrid_auto_confidence)
        rec = record_of(decision, proposal, "parked" if parked else "proposed", mode, now)
        if not parked:
            self.tell(names.RISK_GUARD, proposal)  # first: the record is not on the order's critical path
            log.debug(
                "proposal: %s %s (score %.2f, confidence %.2f, models %s%s)",
                proposal.side,
                proposal.symbol,
                proposal.score,
                proposal.confidence,
                ",".join(proposal.models),
                f", defensive: {decision.defensive_reason}" if decision.defensive else "",
            )
            # An audit record: committed with the next group (storage/audit_buffer.py), not a flush of its own.
            self.svc.store.voter_decisions.add_later(rec, ts_ns=now)
        else:
            self.svc.store.voter_decisions.add(rec, ts_ns=now)  # durable: it must survive a restart
            self.parked[proposal.proposal_id] = rec
            log.info(
                "proposal %s parked for approval: %s %s (score %.2f, confidence %.2f)",
                proposal.proposal_id,
                proposal.side,
                proposal.symbol,
                proposal.score,
                proposal.confidence,
            )

    # ---- operator approval --------------------------------------------------------

    @handles(ListPending)
    def on_list(self, _msg: ListPending) -> list[dict[str, Any]]:
        now = self.clock.now_ns()
        return [
            {
                "proposal_id": r.proposal_id,
                "symbol": r.symbol,
                "side": r.side,
                "score": round(r.score, 4),
                "confidence": round(r.confidence, 4),
                "price": r.price,
                "models": list(r.models),
                "defensive": r.defensive,
                "size_scale": r.size_scale,
                "age_s": round((now - r.proposed_ns) / 1e9, 1),
                "expires_in_s": round(self.cfg.approval_timeout_s - (now - r.proposed_ns) / 1e9, 1),
            }
            for r in self.parked.values()
        ]

    def _take_parked(self, proposal_id: str, now_ns: int) -> VoterDecisionRecord | None:
        rec = self.parked.get(proposal_id)
        if rec is not None and self._expired(rec, now_ns):
            self._expire(rec, now_ns)
            return None
        return self.parked.pop(proposal_id, None)

    @handles(ApproveProposal)
    def on_approve(self, msg: ApproveProposal) -> dict[str, Any]:
        now = self.clock.now_ns()
        rec = self._take_parked(msg.proposal_id, now)
        if rec is None:
            # An operator's typo is an answer, not a crash of this actor.
            return {"error": f"no pending proposal {msg.proposal_id!r}"}
        proposal = self._refreshed(self.proposals.get(rec.proposal_id) or proposal_of(rec))
        self.proposals[proposal.proposal_id] = proposal
        self._write(rec, "approved", now)
        log.info("proposal %s approved: %s %s", proposal.proposal_id, proposal.side, proposal.symbol)
        self.tell(names.RISK_GUARD, proposal)
        return {"approved": msg.proposal_id, "symbol": proposal.symbol, "side": proposal.side}

    def _refreshed(self, proposal: Proposal) -> Proposal:
        """The proposal at the latest quote the voter has seen for its symbol.

        The operator approves the trade, not a minutes-old price: the risk
        guard refuses quotes older than a few seconds, and sizes and brackets
        from the price it is given.
        """
        votes = self.latest.get(proposal.symbol)
        if not votes:
            return proposal
        newest = max(votes.values(), key=lambda v: v.quote_recv_ns)
        if newest.quote_recv_ns <= proposal.quote_recv_ns:
            return proposal
        return msgspec.structs.replace(
            proposal,
            price=newest.price,
            bid=newest.bid,
            ask=newest.ask,
            quote_ts_ns=newest.quote_ts_ns,
            quote_recv_ns=newest.quote_recv_ns,
        )

    @handles(RejectProposal)
    def on_reject(self, msg: RejectProposal) -> dict[str, Any]:
        now = self.clock.now_ns()
        rec = self._take_parked(msg.proposal_id, now)
        if rec is None:
            return {"error": f"no pending proposal {msg.proposal_id!r}"}
        self.ensemble.clear(rec.symbol)
        self.proposals.pop(msg.proposal_id, None)
        self._write(rec, "rejected", now, msg.reason)
        log.info("proposal %s rejected: %s", msg.proposal_id, msg.reason)
        return {"rejected": msg.proposal_id, "reason": msg.reason}

    def _expire(self, rec: VoterDecisionRecord, now_ns: int) -> None:
        self.parked.pop(rec.proposal_id, None)
        self.proposals.pop(rec.proposal_id, None)
        self.ensemble.clear(rec.symbol)
        self._write(rec, "expired", now_ns, f"unapproved after {self.cfg.approval_timeout_s:g} s")
        log.info("proposal %s expired unapproved", rec.proposal_id)

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what == ticks.SAVE_WEIGHTS:
            self._save_weights()
            return
        if tick.what != ticks.EXPIRE:
            return
        now = self.clock.now_ns()
        for rec in list(self.parked.values()):
            if self._expired(rec, now):
                self._expire(rec, now)
        snap = self.svc.store.equity.latest(1)
        if snap:
            self.ensemble.record_equity(snap[0].equity)
        # A proposal whose answer never came (lost with a crashed actor) is
        # forgotten once its in-flight mark would have expired too.
        cutoff = now - int(self.cfg.in_flight_timeout_s * 1e9)
        for pid, proposal in list(self.proposals.items()):
            if pid not in self.parked and proposal.quote_recv_ns < cutoff:
                del self.proposals[pid]

    # ---- outcomes -------------------------------------------------------------------

    @handles(Rejection)
    def on_rejection(self, rejection: Rejection) -> None:
        self.ensemble.clear(rejection.symbol)
        self.proposals.pop(rejection.proposal_id, None)

    @handles(OrderUpdate)
    def on_order_update(self, update: OrderUpdate) -> None:
        if update.status in TERMINAL:
            self.ensemble.clear(update.symbol)
            self.proposals.pop(update.proposal_id, None)
