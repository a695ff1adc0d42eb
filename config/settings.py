"""Settings: every tunable of stockade, validated once at start.

Each `[section]` of settings.toml is a frozen msgspec Struct below; the
defaults here are the shipped values (the repo's settings.toml loads to
exactly `Settings()`, a test holds that). A settings file may be partial:
missing keys and sections take their defaults. An unknown key is an error,
because a typo in a risk limit must not silently leave the default in force.

A bad value raises `SettingsError` with one line naming the key path and the
value, e.g. ``settings: risk.max_position_pct = -5: must be > 0 and <= 100``;
run.py turns it into exit status 2.

Secrets are never settings: see `stockade.config.secrets`.
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

AlertLevelName = Literal["INFO", "WARNING", "CRITICAL", "EMERGENCY"]
ALERT_LEVELS: tuple[str, ...] = ("INFO", "WARNING", "CRITICAL", "EMERGENCY")
KNOWN_STRATEGIES: tuple[str, ...] = ("momentum", "mean_reversion", "breakout")

PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
LIVE_TRADING_URL = "https://api.alpaca.markets"
DEFAULT_DATA_URL = "https://data.alpaca.markets"


class SettingsError(ValueError):
    """A settings file or value that stockade refuses to start with (exit 2)."""


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class VenueSettings(_Section, frozen=True):
    mode: Literal["auto", "embedded", "alpaca"] = "auto"
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 4
    quote_rate_hz: float = 4.0
    clock: Literal["always_open", "nyse"] = "always_open"
    initial_cash: float = 100_000.0


class BacktestSettings(_Section, frozen=True):
    slippage_bps: float = 1.0
    commission_per_share: float = 0.0
    bar_spread_bps: float = 2.0
    quote_size: int = 10_000


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


class TradingSettings(_Section, frozen=True):
    symbols: tuple[str, ...] = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")
    warmup_bars: int = 120


class AnalyzerSettings(_Section, frozen=True):
    strategies: tuple[str, ...] = KNOWN_STRATEGIES
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


class VoterSettings(_Section, frozen=True):
    mode: Literal["auto", "manual", "hybrid"] = "auto"
    threshold: float = 0.05
    min_confidence: float = 0.65
    hybrid_auto_confidence: float = 0.8
    weights: dict[str, float] = msgspec.field(
        default_factory=lambda: {"momentum": 1.0, "mean_reversion": 1.0, "breakout": 1.0}
    )
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


class ReconcilerSettings(_Section, frozen=True):
    interval_s: float = 15.0
    protective_stop_pct: float = 3.0
    max_unprotected_s: float = 30.0
    gap_moderate_pct: float = 1.0
    gap_high_pct: float = 2.0
    gap_extreme_pct: float = 5.0
    fills_lookback_s: float = 3600.0


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


class EmergencySettings(_Section, frozen=True):
    attempts: int = 10
    retry_interval_s: float = 1.0
    flat_timeout_s: float = 30.0


class AlertsSettings(_Section, frozen=True):
    jsonl: bool = True
    webhook_url: str = ""
    webhook_kind: Literal["generic", "slack", "discord"] = "generic"
    min_level_webhook: AlertLevelName = "WARNING"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_from: str = ""
    smtp_to: tuple[str, ...] = ()
    min_level_smtp: AlertLevelName = "CRITICAL"
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


class ControlSettings(_Section, frozen=True):
    socket: str = ""
    max_connections: int = 8
    read_timeout_s: float = 30.0
    max_request_bytes: int = 64 * 1024
    # Empty: socket 0600, only the daemon's uid and root. A group name: 0660
    # with that group, and its members may connect too.
    group: str = ""


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


class DebugSettings(_Section, frozen=True):
    fault_injection: bool = False


class StreamSettings(_Section, frozen=True):
    silence_timeout_s: float = 15.0
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_inflight_per_analyzer: int = 2


class LoggingSettings(_Section, frozen=True):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # auto: text on a terminal, json under systemd or when stderr is not a terminal.
    format: Literal["auto", "text", "json"] = "auto"
    # Under systemd with stderr on the journal: records go to the journal natively (ops/logs/journal.py).
    journal: bool = True
    journal_socket: str = "/run/systemd/journal/socket"


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
        _check_models_lifecycle(self)


def _check_models_lifecycle(m: ModelsSettings) -> None:
    """The lifecycle keys of [models], checked where they are declared."""

    def fail(key: str, value: Any, reason: str) -> None:
        raise SettingsError(f"settings: models.{key} = {_fmt(value)}: {reason}")

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
        fail("retrain_at", m.retrain_at, 'must be HH:MM (24-hour, New York time) or "" (no scheduled retrain)')
    for key in ("hit_rate_margin", "promote_margin"):
        value = getattr(m, key)
        if not (math.isfinite(value) and 0 <= value < 1):
            fail(key, value, "must be >= 0 and < 1")
    if m.min_scored_votes < 1:
        fail("min_scored_votes", m.min_scored_votes, "must be >= 1")
    if not (math.isfinite(m.psi_threshold) and m.psi_threshold > 0):
        fail("psi_threshold", m.psi_threshold, "must be > 0")
    if not (math.isfinite(m.train_timeout_s) and m.train_timeout_s > 0):
        fail("train_timeout_s", m.train_timeout_s, "must be > 0")
    for key in ("score_horizon_s", "retrain_cooldown_s"):
        value = getattr(m, key)
        if not (math.isfinite(value) and value >= 0):
            fail(key, value, "must be >= 0")


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
    max_body_bytes: int = 16 * 1024
    max_event_streams: int = 8
    max_concurrent_requests: int = 32
    requests_per_s: float = 50.0
    update_interval_s: float = 1.0


class RuntimeSettings(_Section, frozen=True):
    """How the daemon's process runs on the machine (ops/affinity.py)."""

    # CPUs the daemon may run on (Linux CPU numbers); empty: wherever the OS puts it.
    cpu_affinity: tuple[int, ...] = ()


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
    backtest: BacktestSettings = BacktestSettings()


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
        settings = msgspec.convert(merged, Settings, strict=True)
    except msgspec.ValidationError as exc:
        raise SettingsError(_describe_validation_error(str(exc), merged)) from None
    _check(settings, merged)
    return settings


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


def _fmt(value: Any) -> str:
    """A value as it would be written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


# ---- semantic checks -------------------------------------------------------------


class _Checker:
    def __init__(self, merged: Mapping[str, Any]) -> None:
        self._merged = merged

    def fail(self, key: str, reason: str) -> None:
        section, _, name = key.partition(".")
        value = self._merged.get(section, {}).get(name)
        raise SettingsError(f"settings: {key} = {_fmt(value)}: {reason}")

    def positive(self, key: str, value: float) -> None:
        if not (value > 0 and math.isfinite(value)):
            self.fail(key, "must be > 0")

    def non_negative(self, key: str, value: float) -> None:
        if not (value >= 0 and math.isfinite(value)):
            self.fail(key, "must be >= 0")

    def pct(self, key: str, value: float) -> None:
        if not (0 < value <= 100):
            self.fail(key, "must be > 0 and <= 100")

    def ratio(self, key: str, value: float) -> None:
        if not (0 <= value <= 1):
            self.fail(key, "must be between 0 and 1")

    def at_least(self, key: str, value: int, low: int) -> None:
        if value < low:
            self.fail(key, f"must be >= {low}")

    def url(self, key: str, value: str, schemes: tuple[str, ...], allow_empty: bool = True) -> None:
        if not value and allow_empty:
            return
        problem = _url_problem(value, schemes)
        if problem:
            self.fail(key, problem)


def _url_problem(value: str, schemes: tuple[str, ...]) -> str | None:
    """Why `value` is not a usable URL with one of `schemes`, or None."""
    parts = urlsplit(value)
    try:
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError:
        return "has a bad port"
    if parts.scheme not in schemes or not parts.hostname or any(ch.isspace() for ch in value):
        return f"must be a URL like {schemes[0]}://host[:port][/path]"
    return None


def _check_url(key: str, value: str, schemes: tuple[str, ...]) -> None:
    problem = _url_problem(value, schemes)
    if problem:
        raise SettingsError(f"settings: {key} = {_fmt(value)}: {problem}")


def _check(s: Settings, merged: Mapping[str, Any]) -> None:
    c = _Checker(merged)
    c.non_negative("backtest.slippage_bps", s.backtest.slippage_bps)
    c.non_negative("backtest.commission_per_share", s.backtest.commission_per_share)
    c.non_negative("backtest.bar_spread_bps", s.backtest.bar_spread_bps)
    c.at_least("backtest.quote_size", s.backtest.quote_size, 1)

    v = s.venue
    if not v.host:
        c.fail("venue.host", "must not be empty")
    if not 0 <= v.port <= 65535:
        c.fail("venue.port", "must be between 0 and 65535 (0: a free port)")
    c.positive("venue.quote_rate_hz", v.quote_rate_hz)
    c.positive("venue.initial_cash", v.initial_cash)

    a = s.alpaca
    if not a.paper and not a.allow_live:
        c.fail("alpaca.paper", "live trading also needs alpaca.allow_live = true")
    c.url("alpaca.trading_url", a.trading_url, ("https", "http"))
    c.url("alpaca.data_url", a.data_url, ("https", "http"), allow_empty=False)
    c.url("alpaca.stream_url", a.stream_url, ("wss", "ws"))
    c.url("alpaca.trading_stream_url", a.trading_stream_url, ("wss", "ws"))
    if a.paper and a.trading_url and urlsplit(a.trading_url).hostname == urlsplit(LIVE_TRADING_URL).hostname:
        c.fail("alpaca.trading_url", "is the live endpoint but alpaca.paper = true")
    if a.live and a.trading_url and urlsplit(a.trading_url).hostname == urlsplit(PAPER_TRADING_URL).hostname:
        c.fail("alpaca.trading_url", "is the paper endpoint but live trading is on (alpaca.paper = false)")
    stream_host = urlsplit(a.trading_stream_url).hostname
    if a.paper and stream_host == urlsplit(LIVE_TRADING_URL).hostname:
        c.fail("alpaca.trading_stream_url", "is the live endpoint but alpaca.paper = true")
    if a.live and stream_host == urlsplit(PAPER_TRADING_URL).hostname:
        c.fail("alpaca.trading_stream_url", "is the paper endpoint but live trading is on (alpaca.paper = false)")

    t = s.trading
    if not t.symbols:
        c.fail("trading.symbols", "must list at least one symbol")
    for sym in t.symbols:
        if not re.fullmatch(r"[A-Z][A-Z0-9.]{0,9}", sym):
            c.fail("trading.symbols", f"{sym!r} is not an upper-case ticker")
    if len(set(t.symbols)) != len(t.symbols):
        c.fail("trading.symbols", "lists a symbol twice")
    c.at_least("trading.warmup_bars", t.warmup_bars, 0)

    an = s.analyzer
    for name in an.strategies:
        if name not in KNOWN_STRATEGIES:
            c.fail("analyzer.strategies", f"unknown strategy {name!r} (known: {', '.join(KNOWN_STRATEGIES)})")
    c.positive("analyzer.evaluate_every_s", an.evaluate_every_s)
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
        c.at_least(f"analyzer.{key}", getattr(an, key), 2)
    if an.sma_fast >= an.sma_slow:
        c.fail("analyzer.sma_fast", f"must be < analyzer.sma_slow ({an.sma_slow})")
    if an.ema_fast >= an.ema_slow:
        c.fail("analyzer.ema_fast", f"must be < analyzer.ema_slow ({an.ema_slow})")
    if not 0 < an.rsi_oversold < an.rsi_overbought < 100:
        c.fail("analyzer.rsi_oversold", "must satisfy 0 < rsi_oversold < rsi_overbought < 100")
    c.positive("analyzer.bb_k", an.bb_k)
    for key in ("high_vol_bar_pct", "high_vol_atr_pct", "high_vol_drop_pct"):
        value = getattr(an, key)
        if not 0 < value < 100:
            c.fail(f"analyzer.{key}", "must be > 0 and < 100 (percent)")
    from stockade.trading.features import FeatureParams  # the analyzer's own count, so the two cannot drift

    need = FeatureParams.from_analyzer(an).warmup_bars
    if need > t.warmup_bars:
        c.fail("trading.warmup_bars", f"must be at least {need}: the bars every indicator in [analyzer] needs")

    vo = s.voter
    if not 0 < vo.threshold <= 1:
        c.fail("voter.threshold", "must be > 0 and <= 1")
    c.ratio("voter.min_confidence", vo.min_confidence)
    if not vo.min_confidence <= vo.hybrid_auto_confidence <= 1:
        c.fail("voter.hybrid_auto_confidence", "must be >= voter.min_confidence and <= 1")
    for model, w in vo.weights.items():
        if not (w >= 0 and math.isfinite(w)):
            raise SettingsError(f"settings: voter.weights.{model} = {_fmt(w)}: must be >= 0")
    c.at_least("voter.adaptive_window", vo.adaptive_window, 1)
    c.ratio("voter.min_weight", vo.min_weight)
    c.positive("voter.min_weight", vo.min_weight)  # a zero floor could silence a model for good
    c.non_negative("voter.cooldown_s", vo.cooldown_s)
    c.positive("voter.approval_timeout_s", vo.approval_timeout_s)
    c.positive("voter.in_flight_timeout_s", vo.in_flight_timeout_s)
    c.positive("voter.score_horizon_s", vo.score_horizon_s)
    c.non_negative("voter.score_dead_band_bps", vo.score_dead_band_bps)
    c.non_negative("voter.defensive_threshold_add", vo.defensive_threshold_add)
    c.ratio("voter.defensive_confidence_add", vo.defensive_confidence_add)
    c.ratio("voter.defensive_size_scale", vo.defensive_size_scale)
    c.positive("voter.defensive_size_scale", vo.defensive_size_scale)
    c.pct("voter.defensive_drawdown_pct", vo.defensive_drawdown_pct)
    c.ratio("voter.defensive_hit_rate", vo.defensive_hit_rate)

    r = s.risk
    for key in ("max_position_pct", "risk_per_trade_pct", "stop_loss_pct", "daily_loss_limit_pct"):
        c.pct(f"risk.{key}", getattr(r, key))
    c.positive("risk.take_profit_pct", r.take_profit_pct)
    c.at_least("risk.max_positions", r.max_positions, 1)
    c.positive("risk.max_quote_age_s", r.max_quote_age_s)
    c.positive("risk.max_spread_bps", r.max_spread_bps)
    c.positive("risk.min_price", r.min_price)
    c.positive("risk.max_price", r.max_price)
    if r.min_price >= r.max_price:
        c.fail("risk.min_price", f"must be < risk.max_price ({r.max_price:g})")
    c.at_least("risk.circuit_breaker_failures", r.circuit_breaker_failures, 1)
    c.positive("risk.circuit_breaker_cooloff_s", r.circuit_breaker_cooloff_s)
    c.at_least("risk.max_orders_per_min", r.max_orders_per_min, 1)
    c.non_negative("risk.day_trade_budget", r.day_trade_budget)
    c.at_least("risk.day_trade_window_days", r.day_trade_window_days, 1)
    c.non_negative("risk.day_trade_budget_below_equity", r.day_trade_budget_below_equity)
    if r.profile not in RISK_PROFILES:
        c.fail("risk.profile", f"unknown profile (known: {', '.join(RISK_PROFILES)})")
    c.pct("risk.loss_breaker_pct", r.loss_breaker_pct)
    if r.loss_breaker_pct <= r.daily_loss_limit_pct:
        c.fail(
            "risk.loss_breaker_pct",
            f"must be > risk.daily_loss_limit_pct ({r.daily_loss_limit_pct:g}): "
            "entries stop before the breaker liquidates",
        )
    c.pct("risk.max_sector_pct", r.max_sector_pct)
    c.pct("risk.max_portfolio_risk_pct", r.max_portfolio_risk_pct)
    c.ratio("risk.confidence_floor", r.confidence_floor)
    c.non_negative("risk.target_volatility_pct", r.target_volatility_pct)
    c.non_negative("risk.flatten_before_close_min", r.flatten_before_close_min)
    if r.fractional:
        c.fail(
            "risk.fractional",
            "fractional shares are not supported: orders are whole shares "
            "(the embedded venue trades whole shares only)",
        )
    if not 0 < r.loss_alert_ratio < 1:
        c.fail("risk.loss_alert_ratio", "must be between 0 and 1 (exclusive)")
    c.positive("risk.in_flight_timeout_s", r.in_flight_timeout_s)
    c.non_negative("risk.extended_limit_slippage_bps", r.extended_limit_slippage_bps)
    if r.extended_limit_slippage_bps >= 10_000:
        c.fail("risk.extended_limit_slippage_bps", "must be < 10000 (a sell limit would be <= 0)")
    for symbol, sector in r.sectors.items():
        if not sector:
            raise SettingsError(f'settings: risk.sectors.{symbol} = "": must name a sector')

    o = s.orders
    c.at_least("orders.rate_limit_per_min", o.rate_limit_per_min, 1)
    c.at_least("orders.emergency_reserve", o.emergency_reserve, 0)
    if o.emergency_reserve >= o.rate_limit_per_min:
        c.fail("orders.emergency_reserve", f"must be < orders.rate_limit_per_min ({o.rate_limit_per_min})")
    c.at_least("orders.protect_reserve", o.protect_reserve, 0)
    if o.emergency_reserve + o.protect_reserve >= o.rate_limit_per_min:
        c.fail(
            "orders.protect_reserve",
            f"must be < orders.rate_limit_per_min - orders.emergency_reserve "
            f"({o.rate_limit_per_min - o.emergency_reserve})",
        )
    c.at_least("orders.max_retries", o.max_retries, 0)
    c.non_negative("orders.retry_backoff_s", o.retry_backoff_s)
    c.positive("orders.request_timeout_s", o.request_timeout_s)
    c.positive("orders.poll_interval_s", o.poll_interval_s)
    if o.trailing_stop_pct != 0:
        c.pct("orders.trailing_stop_pct", o.trailing_stop_pct)

    rc = s.reconciler
    c.positive("reconciler.interval_s", rc.interval_s)
    c.pct("reconciler.protective_stop_pct", rc.protective_stop_pct)
    if not rc.max_unprotected_s >= 2 * rc.interval_s:
        # The order path protects what it hears of at once; for shares it never
        # heard of (a missed fill) a pass finds them bare, the next checks the stop rests.
        c.fail("reconciler.max_unprotected_s", f"must be >= 2 x reconciler.interval_s ({rc.interval_s:g})")
    c.positive("reconciler.gap_moderate_pct", rc.gap_moderate_pct)
    if not rc.gap_moderate_pct < rc.gap_high_pct < rc.gap_extreme_pct:
        c.fail("reconciler.gap_high_pct", "must satisfy gap_moderate_pct < gap_high_pct < gap_extreme_pct")
    c.positive("reconciler.fills_lookback_s", rc.fills_lookback_s)

    sv = s.supervision
    c.at_least("supervision.max_restarts", sv.max_restarts, 1)
    for key in (
        "period_s",
        "backoff_initial_s",
        "backoff_max_s",
        "heartbeat_interval_s",
        "heartbeat_timeout_s",
        "ask_timeout_s",
    ):
        c.positive(f"supervision.{key}", getattr(sv, key))
    if sv.backoff_initial_s > sv.backoff_max_s:
        c.fail("supervision.backoff_initial_s", f"must be <= supervision.backoff_max_s ({sv.backoff_max_s:g})")
    # A REST call inside a handler declares itself busy for its own timeouts
    # (supervisors.fence), so orders.request_timeout_s needs no room here;
    # the pauses between such calls do: a submit retry sleeps in the order
    # manager's handler, up to max(orders.retry_backoff_s, 1 s); alpaca-py's
    # own retry wait between market-data attempts is 1 s.
    pause = max(o.retry_backoff_s, HANDLER_PAUSE_FLOOR_S)
    if not sv.heartbeat_timeout_s > pause:
        c.fail(
            "supervision.heartbeat_timeout_s",
            f"must be > {pause:g}: a handler may pause that long between REST calls (a submit retry's "
            "backoff, up to max(orders.retry_backoff_s, 1)), which would be taken for a hang",
        )

    e = s.emergency
    c.at_least("emergency.attempts", e.attempts, 1)
    c.positive("emergency.retry_interval_s", e.retry_interval_s)
    c.positive("emergency.flat_timeout_s", e.flat_timeout_s)

    al = s.alerts
    c.url("alerts.webhook_url", al.webhook_url, ("https", "http"))
    if not 0 < al.smtp_port <= 65535:
        c.fail("alerts.smtp_port", "must be between 1 and 65535")
    if al.smtp_host:
        if "@" not in al.smtp_from:
            c.fail("alerts.smtp_from", "must be an e-mail address when alerts.smtp_host is set")
        if not al.smtp_to:
            c.fail("alerts.smtp_to", "must list at least one address when alerts.smtp_host is set")
    for addr in al.smtp_to:
        if "@" not in addr:
            c.fail("alerts.smtp_to", f"{addr!r} is not an e-mail address")
    c.positive("alerts.timeout_s", al.timeout_s)
    c.non_negative("alerts.dedup_window_s", al.dedup_window_s)
    c.at_least("alerts.max_per_key_per_hour", al.max_per_key_per_hour, 1)
    if al.smtp_user and al.smtp_security == "none":
        c.fail("alerts.smtp_security", "must be starttls or tls when alerts.smtp_user is set (the password needs TLS)")
    if al.smtp_ca_file and not os.path.isfile(al.smtp_ca_file):
        c.fail("alerts.smtp_ca_file", "is not a readable file")
    c.at_least("alerts.retry_attempts", al.retry_attempts, 1)
    c.positive("alerts.retry_initial_s", al.retry_initial_s)
    if al.retry_max_s < al.retry_initial_s:
        c.fail("alerts.retry_max_s", f"must be >= alerts.retry_initial_s ({al.retry_initial_s:g})")
    c.at_least("alerts.queue_max", al.queue_max, 1)
    c.positive("alerts.stream_down_alert_s", al.stream_down_alert_s)
    c.positive("alerts.stale_quote_s", al.stale_quote_s)
    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", al.daily_summary_time):
        c.fail("alerts.daily_summary_time", "must be HH:MM (24-hour, America/New_York)")

    ct = s.control
    if "\0" in ct.socket:
        c.fail("control.socket", "must not contain NUL")
    c.at_least("control.max_connections", ct.max_connections, 1)
    c.positive("control.read_timeout_s", ct.read_timeout_s)
    c.at_least("control.max_request_bytes", ct.max_request_bytes, 1024)
    if ct.group:
        import grp  # Unix only, like the control socket itself

        try:
            grp.getgrnam(ct.group)
        except KeyError:
            c.fail("control.group", "no such group on this machine (create it, or leave empty for 0600)")

    te = s.telemetry
    c.url("telemetry.otlp_endpoint", te.otlp_endpoint, ("http", "https"))
    if te.service_name != te.service_name.strip():
        c.fail("telemetry.service_name", "must not start or end with spaces")
    c.ratio("telemetry.quote_sample_ratio", te.quote_sample_ratio)
    c.at_least("telemetry.max_queue_size", te.max_queue_size, 1)
    c.positive("telemetry.export_timeout_s", te.export_timeout_s)
    c.at_least("telemetry.max_pending_traces", te.max_pending_traces, 1)

    st = s.stream
    for key in ("silence_timeout_s", "connect_timeout_s", "backoff_initial_s", "backoff_max_s"):
        c.positive(f"stream.{key}", getattr(st, key))
    if st.backoff_initial_s > st.backoff_max_s:
        c.fail("stream.backoff_initial_s", f"must be <= stream.backoff_max_s ({st.backoff_max_s:g})")
    c.at_least("stream.max_inflight_per_analyzer", st.max_inflight_per_analyzer, 1)

    lg = s.logging
    if not lg.journal_socket.startswith("/") or "\0" in lg.journal_socket:
        c.fail("logging.journal_socket", "must be an absolute path")

    mo = s.models
    if "\0" in mo.dir:
        c.fail("models.dir", "must not contain NUL")
    for name in mo.names:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            c.fail("models.names", f"{name!r} is not a model name (letters, digits, _ and -)")
    if len(set(mo.names)) != len(mo.names):
        c.fail("models.names", "lists a model twice")
    c.at_least("models.horizon_bars", mo.horizon_bars, 1)
    c.non_negative("models.label_threshold_bps", mo.label_threshold_bps)
    c.positive("models.train_days", mo.train_days)
    c.at_least("models.seed", mo.seed, 0)

    ru = s.runtime
    for cpu in ru.cpu_affinity:
        if cpu < 0:
            c.fail("runtime.cpu_affinity", f"{cpu} is not a CPU number (0, 1, ...)")
    if len(set(ru.cpu_affinity)) != len(ru.cpu_affinity):
        c.fail("runtime.cpu_affinity", "lists a CPU twice")
    _check_dashboard(c, s.dashboard)


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _check_dashboard(c: _Checker, d: DashboardSettings) -> None:
    if not d.host:
        c.fail("dashboard.host", "must not be empty")
    if not 0 <= d.port <= 65535:
        c.fail("dashboard.port", "must be between 0 and 65535 (0: a free port)")
    if bool(d.tls_cert) != bool(d.tls_key):
        c.fail(
            "dashboard.tls_cert" if not d.tls_cert else "dashboard.tls_key",
            "dashboard.tls_cert and dashboard.tls_key go together",
        )
    for key in ("tls_cert", "tls_key"):
        path = getattr(d, key)
        if path and not os.path.isfile(path):
            c.fail(f"dashboard.{key}", "is not a readable file")
    if "\0" in d.token_file:
        c.fail("dashboard.token_file", "must not contain NUL")
    if d.host not in LOOPBACK_HOSTS and not d.tls_cert and not d.behind_proxy:
        c.fail(
            "dashboard.host",
            "is not loopback: set dashboard.tls_cert/tls_key, or dashboard.behind_proxy = true "
            "when a TLS reverse proxy is in front (see README, dashboard)",
        )
    c.at_least("dashboard.max_body_bytes", d.max_body_bytes, 1024)
    c.at_least("dashboard.max_event_streams", d.max_event_streams, 1)
    c.at_least("dashboard.max_concurrent_requests", d.max_concurrent_requests, 1)
    c.positive("dashboard.requests_per_s", d.requests_per_s)
    c.positive("dashboard.update_interval_s", d.update_interval_s)


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
