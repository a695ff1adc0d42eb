"""Risk-based position sizing.

qty = floor(equity * risk_per_trade_pct% / |entry - stop|), so hitting the
stop loses about risk_per_trade_pct of equity; then capped by the room left
under max_position_pct of equity and by buying power. Whole shares; 0 means
do not trade, and `reason` says why.
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
) -> SizeResult:
    """Shares to trade for a position entered at `entry` and stopped at `stop`.

    Percentages are in percent (0.5 = 0.5 %). `existing_exposure` is the
    absolute market value already held in this symbol on the same side; it
    uses up part of the max-position room.
    """
    values = (equity, entry, stop, buying_power, risk_per_trade_pct, max_position_pct, existing_exposure)
    if not all(math.isfinite(v) for v in values):
        return SizeResult(0, "non-finite input")
    if equity <= 0:
        return SizeResult(0, f"equity {equity:.2f} <= 0")
    if entry <= 0:
        return SizeResult(0, f"entry price {entry} <= 0")
    distance = abs(entry - stop)
    if distance <= 0 or stop <= 0:
        return SizeResult(0, f"no stop distance (entry {entry}, stop {stop})")
    by_risk = math.floor(equity * risk_per_trade_pct / 100.0 / distance + _EPS)
    room = equity * max_position_pct / 100.0 - max(existing_exposure, 0.0)
    by_position = math.floor(room / entry + _EPS) if room > 0 else 0
    by_power = math.floor(buying_power / entry + _EPS) if buying_power > 0 else 0
    qty, reason = min(
        (by_risk, f"risk {risk_per_trade_pct:g}% of equity over stop distance {distance:.4f}"),
        (by_position, f"max position {max_position_pct:g}% of equity"),
        (by_power, f"buying power {buying_power:.2f}"),
        key=lambda t: t[0],
    )
    qty = max(int(qty), 0)
    if qty == 0:
        return SizeResult(0, f"size rounds to 0 shares, limited by {reason}")
    return SizeResult(qty, f"limited by {reason}")
