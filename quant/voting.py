"""Ensemble maths: weighted vote, adaptive weights, defensive mode, cool-down.

score      = sum(w_i * dir_i * conf_i) / sum(w_i)           in [-1, 1]
agreement  = (weighted conviction on the score's side) / (all weighted conviction)
             in [0, 1]; 1 when every model with an opinion agrees. This is the
             Decision's `confidence`.

A model that votes flat still counts in sum(w_i): "no opinion" from a
trusted model is evidence against trading, so one excited model cannot carry
the ensemble alone unless its weight says it should.

Adaptive weights: each model's hit rate is a Beta posterior whose counts
decay by `decay` at every outcome of that model (recent calls matter more;
a model cannot coast on last month). Weight = base weight * max(floor,
2p - 1), i.e. proportional to the edge over a coin flip, floored so a
model that has gone cold still votes a little and can earn its way back.
With the symmetric prior every model starts equal.

Defensive mode raises the threshold when the pooled recent hit rate is
poor (with enough decayed outcomes to mean something) or when equity is
in drawdown from its high-water mark.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Literal

import msgspec

from stockade.codecs.messages import Proposal, Vote

Side = Literal["buy", "sell"]


class EnsembleParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Ensemble thresholds, weight learning and cool-down."""

    threshold: float = 0.25  # |score| needed to propose
    min_agreement: float = 0.6  # share of weighted conviction on the winning side
    min_voters: int = 1  # distinct models that must have voted
    base_weights: dict[str, float] = {}  # static multipliers; absent models = 1.0
    prior_hits: float = 2.0  # Beta prior alpha
    prior_misses: float = 2.0  # Beta prior beta
    decay: float = 0.98  # per outcome; effective memory ~ 1/(1-decay) outcomes
    weight_floor: float = 0.05
    defensive_min_outcomes: float = 20.0  # decayed pooled outcomes before hit rate counts
    defensive_hit_rate: float = 0.45  # pooled hit rate below this -> defensive
    defensive_drawdown_pct: float = 3.0  # equity this % below its peak -> defensive
    defensive_threshold_add: float = 0.15
    cooldown_s: float = 60.0  # min seconds between proposals for one symbol
    # An in-flight mark expires: the answer (fill, rejection) can be lost with
    # a crashed actor, and a symbol must not stay blocked forever.
    in_flight_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {self.decay!r}")
        if self.prior_hits <= 0 or self.prior_misses <= 0:
            raise ValueError("Beta prior counts must be positive")
        if not 0.0 < self.weight_floor <= 1.0:
            raise ValueError(f"weight_floor must be in (0, 1], got {self.weight_floor!r}")


class Tally(msgspec.Struct, frozen=True):
    """The arithmetic of one vote, for decisions and for logs."""

    score: float
    agreement: float
    voters: tuple[str, ...]
    agreeing: tuple[str, ...]


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
        )


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
    for model, v in latest.items():
        w = weights.get(model, 0.0)
        d, c = v.direction, v.confidence
        if not (math.isfinite(d) and math.isfinite(c)):
            d = c = 0.0  # a broken model abstains but still counts as a voter
        x = w * _clip(d, -1.0, 1.0) * _clip(c, 0.0, 1.0)
        num += x
        den += w
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
    return Tally(score, agreement, tuple(sorted(latest)), agreeing)


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
        self.last_skip: str = ""  # why the latest vote() returned None

    # ---- track record ----------------------------------------------------------

    def record_outcome(self, model: str, hit: bool) -> None:
        """A realised call of `model`: hit (right direction) or miss."""
        p = self.params
        self._records.setdefault(model, _Record()).add(bool(hit), p.decay)
        self._pooled.add(bool(hit), p.decay)

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
        edge = 2.0 * self.hit_rate(model) - 1.0
        return p.base_weights.get(model, 1.0) * max(p.weight_floor, edge)

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

    def defensive_reason(self) -> str | None:
        """Why the ensemble is defensive, or None when it is not."""
        p = self.params
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
        models = {v.model for v in votes}
        if len(models) < p.min_voters:
            self.last_skip = f"{len(models)} voters < {p.min_voters}"
            return None
        t = tally(votes, {m: self.weight(m) for m in models})
        defensive = self.defensive_reason()
        threshold = p.threshold + (p.defensive_threshold_add if defensive else 0.0)
        if abs(t.score) < threshold or t.score == 0.0:
            mode = f" (defensive: {defensive})" if defensive else ""
            self.last_skip = f"score {t.score:+.3f} below threshold {threshold:.3f}{mode}"
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
        return Decision(
            symbol=symbol,
            side=side,
            score=t.score,
            confidence=t.agreement,
            threshold=threshold,
            defensive=defensive is not None,
            models=t.agreeing,
            price=newest.price,
            bid=newest.bid,
            ask=newest.ask,
            quote_ts_ns=newest.quote_ts_ns,
            quote_recv_ns=newest.quote_recv_ns,
        )
