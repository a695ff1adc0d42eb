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

from typing import Any, Callable, Mapping, Protocol, Sequence

import msgspec

from stockade.quant.features import Features


class Signal(msgspec.Struct, frozen=True):
    """direction in [-1, 1] (+ long, - short), confidence in [0, 1], why."""

    direction: float
    confidence: float
    reason: str

    @classmethod
    def flat(cls, reason: str) -> "Signal":
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
    """Trend following: fast EMA vs slow EMA, confirmed by the MACD histogram."""

    # EMA gap below this many ATRs is noise, not trend.
    min_gap_atr: float = 0.1
    # EMA gap at which confidence saturates.
    full_gap_atr: float = 1.0
    # Do not chase: no long at or above this RSI, no short at or below 100 - it.
    rsi_extreme: float = 75.0


class Momentum:
    name = "momentum"

    def __init__(self, params: MomentumParams | None = None) -> None:
        self.params = params or MomentumParams()

    def evaluate(self, f: Features) -> Signal:
        p = self.params
        wait = _missing(f, "ema_fast", "ema_slow", "macd_hist", "rsi", "atr")
        if wait:
            return Signal.flat(wait)
        if f.atr <= 0.0:
            return Signal.flat("no range: ATR is 0")
        gap_atr = (f.ema_fast - f.ema_slow) / f.atr
        if abs(gap_atr) < p.min_gap_atr:
            return Signal.flat(f"no trend: EMA gap {gap_atr:.2f} ATR < {p.min_gap_atr:g}")
        up = gap_atr > 0.0
        if (f.macd_hist > 0.0) != up:
            return Signal.flat(f"MACD histogram {f.macd_hist:+.4f} disagrees with EMA trend")
        if up and f.rsi >= p.rsi_extreme:
            return Signal.flat(f"uptrend but RSI {f.rsi:.1f} >= {p.rsi_extreme:g}: overextended")
        if not up and f.rsi <= 100.0 - p.rsi_extreme:
            return Signal.flat(f"downtrend but RSI {f.rsi:.1f} <= {100.0 - p.rsi_extreme:g}: overextended")
        conf = _clip01(abs(gap_atr) / p.full_gap_atr)
        return Signal(
            1.0 if up else -1.0,
            conf,
            f"{'up' if up else 'down'}trend: EMA gap {gap_atr:+.2f} ATR, MACD hist {f.macd_hist:+.4f}, RSI {f.rsi:.1f}",
        )


# ---- mean reversion ------------------------------------------------------------


class MeanReversionParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fade a close outside the Bollinger band when RSI confirms the stretch."""

    rsi_overbought: float = 70.0
    rsi_oversold: float = 30.0
    # Confidence at the band; grows with the excess beyond it.
    base_confidence: float = 0.5
    # Excess beyond the band, in band half-widths, at which confidence saturates.
    full_excess: float = 0.5


class MeanReversion:
    name = "mean_reversion"

    def __init__(self, params: MeanReversionParams | None = None) -> None:
        self.params = params or MeanReversionParams()

    def evaluate(self, f: Features) -> Signal:
        p = self.params
        wait = _missing(f, "bb_upper", "bb_mid", "bb_lower", "rsi")
        if wait:
            return Signal.flat(wait)
        half = f.bb_upper - f.bb_mid
        if half <= 0.0:
            return Signal.flat("no band: zero variance")
        z = (f.price - f.bb_mid) / half  # +-1 at the bands
        if z > 1.0:
            if f.rsi < p.rsi_overbought:
                return Signal.flat(f"above upper band but RSI {f.rsi:.1f} < {p.rsi_overbought:g}")
            side, d = "short", -1.0
        elif z < -1.0:
            if f.rsi > p.rsi_oversold:
                return Signal.flat(f"below lower band but RSI {f.rsi:.1f} > {p.rsi_oversold:g}")
            side, d = "long", 1.0
        else:
            return Signal.flat(f"inside bands ({z:+.2f})")
        excess = abs(z) - 1.0
        conf = _clip01(p.base_confidence + (1.0 - p.base_confidence) * excess / p.full_excess)
        band = "upper" if d < 0 else "lower"
        return Signal(d, conf, f"fade {side}: price {f.price:.4f} beyond {band} band by {excess:.2f} half-widths, RSI {f.rsi:.1f}")


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

REGISTRY: Mapping[str, tuple[Callable[..., Strategy], type[msgspec.Struct]]] = {
    "momentum": (Momentum, MomentumParams),
    "mean_reversion": (MeanReversion, MeanReversionParams),
    "breakout": (Breakout, BreakoutParams),
}


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
        cls, params_cls = REGISTRY[name]
        given = params.get(name)
        if given is None or isinstance(given, params_cls):
            out.append(cls(given))
            continue
        try:
            out.append(cls(msgspec.convert(dict(given), params_cls)))
        except (msgspec.ValidationError, TypeError) as e:
            raise ValueError(f"strategy {name!r} parameters: {e}") from None
    return out
