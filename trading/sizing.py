"""Risk-based position sizing.

qty = floor(equity * risk_per_trade_pct% * scale / |entry - stop|), so
hitting the stop loses about risk_per_trade_pct (times the scale) of
equity; then capped by the room left under max_position_pct of equity, by
buying power and by any further caps the caller passes (sector room,
portfolio risk room). `scale` is the product of the confidence, volatility
and regime scales below. Whole shares; 0 means do not trade, and `reason`
says why.
"""

from __future__ import annotations

import math

import msgspec

# floor() of a product that should be an integer can land just below it
# (100000 * 0.01 / 0.1 = 9999.999...); this nudge keeps such cases whole.
_EPS = 1e-9


class SizeResult(msgspec.Struct, frozen=True):
    qty: int
    reason: str  # which limit set the size, or why it is 0


def position_size(
    *,
    equity: float,
    entry: float,
    stop: float,
    buying_power: float,
    risk_per_trade_pct: float,
    max_position_pct: float,
    existing_exposure: float = 0.0,
    scale: float = 1.0,
    sector_room: float | None = None,
    risk_room: float | None = None,
) -> SizeResult:
    """Shares to trade for a position entered at `entry` and stopped at `stop`.

    Percentages are in percent (0.5 = 0.5 %). `existing_exposure` is the
    absolute market value already held in this symbol on the same side; it
    uses up part of the max-position room. `sector_room` is the market value
    the symbol's sector may still add; `risk_room` the loss at the stops the
    portfolio may still add (both USD, None: no such cap).
    """
    values = (equity, entry, stop, buying_power, risk_per_trade_pct, max_position_pct, existing_exposure, scale)
    if not all(math.isfinite(v) for v in values):
        return SizeResult(0, "non-finite input")
    if equity <= 0:
        return SizeResult(0, f"equity {equity:.2f} <= 0")
    if entry <= 0:
        return SizeResult(0, f"entry price {entry} <= 0")
    distance = abs(entry - stop)
    if distance <= 0 or stop <= 0:
        return SizeResult(0, f"no stop distance (entry {entry}, stop {stop})")
    scale = min(max(scale, 0.0), 1.0)
    by_risk = math.floor(equity * risk_per_trade_pct / 100.0 * scale / distance + _EPS)
    room = equity * max_position_pct / 100.0 - max(existing_exposure, 0.0)
    candidates = [
        (by_risk, f"risk {risk_per_trade_pct:g}% of equity x scale {scale:.2f} over stop distance {distance:.4f}"),
        (_shares(room, entry), f"max position {max_position_pct:g}% of equity"),
        (_shares(buying_power, entry), f"buying power {buying_power:.2f}"),
    ]
    if sector_room is not None:
        candidates.append((_shares(sector_room, entry), f"sector room {sector_room:.2f}"))
    if risk_room is not None:
        candidates.append((_shares(risk_room, distance), f"portfolio risk room {risk_room:.2f}"))
    qty, reason = min(candidates, key=lambda t: t[0])
    qty = max(int(qty), 0)
    if qty == 0:
        return SizeResult(0, f"size rounds to 0 shares, limited by {reason}")
    return SizeResult(qty, f"limited by {reason}")


def _shares(money: float, per_share: float) -> int:
    """Whole shares `money` pays for at `per_share` (0 when there is no room)."""
    return math.floor(money / per_share + _EPS) if money > 0 and math.isfinite(money) else 0


def confidence_scale(confidence: float, floor: float) -> float:
    """Size multiplier: `floor` at confidence 0, rising linearly to 1 at confidence 1."""
    c = min(max(confidence, 0.0), 1.0) if math.isfinite(confidence) else 0.0
    return floor + (1.0 - floor) * c


def volatility_scale(atr: float | None, price: float, target_pct: float) -> float:
    """min(1, target / ATR%): a symbol moving more than the target gets proportionally less.

    1.0 when the target is off (0) or the ATR is unknown.
    """
    if target_pct <= 0 or atr is None or not math.isfinite(atr) or atr <= 0 or price <= 0:
        return 1.0
    return min(1.0, target_pct / (atr / price * 100.0))
