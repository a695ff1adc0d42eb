"""Volatility regime of one symbol, from its Features. Pure.

The analyzer classifies every evaluated snapshot and sends the result with
its votes (`Vote.high_volatility`); the ensemble voter then turns
defensive: a higher score threshold and a smaller size (`Proposal.size_scale`).

"High volatility" means any one of these is at or above its threshold:
- per-bar volatility: the sample std of the last `vol_period` one-bar log
  returns (`Features.volatility`) against `high_vol_bar_pct`. 1-minute bars of
  a large US stock with 2% daily volatility move about 0.1% a bar
  (2% / sqrt(390)); the 0.4% default is four times that;
- range: ATR / price against `high_vol_atr_pct`. The true range includes the
  bar's wicks, so it runs higher than the close-to-close std; 0.6% default;
- a sharp drop: price at least `high_vol_drop_pct` below the highest high of the
  last N closed bars (`Features.high_n`), 3% by default. A fast drop is
  realised downside volatility that the averages above only show with a lag.

Each input is used only when it is warm; before any is, the regime is
normal with a "warming up" reason. The account's own drawdown is a risk
matter (the risk rules and the voter see the equity), not a property of one
symbol, so it is not judged here.
"""

from __future__ import annotations

import msgspec

from stockade.config.params import RegimeParams
from stockade.trading.features import Features


class Regime(msgspec.Struct, frozen=True):
    """high_volatility: turn defensive. stress: the largest measure/threshold ratio
    (>= 1 exactly when high_volatility; 0 when nothing is warm). reason: why."""

    high_volatility: bool
    reason: str
    stress: float = 0.0


_DEFAULT = RegimeParams()


def classify(f: Features, params: RegimeParams | None = None) -> Regime:
    """The regime of one snapshot (see the module docstring for the rules); default thresholds if no params."""
    p = params or _DEFAULT
    # (ratio to threshold, which); the reason text is built for the winner only
    # because this runs on every evaluation.
    best: tuple[float, str] | None = None
    if f.volatility is not None:
        best = (f.volatility / (p.high_vol_bar_pct / 100), "vol")
    if f.atr is not None and f.price > 0.0:
        r = f.atr / f.price / (p.high_vol_atr_pct / 100)
        if best is None or r > best[0]:
            best = (r, "atr")
    if f.high_n is not None and f.high_n > 0.0 and f.price < f.high_n:
        r = (f.high_n - f.price) / f.high_n / (p.high_vol_drop_pct / 100)
        if best is None or r > best[0]:
            best = (r, "drop")
    if best is None:
        return Regime(False, "warming up: no volatility, ATR or range yet")
    stress, which = best
    # `which` names a feature that was set (the type checker is told so).
    if which == "vol":
        why = f"volatility {f.volatility:.4%}/bar vs {p.high_vol_bar_pct / 100:.4%}"
    elif which == "atr":
        assert f.atr is not None
        why = f"ATR {f.atr / f.price:.4%} of price vs {p.high_vol_atr_pct / 100:.4%}"
    else:
        assert f.high_n is not None
        why = f"{(f.high_n - f.price) / f.high_n:.2%} below the {f.high_n:.4f} high vs {p.high_vol_drop_pct / 100:.2%}"
    if stress >= 1.0:
        return Regime(True, f"high volatility: {why}", stress)
    return Regime(False, f"normal: {why}", stress)
