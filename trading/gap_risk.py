"""Overnight gap risk: how far a held symbol opened from its previous close. Pure."""

from __future__ import annotations

from typing import Literal

GapClass = Literal["LOW", "MODERATE", "HIGH", "EXTREME"]


def gap_pct(previous_close: float, first_price: float) -> float:
    """The gap in percent of the previous close (negative: opened lower)."""
    if previous_close <= 0:
        raise ValueError(f"previous close must be > 0, got {previous_close!r}")
    return (first_price - previous_close) / previous_close * 100.0


def gap_class(pct: float, moderate: float, high: float, extreme: float) -> GapClass:
    """LOW below `moderate`, MODERATE below `high`, HIGH up to `extreme`, EXTREME above (by size)."""
    size = abs(pct)
    if size > extreme:
        return "EXTREME"
    if size > high:
        return "HIGH"
    if size >= moderate:
        return "MODERATE"
    return "LOW"
