"""Bracket prices (stop-loss, take-profit) and venue tick rounding.

Alpaca accepts prices in $0.01 steps at or above $1.00 and $0.0001 below.
Exit prices round *away* from the entry (a buy's stop rounds down, its
take-profit up; the reverse for a sell) so rounding never tightens a stop
past what sizing assumed, and each exit is at least one tick from the entry
as Alpaca requires of bracket legs.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from stockade.config.params import BracketParams

Rounding = Literal["nearest", "down", "up"]
Side = Literal["buy", "sell"]

# Prices like 10.07 are 1006.9999999... ticks in binary floating point.
_EPS = 1e-7


def tick_size(price: float) -> float:
    return 0.01 if price >= 1.0 else 0.0001


def round_price(p: float, direction: Rounding = "nearest") -> float:
    """`p` rounded to the venue tick, nearest (half up), down or up."""
    if not math.isfinite(p) or p <= 0:
        raise ValueError(f"price must be positive and finite, got {p!r}")
    tick = tick_size(p)
    decimals = 2 if tick == 0.01 else 4
    ticks = p / tick
    if direction == "down":
        n = math.floor(ticks + _EPS)
    elif direction == "up":
        n = math.ceil(ticks - _EPS)
    elif direction == "nearest":
        n = math.floor(ticks + 0.5 + _EPS)
    else:
        raise ValueError(f"direction must be nearest, down or up, got {direction!r}")
    # $1.00 is on both grids, so results crossing it stay valid.
    return round(n * tick, decimals)


class Bracket(msgspec.Struct, frozen=True):
    entry: float
    stop_loss: float
    take_profit: float
    method: str  # what set the distances ("atr" or "percent")


def bracket_prices(side: Side, entry: float, atr: float | None = None, params: BracketParams | None = None) -> Bracket:
    """Stop-loss and take-profit for an entry at `entry`, rounded to ticks.

    Uses ATR multiples when `method == "atr"` and a positive ATR is given,
    else percentages of the entry.
    """
    p = params or BracketParams()
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be buy or sell, got {side!r}")
    if not math.isfinite(entry) or entry <= 0:
        raise ValueError(f"entry must be positive and finite, got {entry!r}")
    if p.method == "atr" and atr is not None and math.isfinite(atr) and atr > 0:
        stop_d, tp_d, method = p.stop_atr * atr, p.take_profit_atr * atr, "atr"
    else:
        stop_d, tp_d, method = entry * p.stop_loss_pct / 100.0, entry * p.take_profit_pct / 100.0, "percent"
    tick = tick_size(entry)
    if side == "buy":
        # a stop at or below 0 is meaningless: keep it at the smallest tick
        stop = round_price(max(min(entry - stop_d, entry - tick), 0.0001), "down")
        take = round_price(max(entry + tp_d, entry + tick), "up")
    else:
        stop = round_price(max(entry + stop_d, entry + tick), "up")
        take = round_price(max(min(entry - tp_d, entry - tick), 0.0001), "down")
    return Bracket(entry, stop, take, method)
