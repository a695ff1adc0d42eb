"""The parameter structs of the trading components that `[analyzer]`,
`[voter]` and `[risk]` configure.

Config is the bottom layer, so the structs live here, beside the settings
sections that build them (config/settings.py: `AnalyzerSettings.to_params()`
and `.regime_params()`, `VoterSettings.to_params()`, `RiskSettings.to_params()`
and `.bracket_params()`), and trading/ imports them downward. Field names are
the settings keys wherever a field is a setting; the rest (a component's own
fixed choices) keep their defaults.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# Momentum look-backs, in bars, behind Features.mom_1 / mom_5 / mom_10.
MOMENTUM_BARS = (1, 5, 10)


class FeatureParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Indicator periods for one symbol's features."""

    sma_fast: int = 10
    sma_slow: int = 30
    ema_fast: int = 12
    ema_slow: int = 26
    rsi: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bb_period: int = 20
    bb_k: float = 2.0
    # Named as in [analyzer]; manifest.json (trading/model_store.py) keeps the older names.
    volume_n: int = msgspec.field(default=20, name="volume_period")
    atr: int = 14
    breakout_n: int = msgspec.field(default=20, name="breakout_period")
    bar_seconds: int = 60
    # One-bar log returns in the rolling volatility.
    vol_period: int = 20
    # One-bar log returns in Features.returns.
    return_window: int = 10

    @property
    def warmup_bars(self) -> int:
        """Closed bars after which every field of `Features` is set.

        The single source of truth for warm-up: settings validation (config/settings.py)
        and the analyzer's history request both use it. A term per indicator, each
        the bar count at which that indicator first reports.
        """
        return max(
            self.sma_fast,
            self.sma_slow,
            self.ema_fast,
            self.ema_slow,
            self.rsi + 1,  # n price changes
            self.macd_slow + self.macd_signal - 1,  # MACD.warmup
            self.bb_period,
            self.volume_n + 1,  # baseline is the n bars before
            self.atr,
            self.breakout_n,
            self.vol_period + 1,  # n returns
            max(MOMENTUM_BARS) + 1,
            self.return_window + 1,  # n returns
        )


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every risk parameter; defaults suit a $100k paper account trading liquid names."""

    respect_market_hours: bool = True
    max_quote_age_s: float = 5.0
    max_spread_bps: float = 25.0
    min_price: float = 1.0  # sub-dollar names: sub-penny ticks, wide spreads
    max_price: float = 5_000.0
    risk_per_trade_pct: float = 0.5  # equity lost if the stop is hit
    max_position_pct: float = 10.0  # one symbol's market value vs equity
    max_gross_exposure_pct: float = 100.0  # all positions' |market value| vs equity: no leverage
    max_positions: int = 10
    daily_loss_limit_pct: float = 2.0
    allow_short: bool = True
    circuit_breaker_failures: int = 3  # order errors/rejections in a row
    cb_max_losses: int = 3  # losing trades ...
    cb_loss_window_s: float = 1800.0  # ... within this window
    circuit_breaker_cooloff_s: float = 900.0
    day_trade_budget: int = 0  # self-imposed: most day trades in the window; 0: off
    day_trade_window_days: int = 5  # exchange sessions the budget covers, today included
    day_trade_budget_below_equity: float = 0.0  # the budget applies below this equity only; 0: always
    max_orders_per_min: int = 30
    loss_breaker_pct: float = 5.0  # loss from start-of-day equity that liquidates everything
    max_sector_pct: float = 100.0
    sectors: dict[str, str] = msgspec.field(default_factory=dict)  # symbol -> sector
    max_portfolio_risk_pct: float = 100.0  # equity lost if every stop were hit
    stop_loss_pct: float = 2.0  # a position's risk when no resting stop is known
    confidence_floor: float = 1.0  # 1.0: confidence does not scale the size
    target_volatility_pct: float = 0.0  # 0: volatility does not scale the size
    flatten_before_close_min: float = 0.0  # 0: off
    extended_hours: bool = False  # trade the pre-market and after-hours sessions (limit orders, no brackets)
    extended_limit_slippage_bps: float = 10.0  # extended-hours limit: ask + this to buy, bid - this to sell


class EnsembleParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Ensemble thresholds, weight learning and cool-down."""

    threshold: float = 0.05  # |score| needed to propose
    min_confidence: float = 0.65  # confidence (see module docstring) needed to propose
    min_agreement: float = 0.6  # share of weighted conviction on the winning side
    min_voters: int = 1  # distinct models that must have voted
    weights: dict[str, float] = {}  # static multipliers; absent models = 1.0
    prior_hits: float = 2.0  # Beta prior alpha
    prior_misses: float = 2.0  # Beta prior beta
    decay: float = 0.98  # per outcome; effective memory ~ 1/(1-decay) outcomes
    min_weight: float = 0.05  # no model's learned weight falls below this
    defensive_min_outcomes: float = 20.0  # decayed pooled outcomes before hit rate counts
    defensive_hit_rate: float = 0.45  # pooled hit rate below this -> defensive
    defensive_drawdown_pct: float = 3.0  # equity this % below its peak -> defensive
    defensive_threshold_add: float = 0.15
    defensive_confidence_add: float = 0.1  # min_confidence rises by this when defensive
    defensive_size_scale: float = 0.5  # Proposal.size_scale when defensive
    cooldown_s: float = 60.0  # min seconds between proposals for one symbol
    # An in-flight mark expires: the answer (fill, rejection) can be lost with
    # a crashed actor, and a symbol must not stay blocked forever.
    in_flight_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {self.decay!r}")
        if self.prior_hits <= 0 or self.prior_misses <= 0:
            raise ValueError("Beta prior counts must be positive")
        if not 0.0 < self.min_weight <= 1.0:
            raise ValueError(f"min_weight must be in (0, 1], got {self.min_weight!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence!r}")
        if not 0.0 < self.defensive_size_scale <= 1.0:
            raise ValueError(f"defensive_size_scale must be in (0, 1], got {self.defensive_size_scale!r}")


class RegimeParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of the high-volatility regime (trading/regime.py), in percent (0.4 = 0.4%)."""

    high_vol_bar_pct: float = 0.4  # per-bar volatility
    high_vol_atr_pct: float = 0.6  # ATR / price
    high_vol_drop_pct: float = 3.0  # below the N-bar high

    def __post_init__(self) -> None:
        for name in ("high_vol_bar_pct", "high_vol_atr_pct", "high_vol_drop_pct"):
            value = getattr(self, name)
            if not value > 0.0:
                raise ValueError(f"regime {name} must be > 0, got {value!r}")


class BracketParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How far the protective legs sit from the entry."""

    method: Literal["atr", "percent"] = "atr"
    stop_atr: float = 2.0
    take_profit_atr: float = 3.0
    stop_loss_pct: float = 1.0  # percent; also the fallback when ATR is unknown
    take_profit_pct: float = 2.0
