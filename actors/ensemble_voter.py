"""EnsembleVoter: turns the models' votes into trade proposals.

Votes from one evaluation of one symbol (same quote) are tallied together
once every configured model has voted. A decision above the threshold becomes
a `Proposal`: straight to the risk guard in auto mode, parked for an operator
in manual mode, and in hybrid mode parked unless the score clears the
(higher) hybrid threshold. Realised outcomes of closed trades feed the
models' hit rates, which move their weights.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from stockade.actors.base import StockadeActor, handles
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
)
from stockade.quant.voting import Ensemble, EnsembleParams
from stockade.storage.order_states import TERMINAL

log = logging.getLogger(__name__)

NAME = "ensemble_voter"


class EnsembleVoter(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        v = self.svc.settings.voter
        self.cfg = v
        self.models = tuple(self.svc.settings.analyzer.strategies)
        self.ensemble = Ensemble(EnsembleParams(
            threshold=v.threshold, base_weights=dict(v.weights), cooldown_s=v.cooldown_s,
            in_flight_timeout_s=v.in_flight_timeout_s, weight_floor=v.min_weight,
            # Outcomes decay so that the last ~adaptive_window of them carry the weight.
            decay=1.0 - 1.0 / v.adaptive_window if v.adaptive_window > 1 else 1.0,
        ))
        self.latest: dict[str, dict[str, Vote]] = {}
        self.parked: dict[str, tuple[Proposal, float]] = {}
        # Open trades per symbol: (side, entry price, models that called it).
        self.entries: dict[str, tuple[str, float, tuple[str, ...]]] = {}
        self.proposals: dict[str, Proposal] = {}
        self.every(5.0, "expire")

    @handles(Vote)
    def on_vote(self, vote: Vote) -> None:
        votes = self.latest.setdefault(vote.symbol, {})
        votes[vote.model] = vote
        same = [x for x in votes.values() if x.quote_recv_ns == vote.quote_recv_ns]
        if len(same) < len(self.models):
            return  # the rest of this evaluation is on its way
        decision = self.ensemble.vote(vote.symbol, same)
        if decision is None:
            return
        proposal = decision.to_proposal(uuid.uuid4().hex)
        self.ensemble.mark_in_flight(proposal.symbol, proposal.side)
        self.proposals[proposal.proposal_id] = proposal
        mode = self.cfg.mode
        auto = mode == "auto" or (mode == "hybrid" and abs(proposal.score) >= self.cfg.hybrid_auto_threshold)
        if auto:
            log.debug("proposal: %s %s (score %.2f, confidence %.2f, models %s)", proposal.side, proposal.symbol,
                     proposal.score, proposal.confidence, ",".join(proposal.models))
            self.tell("risk_guard", proposal)
        else:
            self.parked[proposal.proposal_id] = (proposal, time.monotonic())
            log.info("proposal %s parked for approval: %s %s (score %.2f)", proposal.proposal_id, proposal.side,
                     proposal.symbol, proposal.score)

    # ---- operator approval --------------------------------------------------------

    @handles(ListPending)
    def on_list(self, _msg: ListPending) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {"proposal_id": p.proposal_id, "symbol": p.symbol, "side": p.side, "score": round(p.score, 4),
             "confidence": round(p.confidence, 4), "price": p.price, "models": list(p.models),
             "age_s": round(now - t, 1)}
            for p, t in self.parked.values()
        ]

    @handles(ApproveProposal)
    def on_approve(self, msg: ApproveProposal) -> dict[str, Any]:
        parked = self.parked.pop(msg.proposal_id, None)
        if parked is None:
            # An operator's typo is an answer, not a crash of this actor.
            return {"error": f"no pending proposal {msg.proposal_id!r}"}
        proposal = parked[0]
        # Approved late: refresh nothing; the risk guard judges quote age.
        self.tell("risk_guard", proposal)
        return {"approved": msg.proposal_id, "symbol": proposal.symbol, "side": proposal.side}

    @handles(RejectProposal)
    def on_reject(self, msg: RejectProposal) -> dict[str, Any]:
        parked = self.parked.pop(msg.proposal_id, None)
        if parked is None:
            return {"error": f"no pending proposal {msg.proposal_id!r}"}
        self.ensemble.clear(parked[0].symbol)
        self.proposals.pop(msg.proposal_id, None)
        return {"rejected": msg.proposal_id, "reason": msg.reason}

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what != "expire":
            return
        limit = self.cfg.approval_timeout_s
        now = time.monotonic()
        for pid, (proposal, t) in list(self.parked.items()):
            if now - t > limit:
                del self.parked[pid]
                self.proposals.pop(pid, None)
                self.ensemble.clear(proposal.symbol)
                log.info("proposal %s expired unapproved", pid)
        # A proposal whose answer never came (lost with a crashed actor) is
        # forgotten once its in-flight mark would have expired too.
        cutoff = time.time_ns() - int(self.cfg.in_flight_timeout_s * 1e9)
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
        proposal = self.proposals.get(update.proposal_id) if update.proposal_id else None
        if update.status in TERMINAL:
            self.ensemble.clear(update.symbol)
            self.proposals.pop(update.proposal_id, None)
        if update.fill_qty is None or update.price is None:
            return
        entry = self.entries.get(update.symbol)
        if entry is None:
            # An opening fill: remember who called it, to score them when it closes.
            self.entries[update.symbol] = (update.side, update.price, proposal.models if proposal else ())
        elif entry[0] != update.side:
            side, entry_price, models = entry
            pnl = (update.price - entry_price) if side == "buy" else (entry_price - update.price)
            if self.cfg.adaptive:  # otherwise the configured weights stay as they are
                for model in models:
                    self.ensemble.record_outcome(model, pnl > 0)
            del self.entries[update.symbol]
