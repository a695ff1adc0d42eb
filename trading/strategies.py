"""Rule strategies: Features in, Signal out.

Each strategy is a pure function of one `Features` snapshot with its
parameters in a msgspec Struct, so the Analyzer can run it on every quote
(see `features.py` for why per quote). A strategy that lacks a warm input
returns a flat signal (direction 0, confidence 0) saying what it waits for;
it never raises on missing data.

`REGISTRY` maps the names settings use to strategy classes;
`build_strategies(names, params)` builds the configured set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import msgspec

from stockade.config.names import STRATEGY_NAMES, StrategyName
from stockade.trading.features import Features


class Signal(msgspec.Struct, frozen=True):
    """direction in [-1, 1] (+ long, - short), confidence in [0, 1], why."""

    direction: float
    confidence: float
    reason: str

    @classmethod
    def flat(cls, reason: str) -> Signal:
        return cls(0.0, 0.0, reason)


class Strategy(Protocol):
    name: str

    def evaluate(self, f: Features) -> Signal: ...


def _clip01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def _missing(f: Features, *fields: str) -> str | None:
    gone = [name for name in fields if getattr(f, name) is None]
    return f"warming up: {', '.join(gone)}" if gone else None


# ---- momentum ------------------------------------------------------------------


class MomentumParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Trend following: fast EMA vs slow EMA, confirmed by price and by volume.

    Price confirms when the MACD histogram and the 10-bar momentum (price
    against 10 bars ago) point the way of the EMA gap: the move is happening
    now, not only in the lagging averages. Volume confirms when this bar's
    volume is at least `min_volume_ratio` times the average bar's.
    """

    # EMA gap below this many ATRs is noise, not trend.
    min_gap_atr: float = 0.1
    # EMA gap at which the trend part of confidence saturates.
    full_gap_atr: float = 1.0
    # Do not chase: no long at or above this RSI, no short at or below 100 - it.
    rsi_extreme: float = 75.0
    # Volume confirmation: below this ratio the trend has no participation behind it.
    min_volume_ratio: float = 1.0
    # Volume ratio at which the volume part of confidence saturates.
    full_volume_ratio: float = 2.0
    # Share of confidence that rides on volume beyond the minimum (the rest is trend strength).
    volume_weight: float = 0.25


class Momentum:
    name = "momentum"

    def __init__(self, params: MomentumParams | None = None) -> None:
        self.params = params or MomentumParams()

    def evaluate(self, f: Features) -> Signal:
        p = self.params
        wait = _missing(f, "ema_fast", "ema_slow", "macd_hist", "rsi", "atr", "mom_10", "volume_ratio")
        if wait:
            return Signal.flat(wait)
        # _missing checked them; said again for the type checker
        assert f.ema_fast is not None and f.ema_slow is not None and f.macd_hist is not None and f.rsi is not None
        assert f.atr is not None and f.mom_10 is not None and f.volume_ratio is not None
        if f.atr <= 0.0:
            return Signal.flat("no range: ATR is 0")
        gap_atr = (f.ema_fast - f.ema_slow) / f.atr
        if abs(gap_atr) < p.min_gap_atr:
            return Signal.flat(f"no trend: EMA gap {gap_atr:.2f} ATR < {p.min_gap_atr:g}")
        up = gap_atr > 0.0
        # zero is no confirmation either way
        if not (f.macd_hist > 0.0 if up else f.macd_hist < 0.0):
            return Signal.flat(f"MACD histogram {f.macd_hist:+.4f} disagrees with EMA trend")
        if not (f.mom_10 > 0.0 if up else f.mom_10 < 0.0):
            return Signal.flat(f"10-bar momentum {f.mom_10:+.4%} disagrees with EMA trend")
        if up and f.rsi >= p.rsi_extreme:
            return Signal.flat(f"uptrend but RSI {f.rsi:.1f} >= {p.rsi_extreme:g}: overextended")
        if not up and f.rsi <= 100.0 - p.rsi_extreme:
            return Signal.flat(f"downtrend but RSI {f.rsi:.1f} <= {100.0 - p.rsi_extreme:g}: overextended")
        if f.volume_ratio < p.min_volume_ratio:
            return Signal.flat(f"trend without volume: ratio {f.volume_ratio:.2f} < {p.min_volume_ratio:g}")
        span = p.full_volume_ratio - p.min_volume_ratio
        vol_part = _clip01((f.volume_ratio - p.min_volume_ratio) / span) if span > 0 else 1.0
        w = _clip01(p.volume_weight)
        conf = _clip01(abs(gap_atr) / p.full_gap_atr) * (1.0 - w + w * vol_part)
        return Signal(
            1.0 if up else -1.0,
            conf,
            f"{'up' if up else 'down'}trend: EMA gap {gap_atr:+.2f} ATR, MACD hist {f.macd_hist:+.4f}, "
            f"10-bar {f.mom_10:+.2%}, RSI {f.rsi:.1f}, volume ratio {f.volume_ratio:.2f}",
        )


# ---- mean reversion ------------------------------------------------------------


class MeanReversionParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fade a price outside the Bollinger band (%B) when RSI confirms the stretch.

    A stretch on a volume surge is a breakout, not an overreaction: above
    `max_volume_ratio` this strategy stands aside and leaves it to Breakout.
    """

    rsi_overbought: float = 70.0
    rsi_oversold: float = 30.0
    # %B at or beyond which price is stretched: 1 = the upper band, 0 = the lower.
    pct_b_high: float = 1.0
    pct_b_low: float = 0.0
    # Confidence at the threshold; grows with the excess beyond it.
    base_confidence: float = 0.5
    # Excess beyond the threshold, in band half-widths, at which confidence saturates.
    full_excess: float = 0.5
    # Do not fade a move this many times the average bar's volume.
    max_volume_ratio: float = 2.5


class MeanReversion:
    name = "mean_reversion"

    def __init__(self, params: MeanReversionParams | None = None) -> None:
        self.params = params or MeanReversionParams()

    def evaluate(self, f: Features) -> Signal:
        p = self.params
        wait = _missing(f, "bb_upper", "bb_mid", "pct_b", "rsi")
        if wait:
            return Signal.flat(wait)
        # _missing checked them; said again for the type checker
        assert f.bb_upper is not None and f.bb_mid is not None and f.pct_b is not None and f.rsi is not None
        if f.bb_upper - f.bb_mid <= 0.0:
            return Signal.flat("no band: zero variance")
        b = f.pct_b
        if b >= p.pct_b_high:
            if f.rsi < p.rsi_overbought:
                return Signal.flat(f"%B {b:.2f} above the band but RSI {f.rsi:.1f} < {p.rsi_overbought:g}")
            side, d, excess = "short", -1.0, b - p.pct_b_high
        elif b <= p.pct_b_low:
            if f.rsi > p.rsi_oversold:
                return Signal.flat(f"%B {b:.2f} below the band but RSI {f.rsi:.1f} > {p.rsi_oversold:g}")
            side, d, excess = "long", 1.0, p.pct_b_low - b
        else:
            return Signal.flat(f"inside bands (%B {b:.2f})")
        if f.volume_ratio is not None and f.volume_ratio > p.max_volume_ratio:
            return Signal.flat(
                f"stretch on volume ratio {f.volume_ratio:.2f} > {p.max_volume_ratio:g}: a breakout, not fading"
            )
        excess *= 2.0  # %B spans two half-widths between the bands
        conf = _clip01(p.base_confidence + (1.0 - p.base_confidence) * excess / p.full_excess)
        band, at = ("upper", p.pct_b_high) if d < 0 else ("lower", p.pct_b_low)
        return Signal(
            d,
            conf,
            f"fade {side}: %B {b:.2f} past the {band} band threshold {at:g} by {excess:.2f} half-widths, "
            f"RSI {f.rsi:.1f}",
        )


# ---- breakout ------------------------------------------------------------------


class BreakoutParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Price leaving the N-bar range with volume behind it."""

    min_volume_ratio: float = 1.5
    full_volume_ratio: float = 3.0
    # Distance beyond the range, in ATRs, at which that part of confidence saturates.
    full_distance_atr: float = 1.0


class Breakout:
    name = "breakout"

    def __init__(self, params: BreakoutParams | None = None) -> None:
        self.params = params or BreakoutParams()

    def evaluate(self, f: Features) -> Signal:
        p = self.params
        wait = _missing(f, "high_n", "low_n", "volume_ratio", "atr")
        if wait:
            return Signal.flat(wait)
        # _missing checked them; said again for the type checker
        assert f.high_n is not None and f.low_n is not None and f.volume_ratio is not None and f.atr is not None
        if f.price > f.high_n:
            d, dist, level = 1.0, f.price - f.high_n, f"above {f.high_n:.4f} high"
        elif f.price < f.low_n:
            d, dist, level = -1.0, f.low_n - f.price, f"below {f.low_n:.4f} low"
        else:
            return Signal.flat("inside the N-bar range")
        if f.volume_ratio < p.min_volume_ratio:
            return Signal.flat(f"break {level} without volume: ratio {f.volume_ratio:.2f} < {p.min_volume_ratio:g}")
        dist_atr = dist / f.atr if f.atr > 0 else 1.0
        span = p.full_volume_ratio - p.min_volume_ratio
        vol_part = _clip01((f.volume_ratio - p.min_volume_ratio) / span) if span > 0 else 1.0
        conf = 0.5 + 0.25 * _clip01(dist_atr / p.full_distance_atr) + 0.25 * vol_part
        return Signal(d, conf, f"breakout {level} by {dist_atr:.2f} ATR, volume ratio {f.volume_ratio:.2f}")


# ---- registry ------------------------------------------------------------------

# Keyed by the names config defines (config/names.py), which `[analyzer] strategies` is checked against.
REGISTRY: Mapping[StrategyName, tuple[Callable[..., Strategy], type[msgspec.Struct]]] = {
    "momentum": (Momentum, MomentumParams),
    "mean_reversion": (MeanReversion, MeanReversionParams),
    "breakout": (Breakout, BreakoutParams),
}
if set(REGISTRY) != set(STRATEGY_NAMES):  # a strategy added here must be named in config too, and back
    raise ImportError(f"strategy registry {sorted(REGISTRY)} != config.names.STRATEGY_NAMES {sorted(STRATEGY_NAMES)}")


def strategy_names() -> list[str]:
    return sorted(REGISTRY)


def build_strategies(
    names: Sequence[str], params: Mapping[str, Mapping[str, Any] | msgspec.Struct] | None = None
) -> list[Strategy]:
    """Build the named strategies; `params[name]` may be a params Struct or a dict of overrides.

    Unknown names or bad parameter values raise ValueError naming them.
    """
    out: list[Strategy] = []
    params = params or {}
    for name in names:
        if name not in REGISTRY:
            raise ValueError(f"unknown strategy {name!r}; known: {', '.join(strategy_names())}")
        cls, params_cls = REGISTRY[cast(StrategyName, name)]
        given = params.get(name)
        if given is None or isinstance(given, params_cls):
            out.append(cls(given))
            continue
        try:
            # A Struct of another class is not a Mapping: dict() raises TypeError, reported below.
            out.append(cls(msgspec.convert(dict(cast(Mapping[str, Any], given)), params_cls)))
        except (msgspec.ValidationError, TypeError) as e:
            raise ValueError(f"strategy {name!r} parameters: {e}") from None
    return out
