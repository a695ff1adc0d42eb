"""Performance metrics: pure functions of P&L lists, returns and equity curves.

Definitions (the report states which series each is computed on):

- win rate: share of trades with P&L > 0 (a break-even trade is not a win).
- profit factor: gross profit / gross loss; inf when there are wins and no
  losses, None when there is nothing to divide.
- expectancy: mean P&L per trade (money).
- Sharpe: mean / sample standard deviation (ddof 1) of the returns, times
  sqrt(periods per year) when annualised (252 for daily returns; 1, i.e.
  not annualised, for per-trade returns, whose spacing is irregular).
- Sortino: mean / downside deviation, the root mean square of min(r, 0) over
  ALL observations (target 0), annualised like Sharpe; None without a
  losing observation.
- max drawdown: the largest fall of a curve from its running peak, in money
  and as a share of the peak (the share only for a positive peak, e.g. an
  equity curve; a cumulative-P&L curve starts at 0).
- VaR and expected shortfall at level a (0.95), historical: sort the returns,
  take the worst k = ceil((1 - a) * n); VaR is the loss at the k-th worst,
  ES the mean loss over those k. Both are reported as positive losses
  (a negative value means even the tail made money).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import pairwise

import msgspec


def win_rate(pnls: Sequence[float]) -> float | None:
    return sum(1 for p in pnls if p > 0) / len(pnls) if pnls else None


def profit_factor(pnls: Sequence[float]) -> float | None:
    gross_win = sum(p for p in pnls if p > 0)
    gross_loss = -sum(p for p in pnls if p < 0)
    if gross_loss > 0:
        return gross_win / gross_loss
    return math.inf if gross_win > 0 else None


def expectancy(pnls: Sequence[float]) -> float | None:
    return sum(pnls) / len(pnls) if pnls else None


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def sharpe(returns: Sequence[float], periods_per_year: float = 1.0) -> float | None:
    """Mean over sample standard deviation; None with < 2 returns or no spread."""
    if len(returns) < 2:
        return None
    m = _mean(returns)
    var = sum((r - m) ** 2 for r in returns) / (len(returns) - 1)
    if var <= 0:
        return None
    return m / math.sqrt(var) * math.sqrt(periods_per_year)


def sortino(returns: Sequence[float], periods_per_year: float = 1.0) -> float | None:
    """Mean over downside deviation (target 0); None with < 2 returns or no losing one."""
    if len(returns) < 2:
        return None
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / len(returns))
    if downside <= 0:
        return None
    return _mean(returns) / downside * math.sqrt(periods_per_year)


class Drawdown(msgspec.Struct, frozen=True):
    amount: float  # peak minus trough, money
    pct: float | None  # amount / peak * 100 (None when the peak is not positive)


def max_drawdown(curve: Iterable[float]) -> Drawdown | None:
    """Largest peak-to-trough fall of `curve`; None for an empty curve."""
    peak: float | None = None
    worst = 0.0
    worst_pct: float | None = None
    for x in curve:
        if peak is None or x > peak:
            peak = x
        fall = peak - x
        if fall > worst:
            worst = fall
            worst_pct = fall / peak * 100.0 if peak > 0 else None
    if peak is None:
        return None
    if worst == 0.0:
        worst_pct = 0.0 if peak > 0 else None
    return Drawdown(worst, worst_pct)


def cumulative(pnls: Iterable[float], start: float = 0.0) -> list[float]:
    """The running total of `pnls` from `start`, `start` included first."""
    out = [start]
    for p in pnls:
        out.append(out[-1] + p)
    return out


def _tail(returns: Sequence[float], level: float) -> list[float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    k = max(1, math.ceil((1.0 - level) * len(returns) - 1e-9))
    return sorted(returns)[:k]


def value_at_risk(returns: Sequence[float], level: float = 0.95) -> float | None:
    """Historical VaR: the loss at the k-th worst return, k = ceil((1 - level) n)."""
    if not returns:
        return None
    return -_tail(returns, level)[-1]


def expected_shortfall(returns: Sequence[float], level: float = 0.95) -> float | None:
    """Historical ES: the mean loss over the k worst returns."""
    if not returns:
        return None
    tail = _tail(returns, level)
    return -_mean(tail)


def simple_returns(curve: Sequence[float]) -> list[float]:
    """Period returns of a curve of positive values (non-positive bases are skipped)."""
    return [b / a - 1.0 for a, b in pairwise(curve) if a > 0]


class TradeStats(msgspec.Struct, frozen=True, kw_only=True):
    """The report's row for one group of closed trades (per-trade returns)."""

    trades: int
    wins: int
    net_pnl: float
    win_rate: float | None
    profit_factor: float | None
    expectancy: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float | None  # of the cumulative P&L curve, money
    var_95: float | None  # per-trade return
    es_95: float | None


def trade_stats(pnls: Sequence[float], returns: Sequence[float]) -> TradeStats:
    """Stats of closed trades in time order: P&L in money, returns as fractions of the entry value."""
    dd = max_drawdown(cumulative(pnls)) if pnls else None
    return TradeStats(
        trades=len(pnls),
        wins=sum(1 for p in pnls if p > 0),
        net_pnl=sum(pnls),
        win_rate=win_rate(pnls),
        profit_factor=profit_factor(pnls),
        expectancy=expectancy(pnls),
        sharpe=sharpe(returns),
        sortino=sortino(returns),
        max_drawdown=dd.amount if dd else None,
        var_95=value_at_risk(returns),
        es_95=expected_shortfall(returns),
    )
