"""Ensemble maths: weighted vote, confidence, adaptive weights, defensive regime, cool-down.

Two numbers decide a proposal, and they answer different questions:

score      = sum(w_i * dir_i * conv_i) / sum(w_i)               in [-1, 1]
             over ALL members, abstaining (flat) ones included: "how much of
             the ensemble's weighted conviction pushes, and which way". Its
             sign is the side; `threshold` (0.05 by default) applies to |score|
             and only asks that the push is not a rounding error: with three
             rule strategies and four ML models, one rule member at conviction
             0.7 alone gives 0.1.
confidence = the pooled probability that the side is right, in (0, 1):
             each member's vote is read as a probability of an up move,
             p_i = 0.5 + 0.5 * dir_i * conv_i (exactly how the ML members
             produce their votes from P(up); a rule strategy's conviction is
             read the same way), and the log-odds are added, weighted by the
             members' weights scaled to mean 1 over the batch:
                 L = sum(w_i / mean(w) * logit(p_i)),  confidence = sigmoid(±L)
             for the score's side. Independent evidence adds up, dissent
             subtracts, an abstainer (p = 0.5) adds nothing, and a member at
             p = 0.55 adds little. One rule member at conviction 0.3 alone is
             0.65; at 0.6 it is 0.80; two at 0.3 agreeing are 0.78; 0.8 long
             against 0.4 short is 0.79. `min_confidence` (0.65 by default) applies to
             it: a proposal needs the ensemble to make its side at least a
             65% call. Hybrid mode sends a proposal straight to risk only at
             `hybrid_auto_confidence` (0.80) or more, else an operator decides.
             Correlated members are counted as if independent (naive Bayes),
             which is why the weights, learned from each member's own hit
             rate, scale their say.
agreement  = the winning side's share of the weighted conviction (kept for the
             log and `min_agreement`).

Why the demo still trades at 0.65: the rule strategies' convictions start
at 0.5 (mean reversion's base) or grow from 0 with the setup (EMA gap,
breakout distance), so a single clear setup (conviction >= 0.3) passes on
its own unless other members lean against it; the ML members' small leans
move the result by a few points either way. Measured on the embedded venue
(seed 4, shipped settings, 3 rule + 4 ML members): of the evaluations with
any push, about 40% clear 0.65 and 20% clear 0.80; the first order went
out about 4 s after READY. The naive-Bayes caveat shows here too: four ML
members each at p = 0.54 pool to 0.66, so they can carry a proposal
together; their weights then stand or fall with their scored hit rates.

Adaptive weights: every directional vote is kept (one pending vote per
member and symbol, so memory is bounded and outcomes do not overlap) and
scored once `horizon` has passed, against the symbol's price then: a hit if
the price moved its way by more than the dead band, a miss if it moved
against it by more, and no outcome inside the band (noise says nothing).
Each member's hit rate is a Beta posterior whose counts decay by `decay` at
every outcome of that member (recent calls matter more; a member cannot coast
on last month). Weight = base weight * max(floor, 2p - 1), i.e. proportional
to the edge over a coin flip, floored so a member that has gone cold still
votes a little and can earn its way back. With the symmetric prior every
member starts equal; a member not configured (e.g. a new ML model) has base 1.

Defensive regime: when any vote of the batch flags high volatility, when
the pooled recent hit rate is poor (with enough decayed outcomes to mean
something) or when equity is in drawdown from its high-water mark, the score
threshold and the minimum confidence rise and the proposal carries
`size_scale` < 1, which the risk sizing multiplies by.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import msgspec

from stockade.codecs.messages import Proposal, Vote
from stockade.config.params import EnsembleParams

Side = Literal["buy", "sell"]


class Tally(msgspec.Struct, frozen=True):
    """The arithmetic of one vote, for decisions and for logs."""

    score: float
    agreement: float
    voters: tuple[str, ...]
    agreeing: tuple[str, ...]
    confidence: float = 0.0


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The ensemble wants to trade `symbol` on `side`."""

    symbol: str
    side: Side
    score: float
    confidence: float
    threshold: float
    defensive: bool
    models: tuple[str, ...]  # models that voted on the winning side
    price: float
    bid: float
    ask: float
    quote_ts_ns: int
    quote_recv_ns: int
    min_confidence: float = 0.0
    defensive_reason: str = ""
    size_scale: float = 1.0
    weights: dict[str, float] = {}  # normalised over the voters
    votes: tuple[Vote, ...] = ()  # the batch, one per member
    atr: float = 0.0

    def to_proposal(self, proposal_id: str) -> Proposal:
        return Proposal(
            proposal_id=proposal_id,
            symbol=self.symbol,
            side=self.side,
            score=self.score,
            confidence=self.confidence,
            price=self.price,
            bid=self.bid,
            ask=self.ask,
            quote_ts_ns=self.quote_ts_ns,
            quote_recv_ns=self.quote_recv_ns,
            models=self.models,
            size_scale=self.size_scale,
            defensive=self.defensive,
            atr=self.atr,
        )


# A vote is never read as certain: one member at conviction 1 must not outvote any number of others.
P_MIN = 0.01


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def tally(votes: Iterable[Vote], weights: dict[str, float]) -> Tally:
    """Weighted score and agreement of votes (one per model; the latest wins)."""
    latest: dict[str, Vote] = {}
    for v in votes:
        prev = latest.get(v.model)
        if prev is None or v.quote_recv_ns >= prev.quote_recv_ns:
            latest[v.model] = v
    num = den = pos = neg = 0.0
    p_max = 1.0 - P_MIN
    terms: list[tuple[float, float]] = []  # (weight, log-odds of an up move)
    for model, v in latest.items():
        w = weights.get(model, 0.0)
        d, c = v.direction, v.confidence
        if not (math.isfinite(d) and math.isfinite(c)):
            d = c = 0.0  # a broken model abstains but still counts as a voter
        # _clip() written out (the hot path: once per member per evaluation), the same arithmetic.
        d = -1.0 if d < -1.0 else 1.0 if d > 1.0 else d
        c = 0.0 if c < 0.0 else 1.0 if c > 1.0 else c
        x = w * d * c
        num += x
        den += w
        p_up = 0.5 + 0.5 * d * c
        p_up = P_MIN if p_up < P_MIN else p_max if p_up > p_max else p_up
        terms.append((w, math.log(p_up / (1.0 - p_up))))
        if x > 0:
            pos += x
        elif x < 0:
            neg -= x
    score = num / den if den > 0 else 0.0
    side_total = pos if score > 0 else neg
    agreement = side_total / (pos + neg) if pos + neg > 0 and score != 0 else 0.0
    agreeing = tuple(
        sorted(m for m, v in latest.items() if score != 0 and v.direction * score > 0 and v.confidence > 0)
    )
    mean_w = den / len(terms) if terms else 0.0
    log_odds = sum(w / mean_w * lo for w, lo in terms) if mean_w > 0 else 0.0
    side = 1.0 if score > 0 else -1.0 if score < 0 else 0.0
    confidence = 1.0 / (1.0 + math.exp(-side * log_odds)) if side else 0.0
    return Tally(score, agreement, tuple(sorted(latest)), agreeing, confidence)


# Key of the pooled counts in `Ensemble.track_record()`; not a member name (those are identifiers).
POOLED = "*pooled"


class _Record:
    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits = 0.0
        self.misses = 0.0

    def add(self, hit: bool, decay: float) -> None:
        self.hits *= decay
        self.misses *= decay
        if hit:
            self.hits += 1.0
        else:
            self.misses += 1.0


class Ensemble:
    """Weighted voting with learned weights and per-symbol cool-down. Pure; one owner."""

    def __init__(self, params: EnsembleParams | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        self.params = params or EnsembleParams()
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._pooled = _Record()
        self._equity_peak: float | None = None
        self._equity: float | None = None
        self._last_proposal: dict[str, tuple[int, Side]] = {}
        self._in_flight: dict[str, tuple[Side, int]] = {}  # symbol -> (side, marked at ns)
        # weight() per member, until its record changes: asked for every member at every
        # evaluation, while outcomes come once per horizon. Kept for one `params` only.
        self._weights: dict[str, float] = {}
        self._weights_for: EnsembleParams = self.params
        self.last_skip: str = ""  # why the latest vote() returned None

    # ---- track record ----------------------------------------------------------

    def record_outcome(self, model: str, hit: bool) -> None:
        """A realised call of `model`: hit (right direction) or miss."""
        p = self.params
        self._records.setdefault(model, _Record()).add(bool(hit), p.decay)
        self._pooled.add(bool(hit), p.decay)
        self._weights.pop(model, None)

    def track_record(self) -> dict[str, tuple[float, float]]:
        """(decayed hits, decayed misses) per member, the pooled counts under POOLED (to persist)."""
        out = {m: (r.hits, r.misses) for m, r in self._records.items()}
        out[POOLED] = (self._pooled.hits, self._pooled.misses)
        return out

    def restore_track_record(self, counts: Mapping[str, tuple[float, float]]) -> None:
        """Replace the learned counts with `counts` as `track_record()` gave them (all or nothing)."""
        for model, (hits, misses) in counts.items():
            if not (math.isfinite(hits) and math.isfinite(misses) and hits >= 0 and misses >= 0):
                raise ValueError(f"track record of {model!r}: bad counts ({hits!r}, {misses!r})")
        self._records = {}
        self._pooled = _Record()
        self._weights.clear()
        for model, (hits, misses) in counts.items():
            r = self._pooled if model == POOLED else self._records.setdefault(model, _Record())
            r.hits, r.misses = float(hits), float(misses)

    def record_equity(self, equity: float) -> None:
        """Account equity, for the drawdown half of defensive mode."""
        if equity > 0 and math.isfinite(equity):
            self._equity = equity
            if self._equity_peak is None or equity > self._equity_peak:
                self._equity_peak = equity

    def hit_rate(self, model: str) -> float:
        """Posterior mean hit rate of one model (the prior mean if unseen)."""
        p = self.params
        r = self._records.get(model) or _Record()
        a, b = p.prior_hits + r.hits, p.prior_misses + r.misses
        return a / (a + b)

    def weight(self, model: str) -> float:
        """Un-normalised weight of one model."""
        p = self.params
        if p is not self._weights_for:  # params replaced: every weight changes
            self._weights, self._weights_for = {}, p
        w = self._weights.get(model)
        if w is None:
            edge = 2.0 * self.hit_rate(model) - 1.0
            w = self._weights[model] = p.weights.get(model, 1.0) * max(p.min_weight, edge)
        return w

    def weights(self, models: Iterable[str] | None = None) -> dict[str, float]:
        """Weights normalised to sum 1 over `models` (default: every model seen)."""
        names = list(models) if models is not None else sorted(self._records)
        raw = {m: self.weight(m) for m in names}
        total = sum(raw.values())
        return {m: (w / total if total > 0 else 0.0) for m, w in raw.items()}

    def drawdown_pct(self) -> float:
        if not self._equity_peak or self._equity is None:
            return 0.0
        return (self._equity_peak - self._equity) / self._equity_peak * 100.0

    def defensive_reason(self, votes: Iterable[Vote] = ()) -> str | None:
        """Why the ensemble is defensive, or None when it is not.

        `votes`: the batch being tallied; any one flagging high volatility counts.
        """
        p = self.params
        flagged = sorted({v.model for v in votes if v.high_volatility})
        if flagged:
            return f"high volatility (flagged by {', '.join(flagged)})"
        pooled = self._pooled
        n = pooled.hits + pooled.misses
        if n >= p.defensive_min_outcomes:
            rate = pooled.hits / n
            if rate < p.defensive_hit_rate:
                return f"recent hit rate {rate:.0%} < {p.defensive_hit_rate:.0%}"
        dd = self.drawdown_pct()
        if dd >= p.defensive_drawdown_pct:
            return f"drawdown {dd:.2f}% >= {p.defensive_drawdown_pct:g}%"
        return None

    @property
    def defensive(self) -> bool:
        return self.defensive_reason() is not None

    @property
    def threshold(self) -> float:
        p = self.params
        return p.threshold + (p.defensive_threshold_add if self.defensive else 0.0)

    # ---- cool-down -------------------------------------------------------------

    def mark_in_flight(self, symbol: str, side: Side | None = None) -> None:
        """A proposal for `symbol` is being worked; no new one on that side until clear().

        `side` defaults to the side of the latest decision for the symbol.
        """
        if side is None:
            last = self._last_proposal.get(symbol)
            if last is None:
                raise ValueError(f"no decision for {symbol!r} yet; pass side")
            side = last[1]
        self._in_flight[symbol] = (side, self._clock())

    def clear(self, symbol: str) -> None:
        """The in-flight proposal for `symbol` is done (filled, rejected, cancelled)."""
        self._in_flight.pop(symbol, None)

    def in_flight(self, symbol: str) -> Side | None:
        """The side in flight for `symbol`, or None (also once the mark has expired)."""
        entry = self._in_flight.get(symbol)
        if entry is None:
            return None
        side, since = entry
        if self._clock() - since > self.params.in_flight_timeout_s * 1e9:
            del self._in_flight[symbol]
            return None
        return side

    # ---- the vote --------------------------------------------------------------

    def vote(self, symbol: str, votes: Iterable[Vote], now_ns: int | None = None) -> Decision | None:
        """A Decision when the weighted vote clears the threshold and the symbol is free.

        A returned Decision starts the symbol's cool-down. When None, `last_skip`
        says why.
        """
        p = self.params
        votes = [v for v in votes if v.symbol == symbol]
        if not votes:
            self.last_skip = "no votes"
            return None
        # Sorted: a set's order follows the per-process string hash, and the
        # weights' float sums must not (a replay gives the same numbers).
        models = sorted({v.model for v in votes})
        if len(models) < p.min_voters:
            self.last_skip = f"{len(models)} voters < {p.min_voters}"
            return None
        weights = self._weights if p is self._weights_for else {}  # the cache weight() keeps
        raw = {m: weights[m] if m in weights else self.weight(m) for m in models}
        t = tally(votes, raw)
        defensive = self.defensive_reason(votes)
        threshold = p.threshold + (p.defensive_threshold_add if defensive else 0.0)
        min_conf = min(1.0, p.min_confidence + (p.defensive_confidence_add if defensive else 0.0))
        mode = f" (defensive: {defensive})" if defensive else ""
        if abs(t.score) < threshold or t.score == 0.0:
            self.last_skip = f"score {t.score:+.3f} below threshold {threshold:.3f}{mode}"
            return None
        if t.confidence < min_conf:
            self.last_skip = f"confidence {t.confidence:.2f} below {min_conf:.2f}{mode}"
            return None
        if t.agreement < p.min_agreement:
            self.last_skip = f"agreement {t.agreement:.2f} < {p.min_agreement:g}"
            return None
        side: Side = "buy" if t.score > 0 else "sell"
        if self.in_flight(symbol) == side:
            self.last_skip = f"{side} already in flight for {symbol}"
            return None
        now = self._clock() if now_ns is None else now_ns
        last = self._last_proposal.get(symbol)
        if last is not None and now - last[0] < p.cooldown_s * 1e9:
            left = p.cooldown_s - (now - last[0]) / 1e9
            self.last_skip = f"{symbol} cooling down ({left:.1f}s left)"
            return None
        newest = max(votes, key=lambda v: v.quote_recv_ns)
        self._last_proposal[symbol] = (now, side)
        self.last_skip = ""
        total = sum(raw.values())
        batch: dict[str, Vote] = {}
        for v in votes:  # the latest vote per member, as tally() counted them
            if v.model not in batch or v.quote_recv_ns >= batch[v.model].quote_recv_ns:
                batch[v.model] = v
        return Decision(
            symbol=symbol,
            side=side,
            score=t.score,
            confidence=t.confidence,
            min_confidence=min_conf,
            defensive_reason=defensive or "",
            size_scale=p.defensive_size_scale if defensive else 1.0,
            weights={m: (w / total if total > 0 else 0.0) for m, w in sorted(raw.items())},
            votes=tuple(batch[m] for m in sorted(batch)),
            threshold=threshold,
            defensive=defensive is not None,
            models=t.agreeing,
            price=newest.price,
            bid=newest.bid,
            ask=newest.ask,
            quote_ts_ns=newest.quote_ts_ns,
            quote_recv_ns=newest.quote_recv_ns,
            atr=newest.atr,
        )


# ---- modes -------------------------------------------------------------------

Mode = Literal["auto", "manual", "hybrid"]


def needs_approval(mode: Mode, confidence: float, hybrid_auto_confidence: float) -> bool:
    """Whether a proposal waits for an operator: always in manual, below the bar in hybrid."""
    if mode == "manual":
        return True
    if mode == "hybrid":
        return confidence < hybrid_auto_confidence
    return False


# ---- scoring votes at their horizon ----------------------------------------------


class HorizonScorer:
    """Scores directional votes against the price `horizon_s` later. Pure; one owner.

    At most one pending vote per (symbol, member): later votes of a member on
    a symbol are not kept while one is waiting, so outcomes do not overlap
    (sixty correlated calls of one trend would otherwise count as sixty) and
    memory is bounded by symbols x members (and `max_pending`).
    """

    def __init__(self, horizon_s: float, dead_band_bps: float, max_pending: int = 10_000) -> None:
        if horizon_s <= 0 or dead_band_bps < 0 or max_pending < 1:
            raise ValueError("need horizon_s > 0, dead_band_bps >= 0, max_pending >= 1")
        self.horizon_ns = int(horizon_s * 1e9)
        self.band = dead_band_bps / 1e4
        self.max_pending = max_pending
        # (symbol, member) -> (sign of the call, price, vote time ns); insertion ordered.
        self._pending: dict[tuple[str, str], tuple[int, float, int]] = {}
        # symbol -> its members with a pending vote, in the same order: `observe` runs
        # on every vote and must not walk every other symbol's (100 symbols x 7 members).
        self._by_symbol: dict[str, dict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, vote: Vote) -> bool:
        """Keep `vote` for scoring; False if flat, unpriced, or one is already waiting."""
        d, c, price = vote.direction, vote.confidence, vote.price
        if not (math.isfinite(d) and math.isfinite(c) and math.isfinite(price)) or d == 0 or c <= 0 or price <= 0:
            return False
        key = (vote.symbol, vote.model)
        if key in self._pending:
            return False
        if len(self._pending) >= self.max_pending:
            oldest = next(iter(self._pending))  # the oldest goes
            del self._pending[oldest]
            self._by_symbol[oldest[0]].pop(oldest[1], None)
        self._pending[key] = (1 if d > 0 else -1, price, vote.quote_recv_ns)
        self._by_symbol.setdefault(vote.symbol, {})[vote.model] = None
        return True

    def observe(self, symbol: str, price: float, now_ns: int) -> list[tuple[str, bool]]:
        """(member, hit) for each pending vote on `symbol` whose horizon has passed.

        A move inside the dead band scores nothing (the vote is dropped).
        """
        if not (math.isfinite(price) and price > 0):
            return []
        out: list[tuple[str, bool]] = []
        members = self._by_symbol.get(symbol)
        if not members:
            return out
        for member in list(members):
            key = (symbol, member)
            sign, then, at = self._pending[key]
            if now_ns - at < self.horizon_ns:
                continue
            del self._pending[key]
            del members[member]
            move = sign * (price - then) / then
            if move > self.band:
                out.append((member, True))
            elif move < -self.band:
                out.append((member, False))
        return out
