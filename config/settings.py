"""Settings: every tunable of stockade, validated once at start.

Each `[section]` of settings.toml is a frozen msgspec Struct below; the
defaults here are the shipped values (the repo's settings.toml loads to
exactly `Settings()`, a test holds that). A settings file may be partial:
missing keys and sections take their defaults. An unknown key is an error,
because a typo in a risk limit must not silently leave the default in force.

A bad value raises `SettingsError` with one line naming the key path and the
value, e.g. ``settings: risk.max_position_pct = -5: must be > 0 and <= 100``;
run.py turns it into exit status 2. Each section checks its own keys in
`__post_init__` (so one built in code obeys the same rules); the rules
between sections are `Settings.__post_init__`. A section whose component runs
on a parameter struct builds it beside it, in `to_params()` (or
`regime_params()` / `bracket_params()` where one section feeds two), with the
same field names (config/params.py).

Secrets are never settings: see `stockade.config.secrets`.
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

import msgspec

from stockade.config.checks import SettingsError, at_least, fail, non_negative, pct, positive, ratio, url
from stockade.config.checks import fmt as _fmt
from stockade.config.names import STRATEGY_NAMES, AlertLevel
from stockade.config.params import BracketParams, EnsembleParams, FeatureParams, RegimeParams, RiskLimits

PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
LIVE_TRADING_URL = "https://api.alpaca.markets"
DEFAULT_DATA_URL = "https://data.alpaca.markets"


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class VenueSettings(_Section, frozen=True):
    mode: Literal["auto", "embedded", "alpaca"] = "auto"
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 4
    quote_rate_hz: float = 4.0
    quote_arrivals: Literal["lockstep", "staggered", "poisson"] = "lockstep"
    clock: Literal["always_open", "nyse"] = "always_open"
    initial_cash: float = 100_000.0

    def __post_init__(self) -> None:
        if not self.host:
            fail("venue.host", self.host, "must not be empty")
        if not 0 <= self.port <= 65535:
            fail("venue.port", self.port, "must be between 0 and 65535 (0: a free port)")
        positive("venue.quote_rate_hz", self.quote_rate_hz)
        positive("venue.initial_cash", self.initial_cash)


class BacktestSettings(_Section, frozen=True):
    slippage_bps: float = 1.0
    commission_per_share: float = 0.0
    bar_spread_bps: float = 2.0
    quote_size: int = 10_000

    def __post_init__(self) -> None:
        non_negative("backtest.slippage_bps", self.slippage_bps)
        non_negative("backtest.commission_per_share", self.commission_per_share)
        non_negative("backtest.bar_spread_bps", self.bar_spread_bps)
        at_least("backtest.quote_size", self.quote_size, 1)


class AlpacaSettings(_Section, frozen=True):
    paper: bool = True
    allow_live: bool = False
    trading_url: str = ""
    data_url: str = DEFAULT_DATA_URL
    stream_url: str = ""
    trading_stream_url: str = ""
    feed: Literal["iex", "sip", "test"] = "iex"

    @property
    def live(self) -> bool:
        """True only when both switches say so (validated at load)."""
        return (not self.paper) and self.allow_live

    # Endpoints are resolved in one place: stockade.broker.rest.endpoints_for.

    def __post_init__(self) -> None:
        if not self.paper and not self.allow_live:
            fail("alpaca.paper", self.paper, "live trading also needs alpaca.allow_live = true")
        url("alpaca.trading_url", self.trading_url, ("https", "http"))
        url("alpaca.data_url", self.data_url, ("https", "http"), allow_empty=False)
        url("alpaca.stream_url", self.stream_url, ("wss", "ws"))
        url("alpaca.trading_stream_url", self.trading_stream_url, ("wss", "ws"))
        live_host, paper_host = urlsplit(LIVE_TRADING_URL).hostname, urlsplit(PAPER_TRADING_URL).hostname
        trading_host = urlsplit(self.trading_url).hostname if self.trading_url else None
        if self.paper and trading_host == live_host:
            fail("alpaca.trading_url", self.trading_url, "is the live endpoint but alpaca.paper = true")
        if self.live and trading_host == paper_host:
            fail(
                "alpaca.trading_url",
                self.trading_url,
                "is the paper endpoint but live trading is on (alpaca.paper = false)",
            )
        stream_host = urlsplit(self.trading_stream_url).hostname
        if self.paper and stream_host == live_host:
            fail("alpaca.trading_stream_url", self.trading_stream_url, "is the live endpoint but alpaca.paper = true")
        if self.live and stream_host == paper_host:
            fail(
                "alpaca.trading_stream_url",
                self.trading_stream_url,
                "is the paper endpoint but live trading is on (alpaca.paper = false)",
            )


class TradingSettings(_Section, frozen=True):
    symbols: tuple[str, ...] = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")
    warmup_bars: int = 120

    def __post_init__(self) -> None:
        if not self.symbols:
            fail("trading.symbols", self.symbols, "must list at least one symbol")
        for sym in self.symbols:
            if not re.fullmatch(r"[A-Z][A-Z0-9.]{0,9}", sym):
                fail("trading.symbols", self.symbols, f"{sym!r} is not an upper-case ticker")
        if len(set(self.symbols)) != len(self.symbols):
            fail("trading.symbols", self.symbols, "lists a symbol twice")
        at_least("trading.warmup_bars", self.warmup_bars, 0)


class AnalyzerSettings(_Section, frozen=True):
    strategies: tuple[str, ...] = STRATEGY_NAMES
    evaluate_every_s: float = 1.0
    sma_fast: int = 10
    sma_slow: int = 30
    ema_fast: int = 12
    ema_slow: int = 26
    macd_signal: int = 9
    rsi: int = 14
    rsi_oversold: float = 30.0
    rsi_overbought: float = 70.0
    bb_period: int = 20
    bb_k: float = 2.0
    breakout_n: int = 20
    volume_n: int = 20
    # High-volatility regime (trading/regime.py), in percent.
    high_vol_bar_pct: float = 0.4
    high_vol_atr_pct: float = 0.6
    high_vol_drop_pct: float = 3.0

    def __post_init__(self) -> None:
        for name in self.strategies:
            if name not in STRATEGY_NAMES:
                fail(
                    "analyzer.strategies",
                    self.strategies,
                    f"unknown strategy {name!r} (known: {', '.join(STRATEGY_NAMES)})",
                )
        positive("analyzer.evaluate_every_s", self.evaluate_every_s)
        for key in (
            "sma_fast",
            "sma_slow",
            "ema_fast",
            "ema_slow",
            "macd_signal",
            "rsi",
            "bb_period",
            "breakout_n",
            "volume_n",
        ):
            at_least(f"analyzer.{key}", getattr(self, key), 2)
        if self.sma_fast >= self.sma_slow:
            fail("analyzer.sma_fast", self.sma_fast, f"must be < analyzer.sma_slow ({self.sma_slow})")
        if self.ema_fast >= self.ema_slow:
            fail("analyzer.ema_fast", self.ema_fast, f"must be < analyzer.ema_slow ({self.ema_slow})")
        if not 0 < self.rsi_oversold < self.rsi_overbought < 100:
            fail("analyzer.rsi_oversold", self.rsi_oversold, "must satisfy 0 < rsi_oversold < rsi_overbought < 100")
        positive("analyzer.bb_k", self.bb_k)
        for key in ("high_vol_bar_pct", "high_vol_atr_pct", "high_vol_drop_pct"):
            value = getattr(self, key)
            if not 0 < value < 100:
                fail(f"analyzer.{key}", value, "must be > 0 and < 100 (percent)")

    def to_params(self) -> FeatureParams:
        """The indicator periods the analyzer computes (and `train` builds rows with).

        MACD runs on the EMA periods; the other fields of FeatureParams that
        are not settings keep their defaults.
        """
        return FeatureParams(**_shared(self, FeatureParams), macd_fast=self.ema_fast, macd_slow=self.ema_slow)

    def regime_params(self) -> RegimeParams:
        """The high-volatility regime's thresholds (trading/regime.py): the high_vol_* keys."""
        return RegimeParams(**_shared(self, RegimeParams))


class VoterSettings(_Section, frozen=True):
    mode: Literal["auto", "manual", "hybrid"] = "auto"
    threshold: float = 0.05
    min_confidence: float = 0.65
    hybrid_auto_confidence: float = 0.8
    weights: dict[str, float] = msgspec.field(default_factory=lambda: dict.fromkeys(STRATEGY_NAMES, 1.0))
    adaptive: bool = True
    adaptive_window: int = 50
    min_weight: float = 0.1
    score_horizon_s: float = 60.0
    score_dead_band_bps: float = 2.0
    defensive_threshold_add: float = 0.1
    defensive_confidence_add: float = 0.1
    defensive_size_scale: float = 0.5
    defensive_drawdown_pct: float = 3.0
    defensive_hit_rate: float = 0.45
    cooldown_s: float = 60.0
    approval_timeout_s: float = 300.0
    in_flight_timeout_s: float = 120.0

    def weight_of(self, model: str) -> float:
        """A model missing from `weights` (e.g. a newly trained one) weighs 1.0."""
        return self.weights.get(model, 1.0)

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            fail("voter.threshold", self.threshold, "must be > 0 and <= 1")
        ratio("voter.min_confidence", self.min_confidence)
        if not self.min_confidence <= self.hybrid_auto_confidence <= 1:
            fail(
                "voter.hybrid_auto_confidence",
                self.hybrid_auto_confidence,
                "must be >= voter.min_confidence and <= 1",
            )
        for model, w in self.weights.items():
            if not (w >= 0 and math.isfinite(w)):
                fail(f"voter.weights.{model}", w, "must be >= 0")
        at_least("voter.adaptive_window", self.adaptive_window, 1)
        ratio("voter.min_weight", self.min_weight)
        positive("voter.min_weight", self.min_weight)  # a zero floor could silence a model for good
        non_negative("voter.cooldown_s", self.cooldown_s)
        positive("voter.approval_timeout_s", self.approval_timeout_s)
        positive("voter.in_flight_timeout_s", self.in_flight_timeout_s)
        positive("voter.score_horizon_s", self.score_horizon_s)
        non_negative("voter.score_dead_band_bps", self.score_dead_band_bps)
        non_negative("voter.defensive_threshold_add", self.defensive_threshold_add)
        ratio("voter.defensive_confidence_add", self.defensive_confidence_add)
        ratio("voter.defensive_size_scale", self.defensive_size_scale)
        positive("voter.defensive_size_scale", self.defensive_size_scale)
        pct("voter.defensive_drawdown_pct", self.defensive_drawdown_pct)
        ratio("voter.defensive_hit_rate", self.defensive_hit_rate)

    def to_params(self) -> EnsembleParams:
        """The ensemble's parameters (trading/voting.py)."""
        # Outcomes decay so that the last ~adaptive_window of them carry the weight.
        decay = 1.0 - 1.0 / self.adaptive_window if self.adaptive_window > 1 else 1.0
        return EnsembleParams(**_shared(self, EnsembleParams), decay=decay)


class RiskSettings(_Section, frozen=True):
    # A named preset (RISK_PROFILES) under the keys a settings file sets itself;
    # the loader applies it (a RiskSettings built in code takes its values as given).
    profile: str = "default"
    max_position_pct: float = 10.0
    max_positions: int = 5
    risk_per_trade_pct: float = 1.0
    stop_loss_pct: float = 2.0
    take_profit_pct: float = 4.0
    max_quote_age_s: float = 5.0
    max_spread_bps: float = 25.0
    min_price: float = 5.0
    max_price: float = 2000.0
    daily_loss_limit_pct: float = 3.0
    circuit_breaker_failures: int = 5
    circuit_breaker_cooloff_s: float = 300.0
    max_orders_per_min: int = 30
    respect_market_hours: bool = True
    # Optional self-imposed day-trade budget (trading/pdt.py); 0: off.
    day_trade_budget: int = 0
    day_trade_window_days: int = 5
    day_trade_budget_below_equity: float = 0.0
    allow_short: bool = False
    loss_breaker_pct: float = 5.0
    max_sector_pct: float = 30.0
    max_portfolio_risk_pct: float = 6.0
    confidence_floor: float = 0.5
    target_volatility_pct: float = 0.0
    flatten_before_close_min: float = 0.0
    fractional: bool = False
    loss_alert_ratio: float = 0.8
    in_flight_timeout_s: float = 30.0
    extended_hours: bool = False
    extended_limit_slippage_bps: float = 10.0
    sectors: dict[str, str] = msgspec.field(
        default_factory=lambda: {
            "AAPL": "technology",
            "MSFT": "technology",
            "NVDA": "technology",
            "AMZN": "consumer",
            "SPY": "index",
        }
    )

    def __post_init__(self) -> None:
        if self.profile not in RISK_PROFILES:
            fail("risk.profile", self.profile, f"unknown profile (known: {', '.join(RISK_PROFILES)})")
        for key in ("max_position_pct", "risk_per_trade_pct", "stop_loss_pct", "daily_loss_limit_pct"):
            pct(f"risk.{key}", getattr(self, key))
        positive("risk.take_profit_pct", self.take_profit_pct)
        at_least("risk.max_positions", self.max_positions, 1)
        positive("risk.max_quote_age_s", self.max_quote_age_s)
        positive("risk.max_spread_bps", self.max_spread_bps)
        positive("risk.min_price", self.min_price)
        positive("risk.max_price", self.max_price)
        if self.min_price >= self.max_price:
            fail("risk.min_price", self.min_price, f"must be < risk.max_price ({self.max_price:g})")
        at_least("risk.circuit_breaker_failures", self.circuit_breaker_failures, 1)
        positive("risk.circuit_breaker_cooloff_s", self.circuit_breaker_cooloff_s)
        at_least("risk.max_orders_per_min", self.max_orders_per_min, 1)
        non_negative("risk.day_trade_budget", self.day_trade_budget)
        at_least("risk.day_trade_window_days", self.day_trade_window_days, 1)
        non_negative("risk.day_trade_budget_below_equity", self.day_trade_budget_below_equity)
        pct("risk.loss_breaker_pct", self.loss_breaker_pct)
        if self.loss_breaker_pct <= self.daily_loss_limit_pct:
            fail(
                "risk.loss_breaker_pct",
                self.loss_breaker_pct,
                f"must be > risk.daily_loss_limit_pct ({self.daily_loss_limit_pct:g}): "
                "entries stop before the breaker liquidates",
            )
        pct("risk.max_sector_pct", self.max_sector_pct)
        pct("risk.max_portfolio_risk_pct", self.max_portfolio_risk_pct)
        ratio("risk.confidence_floor", self.confidence_floor)
        non_negative("risk.target_volatility_pct", self.target_volatility_pct)
        non_negative("risk.flatten_before_close_min", self.flatten_before_close_min)
        if self.fractional:
            fail(
                "risk.fractional",
                self.fractional,
                "fractional shares are not supported: orders are whole shares "
                "(the embedded venue trades whole shares only)",
            )
        if not 0 < self.loss_alert_ratio < 1:
            fail("risk.loss_alert_ratio", self.loss_alert_ratio, "must be between 0 and 1 (exclusive)")
        positive("risk.in_flight_timeout_s", self.in_flight_timeout_s)
        non_negative("risk.extended_limit_slippage_bps", self.extended_limit_slippage_bps)
        if self.extended_limit_slippage_bps >= 10_000:
            fail(
                "risk.extended_limit_slippage_bps",
                self.extended_limit_slippage_bps,
                "must be < 10000 (a sell limit would be <= 0)",
            )
        for symbol, sector in self.sectors.items():
            if not sector:
                fail(f"risk.sectors.{symbol}", sector, "must name a sector")

    def to_params(self) -> RiskLimits:
        """The pure risk rules' parameters (trading/risk_rules.py)."""
        return RiskLimits(**_shared(self, RiskLimits))

    def bracket_params(self) -> BracketParams:
        """Where an entry's protective legs go: stop_loss_pct and take_profit_pct from the entry."""
        return BracketParams(method="percent", **_shared(self, BracketParams))


# Named risk presets: "default" is RiskSettings' own defaults. A key a settings
# file sets itself wins over the preset, so `profile` only moves the keys left out.
RISK_PROFILES: dict[str, dict[str, Any]] = {
    "conservative": {
        "max_position_pct": 5.0,
        "max_positions": 3,
        "risk_per_trade_pct": 0.5,
        "max_spread_bps": 15.0,
        "daily_loss_limit_pct": 1.5,
        "loss_breaker_pct": 3.0,
        "max_sector_pct": 15.0,
        "max_portfolio_risk_pct": 3.0,
        "max_orders_per_min": 10,
        "confidence_floor": 0.25,
    },
    "default": {},
    "aggressive": {
        "max_position_pct": 20.0,
        "max_positions": 10,
        "risk_per_trade_pct": 2.0,
        "max_spread_bps": 40.0,
        "daily_loss_limit_pct": 5.0,
        "loss_breaker_pct": 8.0,
        "max_sector_pct": 50.0,
        "max_portfolio_risk_pct": 12.0,
        "max_orders_per_min": 60,
        "confidence_floor": 0.75,
    },
}


def _risk_with_profile(raw_risk: Mapping[str, Any], merged_risk: dict[str, Any]) -> dict[str, Any]:
    """The [risk] table: defaults, then the named profile, then the file's own keys."""
    name = raw_risk.get("profile", merged_risk["profile"])
    if not isinstance(name, str) or name not in RISK_PROFILES:
        raise SettingsError(
            f"settings: risk.profile = {_fmt(name)}: unknown profile (known: {', '.join(RISK_PROFILES)})"
        )
    return {**merged_risk, **RISK_PROFILES[name], **raw_risk}


class OrdersSettings(_Section, frozen=True):
    rate_limit_per_min: int = 160
    emergency_reserve: int = 20
    protect_reserve: int = 10
    max_retries: int = 3
    retry_backoff_s: float = 0.5
    request_timeout_s: float = 10.0
    time_in_force: Literal["day", "gtc"] = "day"
    poll_interval_s: float = 2.0
    trailing_stop_pct: float = 0.0

    def __post_init__(self) -> None:
        at_least("orders.rate_limit_per_min", self.rate_limit_per_min, 1)
        at_least("orders.emergency_reserve", self.emergency_reserve, 0)
        if self.emergency_reserve >= self.rate_limit_per_min:
            fail(
                "orders.emergency_reserve",
                self.emergency_reserve,
                f"must be < orders.rate_limit_per_min ({self.rate_limit_per_min})",
            )
        at_least("orders.protect_reserve", self.protect_reserve, 0)
        if self.emergency_reserve + self.protect_reserve >= self.rate_limit_per_min:
            fail(
                "orders.protect_reserve",
                self.protect_reserve,
                f"must be < orders.rate_limit_per_min - orders.emergency_reserve "
                f"({self.rate_limit_per_min - self.emergency_reserve})",
            )
        at_least("orders.max_retries", self.max_retries, 0)
        non_negative("orders.retry_backoff_s", self.retry_backoff_s)
        positive("orders.request_timeout_s", self.request_timeout_s)
        positive("orders.poll_interval_s", self.poll_interval_s)
        if self.trailing_stop_pct != 0:
            pct("orders.trailing_stop_pct", self.trailing_stop_pct)


class ReconcilerSettings(_Section, frozen=True):
    interval_s: float = 15.0
    protective_stop_pct: float = 3.0
    max_unprotected_s: float = 30.0
    gap_moderate_pct: float = 1.0
    gap_high_pct: float = 2.0
    gap_extreme_pct: float = 5.0
    fills_lookback_s: float = 3600.0

    def __post_init__(self) -> None:
        positive("reconciler.interval_s", self.interval_s)
        pct("reconciler.protective_stop_pct", self.protective_stop_pct)
        if not self.max_unprotected_s >= 2 * self.interval_s:
            # The order path protects what it hears of at once; for shares it never
            # heard of (a missed fill) a pass finds them bare, the next checks the stop rests.
            fail(
                "reconciler.max_unprotected_s",
                self.max_unprotected_s,
                f"must be >= 2 x reconciler.interval_s ({self.interval_s:g})",
            )
        positive("reconciler.gap_moderate_pct", self.gap_moderate_pct)
        if not self.gap_moderate_pct < self.gap_high_pct < self.gap_extreme_pct:
            fail(
                "reconciler.gap_high_pct",
                self.gap_high_pct,
                "must satisfy gap_moderate_pct < gap_high_pct < gap_extreme_pct",
            )
        positive("reconciler.fills_lookback_s", self.fills_lookback_s)


# The longest a handler sleeps between bounded REST calls when
# orders.retry_backoff_s is small (the order manager caps a submit retry's
# backoff at max(retry_backoff_s, this)); heartbeat_timeout_s must exceed it.
HANDLER_PAUSE_FLOOR_S = 1.0


class SupervisionSettings(_Section, frozen=True):
    max_restarts: int = 5
    period_s: float = 60.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 3.0
    ask_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        at_least("supervision.max_restarts", self.max_restarts, 1)
        for key in (
            "period_s",
            "backoff_initial_s",
            "backoff_max_s",
            "heartbeat_interval_s",
            "heartbeat_timeout_s",
            "ask_timeout_s",
        ):
            positive(f"supervision.{key}", getattr(self, key))
        if self.backoff_initial_s > self.backoff_max_s:
            fail(
                "supervision.backoff_initial_s",
                self.backoff_initial_s,
                f"must be <= supervision.backoff_max_s ({self.backoff_max_s:g})",
            )


class EmergencySettings(_Section, frozen=True):
    attempts: int = 10
    retry_interval_s: float = 1.0
    flat_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        at_least("emergency.attempts", self.attempts, 1)
        positive("emergency.retry_interval_s", self.retry_interval_s)
        positive("emergency.flat_timeout_s", self.flat_timeout_s)


class AlertsSettings(_Section, frozen=True):
    jsonl: bool = True
    webhook_url: str = ""
    webhook_kind: Literal["generic", "slack", "discord"] = "generic"
    min_level_webhook: AlertLevel = "WARNING"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_from: str = ""
    smtp_to: tuple[str, ...] = ()
    min_level_smtp: AlertLevel = "CRITICAL"
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_ca_file: str = ""
    timeout_s: float = 5.0
    dedup_window_s: float = 60.0
    max_per_key_per_hour: int = 20
    retry_attempts: int = 4
    retry_initial_s: float = 2.0
    retry_max_s: float = 60.0
    queue_max: int = 256
    stream_down_alert_s: float = 30.0
    stale_quote_s: float = 300.0
    daily_summary: bool = True
    daily_summary_time: str = "16:15"

    def __post_init__(self) -> None:
        url("alerts.webhook_url", self.webhook_url, ("https", "http"))
        if not 0 < self.smtp_port <= 65535:
            fail("alerts.smtp_port", self.smtp_port, "must be between 1 and 65535")
        if self.smtp_host:
            if "@" not in self.smtp_from:
                fail("alerts.smtp_from", self.smtp_from, "must be an e-mail address when alerts.smtp_host is set")
            if not self.smtp_to:
                fail("alerts.smtp_to", self.smtp_to, "must list at least one address when alerts.smtp_host is set")
        for addr in self.smtp_to:
            if "@" not in addr:
                fail("alerts.smtp_to", self.smtp_to, f"{addr!r} is not an e-mail address")
        positive("alerts.timeout_s", self.timeout_s)
        non_negative("alerts.dedup_window_s", self.dedup_window_s)
        at_least("alerts.max_per_key_per_hour", self.max_per_key_per_hour, 1)
        if self.smtp_user and self.smtp_security == "none":
            fail(
                "alerts.smtp_security",
                self.smtp_security,
                "must be starttls or tls when alerts.smtp_user is set (the password needs TLS)",
            )
        if self.smtp_ca_file and not os.path.isfile(self.smtp_ca_file):
            fail("alerts.smtp_ca_file", self.smtp_ca_file, "is not a readable file")
        at_least("alerts.retry_attempts", self.retry_attempts, 1)
        positive("alerts.retry_initial_s", self.retry_initial_s)
        if self.retry_max_s < self.retry_initial_s:
            fail(
                "alerts.retry_max_s", self.retry_max_s, f"must be >= alerts.retry_initial_s ({self.retry_initial_s:g})"
            )
        at_least("alerts.queue_max", self.queue_max, 1)
        positive("alerts.stream_down_alert_s", self.stream_down_alert_s)
        positive("alerts.stale_quote_s", self.stale_quote_s)
        if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", self.daily_summary_time):
            fail("alerts.daily_summary_time", self.daily_summary_time, "must be HH:MM (24-hour, America/New_York)")


class ControlSettings(_Section, frozen=True):
    socket: str = ""
    max_connections: int = 8
    read_timeout_s: float = 30.0
    max_request_bytes: int = 64 * 1024
    # Empty: socket 0600, only the daemon's uid and root. A group name: 0660
    # with that group, and its members may connect too.
    group: str = ""

    def __post_init__(self) -> None:
        if "\0" in self.socket:
            fail("control.socket", self.socket, "must not contain NUL")
        at_least("control.max_connections", self.max_connections, 1)
        positive("control.read_timeout_s", self.read_timeout_s)
        at_least("control.max_request_bytes", self.max_request_bytes, 1024)
        if self.group:
            import grp  # Unix only, like the control socket itself

            try:
                grp.getgrnam(self.group)
            except KeyError:
                fail("control.group", self.group, "no such group on this machine (create it, or leave empty for 0600)")


class TelemetrySettings(_Section, frozen=True):
    enabled: bool = False
    # "" defers to OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, then http/protobuf (ops/telemetry.py).
    protocol: Literal["", "grpc", "http/protobuf"] = ""
    otlp_endpoint: str = ""
    service_name: str = ""
    quote_sample_ratio: float = 0.01
    firehose_messages: tuple[str, ...] = ("Quote", "Trade", "Bar", "Vote", "Votes", "FlushQuotes")
    max_queue_size: int = 2048
    export_timeout_s: float = 10.0
    max_pending_traces: int = 4096

    def __post_init__(self) -> None:
        url("telemetry.otlp_endpoint", self.otlp_endpoint, ("http", "https"))
        if self.service_name != self.service_name.strip():
            fail("telemetry.service_name", self.service_name, "must not start or end with spaces")
        ratio("telemetry.quote_sample_ratio", self.quote_sample_ratio)
        at_least("telemetry.max_queue_size", self.max_queue_size, 1)
        positive("telemetry.export_timeout_s", self.export_timeout_s)
        at_least("telemetry.max_pending_traces", self.max_pending_traces, 1)


class DebugSettings(_Section, frozen=True):
    fault_injection: bool = False


class StreamSettings(_Section, frozen=True):
    silence_timeout_s: float = 15.0
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_inflight_per_analyzer: int = 2

    def __post_init__(self) -> None:
        for key in ("silence_timeout_s", "connect_timeout_s", "backoff_initial_s", "backoff_max_s"):
            positive(f"stream.{key}", getattr(self, key))
        if self.backoff_initial_s > self.backoff_max_s:
            fail(
                "stream.backoff_initial_s",
                self.backoff_initial_s,
                f"must be <= stream.backoff_max_s ({self.backoff_max_s:g})",
            )
        at_least("stream.max_inflight_per_analyzer", self.max_inflight_per_analyzer, 1)


class LoggingSettings(_Section, frozen=True):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # auto: text on a terminal, json under systemd or when stderr is not a terminal.
    format: Literal["auto", "text", "json"] = "auto"
    # Under systemd with stderr on the journal: records go to the journal natively (ops/logs/journal.py).
    journal: bool = True
    journal_socket: str = "/run/systemd/journal/socket"

    def __post_init__(self) -> None:
        if not self.journal_socket.startswith("/") or "\0" in self.journal_socket:
            fail("logging.journal_socket", self.journal_socket, "must be an absolute path")


class ModelsSettings(_Section, frozen=True):
    """Machine-learned ensemble members (trading/model_store.py), `python run.py train`,
    and their live lifecycle (actors/model_keeper.py)."""

    enabled: bool = True
    # Empty: <data_dir>/models when it holds a manifest.json, else the shipped defaults.
    dir: str = ""
    # Models to load from the manifest; empty: all of them.
    names: tuple[str, ...] = ()
    # `train`: label = forward log return over this many 1-minute bars > label_threshold_bps.
    horizon_bars: int = 5
    label_threshold_bps: float = 0.0
    train_days: float = 2.0
    seed: int = 7
    # The live lifecycle (actors/model_keeper.py): retrain, compare, promote.
    lifecycle: bool = False
    retrain_at: str = "16:30"  # New York time, trading days (after the close); "": never
    hit_rate_margin: float = 0.05
    min_scored_votes: int = 200
    psi_threshold: float = 0.25
    promote_margin: float = 0.01
    train_timeout_s: float = 900.0
    score_horizon_s: float = 0.0  # 0: horizon_bars minutes
    retrain_cooldown_s: float = 3600.0

    def __post_init__(self) -> None:
        if "\0" in self.dir:
            fail("models.dir", self.dir, "must not contain NUL")
        for name in self.names:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                fail("models.names", self.names, f"{name!r} is not a model name (letters, digits, _ and -)")
        if len(set(self.names)) != len(self.names):
            fail("models.names", self.names, "lists a model twice")
        at_least("models.horizon_bars", self.horizon_bars, 1)
        non_negative("models.label_threshold_bps", self.label_threshold_bps)
        positive("models.train_days", self.train_days)
        at_least("models.seed", self.seed, 0)
        _check_models_lifecycle(self)


def _check_models_lifecycle(m: ModelsSettings) -> None:
    """The lifecycle keys of [models], checked where they are declared."""

    def fail_(key: str, value: Any, reason: str) -> NoReturn:
        fail(f"models.{key}", value, reason)

    try:
        if not m.retrain_at:  # no scheduled retrain
            raise LookupError
        hh, sep, mm = m.retrain_at.partition(":")
        if not sep or not (hh.isdigit() and mm.isdigit()) or len(mm) != 2:
            raise ValueError
        datetime.time(int(hh), int(mm))
    except LookupError:
        pass
    except ValueError:
        fail_("retrain_at", m.retrain_at, 'must be HH:MM (24-hour, New York time) or "" (no scheduled retrain)')
    for key in ("hit_rate_margin", "promote_margin"):
        value = getattr(m, key)
        if not (math.isfinite(value) and 0 <= value < 1):
            fail_(key, value, "must be >= 0 and < 1")
    if m.min_scored_votes < 1:
        fail_("min_scored_votes", m.min_scored_votes, "must be >= 1")
    if not (math.isfinite(m.psi_threshold) and m.psi_threshold > 0):
        fail_("psi_threshold", m.psi_threshold, "must be > 0")
    if not (math.isfinite(m.train_timeout_s) and m.train_timeout_s > 0):
        fail_("train_timeout_s", m.train_timeout_s, "must be > 0")
    for key in ("score_horizon_s", "retrain_cooldown_s"):
        value = getattr(m, key)
        if not (math.isfinite(value) and value >= 0):
            fail_(key, value, "must be >= 0")


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class DashboardSettings(_Section, frozen=True):
    """The web dashboard, JSON API and /metrics (ops/dashboard/)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8740
    # false: read-only; every control action (halt, kill, approve...) is refused.
    control: bool = False
    # Empty: <data dir>/dashboard.token (generated at first start, mode 0600),
    # unless the STOCKADE_DASHBOARD_TOKEN environment variable or systemd
    # credential gives it.
    token_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    # A non-loopback host without TLS is refused unless a reverse proxy in
    # front terminates TLS and this says so.
    behind_proxy: bool = False
    # The origin the browser sees (https://dash.example.com) when a reverse
    # proxy in front rewrites Host: control requests from it pass the Origin check.
    public_origin: str = ""
    max_body_bytes: int = 16 * 1024
    max_event_streams: int = 8
    max_concurrent_requests: int = 32
    requests_per_s: float = 50.0
    update_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.host:
            fail("dashboard.host", self.host, "must not be empty")
        if not 0 <= self.port <= 65535:
            fail("dashboard.port", self.port, "must be between 0 and 65535 (0: a free port)")
        if bool(self.tls_cert) != bool(self.tls_key):
            key = "dashboard.tls_cert" if not self.tls_cert else "dashboard.tls_key"
            fail(key, getattr(self, key.partition(".")[2]), "dashboard.tls_cert and dashboard.tls_key go together")
        for key in ("tls_cert", "tls_key"):
            path = getattr(self, key)
            if path and not os.path.isfile(path):
                fail(f"dashboard.{key}", path, "is not a readable file")
        if "\0" in self.token_file:
            fail("dashboard.token_file", self.token_file, "must not contain NUL")
        if self.host not in LOOPBACK_HOSTS and not self.tls_cert and not self.behind_proxy:
            fail(
                "dashboard.host",
                self.host,
                "is not loopback: set dashboard.tls_cert/tls_key, or dashboard.behind_proxy = true "
                "when a TLS reverse proxy is in front (see README, dashboard)",
            )
        if self.public_origin and not _is_origin(self.public_origin):
            fail("dashboard.public_origin", self.public_origin, "must be an origin like https://host[:port] (no path)")
        at_least("dashboard.max_body_bytes", self.max_body_bytes, 1024)
        at_least("dashboard.max_event_streams", self.max_event_streams, 1)
        at_least("dashboard.max_concurrent_requests", self.max_concurrent_requests, 1)
        positive("dashboard.requests_per_s", self.requests_per_s)
        positive("dashboard.update_interval_s", self.update_interval_s)


def _is_origin(value: str) -> bool:
    """Whether `value` is a bare web origin: scheme, host and optional port, nothing else."""
    parts = urlsplit(value)
    try:
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
        and parts.username is None
        and not any(ch.isspace() for ch in value)
    )


MAX_ANALYZER_THREADS = 64


class RuntimeSettings(_Section, frozen=True):
    """How the daemon's process runs on the machine (ops/affinity.py)."""

    # CPUs the daemon may run on (Linux CPU numbers); empty: wherever the OS puts it.
    cpu_affinity: tuple[int, ...] = ()
    # Threads that run every analyzer (one actor per symbol shares them), not one per symbol.
    analyzer_threads: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.analyzer_threads <= MAX_ANALYZER_THREADS:
            fail("runtime.analyzer_threads", self.analyzer_threads, f"must be between 1 and {MAX_ANALYZER_THREADS}")
        for cpu in self.cpu_affinity:
            if cpu < 0:
                fail("runtime.cpu_affinity", self.cpu_affinity, f"{cpu} is not a CPU number (0, 1, ...)")
        if len(set(self.cpu_affinity)) != len(self.cpu_affinity):
            fail("runtime.cpu_affinity", self.cpu_affinity, "lists a CPU twice")


class StorageSettings(_Section, frozen=True):
    """The data dir's lmdb storage (storage/environment.py; docs/ARCHITECTURE.md, storage)."""

    # "safe": every commit flushes its data pages (MDB_NOMETASYNC): a power cut
    # may undo the last commits that were not durable, never corrupt the file.
    # "fast": no flush but the durable writes' (MDB_NOSYNC): cheaper commits,
    # but a power cut can corrupt the whole file unless the filesystem keeps
    # write order.
    sync_mode: Literal["safe", "fast"] = "safe"


class Settings(_Section, frozen=True):
    """The whole settings file; `Settings()` is the shipped defaults."""

    venue: VenueSettings = VenueSettings()
    alpaca: AlpacaSettings = AlpacaSettings()
    trading: TradingSettings = TradingSettings()
    analyzer: AnalyzerSettings = AnalyzerSettings()
    voter: VoterSettings = VoterSettings()
    risk: RiskSettings = RiskSettings()
    orders: OrdersSettings = OrdersSettings()
    reconciler: ReconcilerSettings = ReconcilerSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    emergency: EmergencySettings = EmergencySettings()
    alerts: AlertsSettings = AlertsSettings()
    control: ControlSettings = ControlSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    debug: DebugSettings = DebugSettings()
    stream: StreamSettings = StreamSettings()
    logging: LoggingSettings = LoggingSettings()
    models: ModelsSettings = ModelsSettings()
    dashboard: DashboardSettings = DashboardSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    storage: StorageSettings = StorageSettings()
    backtest: BacktestSettings = BacktestSettings()

    def __post_init__(self) -> None:
        """The rules between sections (each section checks its own keys)."""
        need = self.analyzer.to_params().warmup_bars
        if need > self.trading.warmup_bars:
            fail(
                "trading.warmup_bars",
                self.trading.warmup_bars,
                f"must be at least {need}: the bars every indicator in [analyzer] needs",
            )
        # A REST call inside a handler declares itself busy for its own timeouts
        # (supervisors.fence), so orders.request_timeout_s needs no room here;
        # the pauses between such calls do: a submit retry sleeps in the order
        # manager's handler, up to max(orders.retry_backoff_s, 1 s); alpaca-py's
        # own retry wait between market-data attempts is 1 s.
        pause = max(self.orders.retry_backoff_s, HANDLER_PAUSE_FLOOR_S)
        if not self.supervision.heartbeat_timeout_s > pause:
            fail(
                "supervision.heartbeat_timeout_s",
                self.supervision.heartbeat_timeout_s,
                f"must be > {pause:g}: a handler may pause that long between REST calls (a submit retry's "
                "backoff, up to max(orders.retry_backoff_s, 1)), which would be taken for a hang",
            )


def _shared(section: msgspec.Struct, params: type[msgspec.Struct]) -> dict[str, Any]:
    """The section's values for the fields `params` shares with it by name (tables copied)."""
    names = set(section.__struct_fields__)
    values = {f: getattr(section, f) for f in params.__struct_fields__ if f in names}
    return {f: dict(v) if isinstance(v, dict) else v for f, v in values.items()}


# ---- loading -------------------------------------------------------------------


def load_settings(path: str | os.PathLike[str] | None) -> Settings:
    """Read `path` (TOML, may be partial) over the defaults; None: the defaults.

    Raises SettingsError (one line) on an unreadable file, bad TOML, an
    unknown key, a wrong type or a value out of range.
    """
    if path is None:
        return Settings()
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"settings: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"settings: {path}: invalid TOML: {exc}") from None
    return settings_from_dict(raw)


def settings_from_dict(raw: Mapping[str, Any]) -> Settings:
    """Validate a parsed settings document (same rules as `load_settings`)."""
    merged = _merge_over_defaults(raw)
    try:
        return msgspec.convert(merged, Settings, strict=True)
    except msgspec.ValidationError as exc:
        refused = exc.__cause__
        if isinstance(refused, SettingsError):  # a section's own check (__post_init__)
            raise _as_written(refused, merged) from None
        raise SettingsError(_describe_validation_error(str(exc), merged)) from None


def _as_written(exc: SettingsError, merged: Mapping[str, Any]) -> SettingsError:
    """`exc` with the refused value as the file wrote it (``-5``, not the Struct's ``-5.0``)."""
    if not exc.key:
        return exc
    section, _, rest = exc.key.partition(".")
    name, _, sub = rest.partition(".")  # sub: a key inside a table (voter.weights.<model>)
    table = merged.get(section)
    if not isinstance(table, dict) or name not in table:
        return exc
    value = table[name]
    if sub:
        if not isinstance(value, dict) or sub not in value:
            return exc
        value = value[sub]
    return SettingsError(f"settings: {exc.key} = {_fmt(value)}: {exc.reason}", key=exc.key, reason=exc.reason)


def _merge_over_defaults(raw: Mapping[str, Any]) -> dict[str, Any]:
    defaults = msgspec.to_builtins(Settings())
    merged: dict[str, Any] = {}
    for section, value in raw.items():
        if section not in defaults:
            raise SettingsError(f"settings: unknown section [{section}]{_did_you_mean(section, defaults)}")
        if not isinstance(value, dict):
            raise SettingsError(f"settings: {section} = {_fmt(value)}: must be a table [{section}]")
        for key in value:
            if (section, key) in REMOVED_KEYS:
                raise SettingsError(f"settings: {section}.{key} = {_fmt(value[key])}: {REMOVED_KEYS[section, key]}")
            if key not in defaults[section]:
                raise SettingsError(f"settings: unknown key {section}.{key}{_did_you_mean(key, defaults[section])}")
    for section, default_table in defaults.items():
        # Tables inside a section (voter.weights) replace the default whole:
        # a partial weights table means "these models", not "these plus the defaults".
        merged[section] = {**default_table, **raw.get(section, {})}
    merged["risk"] = _risk_with_profile(raw.get("risk", {}), merged["risk"])
    return merged


# Keys that no longer exist, with what to do instead. An error, never a silent
# mapping: these guarded money, so the operator decides what replaces them.
_PDT_GONE = (
    "removed: FINRA retired the pattern-day-trader rule and Alpaca no longer enforces it; "
    "delete the key, or set risk.day_trade_budget = 3 and risk.day_trade_budget_below_equity = 25000 "
    "for a self-imposed limit like the old rule (README, Risk)"
)
REMOVED_KEYS: dict[tuple[str, str], str] = {
    ("risk", "pdt_protection"): _PDT_GONE,
    ("risk", "pdt_min_equity"): _PDT_GONE,
}


def _did_you_mean(word: str, candidates: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_PATH_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\.\.\.\]")


def _describe_validation_error(message: str, merged: Mapping[str, Any]) -> str:
    # msgspec says e.g. "Expected `float`, got `str` - at `$.risk.max_position_pct`".
    what, _, where = message.partition(" - at `")
    if what.startswith("settings: "):  # a section's own __post_init__ check: already one line
        return what
    where = where.rstrip("`")
    if what.startswith("settings: "):  # a section's own __post_init__ named key and value already
        return what
    if not where.startswith("$"):
        return f"settings: {message}"
    parts: list[str] = []
    value: Any = merged
    for m in _PATH_TOKEN.finditer(where[1:]):
        if m.group(1) is not None:
            parts.append(m.group(1))
            value = value.get(m.group(1)) if isinstance(value, dict) else None
        elif m.group(2) is not None:
            parts[-1] += f"[{m.group(2)}]"
            idx = int(m.group(2))
            value = value[idx] if isinstance(value, list) and idx < len(value) else None
        else:  # a dict value: msgspec does not say which key, so show the table
            break
    key = ".".join(parts) or where
    what = what.replace("`", "")
    what = what[0].lower() + what[1:] if what else what
    return f"settings: {key} = {_fmt(value)}: {what}"


# ---- resolution against the environment ---------------------------------------------


def resolve_venue_mode(settings: Settings, env: Mapping[str, str] = os.environ) -> Literal["embedded", "alpaca"]:
    """`auto` is the embedded venue unless Alpaca keys are in the environment or credentials."""
    from stockade.config import secrets  # secrets imports SettingsError from here

    keys = secrets.alpaca_keys(env)
    mode = settings.venue.mode
    if mode == "auto":
        return "alpaca" if keys else "embedded"
    if mode == "alpaca" and keys is None:
        raise SettingsError(
            'settings: venue.mode = "alpaca": needs APCA_API_KEY_ID and APCA_API_SECRET_KEY '
            "(environment or systemd credentials)"
        )
    return mode
