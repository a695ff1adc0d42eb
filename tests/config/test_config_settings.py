from pathlib import Path

import msgspec
import pytest

from stockade.config.settings import (
    Settings,
    SettingsError,
    load_settings,
    resolve_venue_mode,
    settings_from_dict,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return str(p)


def test_shipped_file_is_exactly_the_defaults():
    assert load_settings(str(REPO / "settings.toml")) == Settings()


def test_shipped_file_lists_every_key():
    import tomllib

    raw = tomllib.loads((REPO / "settings.toml").read_text())
    defaults = msgspec.to_builtins(Settings())
    for section, table in defaults.items():
        assert section in raw, section
        assert set(raw[section]) == set(table), section


def test_none_is_defaults_and_empty_file_is_defaults(tmp_path):
    assert load_settings(None) == Settings()
    assert load_settings(write(tmp_path, "")) == Settings()


def test_partial_file_merges_over_defaults(tmp_path):
    s = load_settings(write(tmp_path, "[risk]\nmax_positions = 3\n[trading]\nsymbols = ['SPY']\n"))
    assert s.risk.max_positions == 3
    assert s.risk.max_position_pct == Settings().risk.max_position_pct
    assert s.trading.symbols == ("SPY",)
    assert s.orders == Settings().orders


def test_int_accepted_for_float(tmp_path):
    s = load_settings(write(tmp_path, "[venue]\nquote_rate_hz = 10\n"))
    assert s.venue.quote_rate_hz == 10.0 and isinstance(s.venue.quote_rate_hz, float)


def test_weights_table_replaces_default(tmp_path):
    s = load_settings(write(tmp_path, "[voter.weights]\nmomentum = 2.0\nlgbm = 0.5\n"))
    assert s.voter.weights == {"momentum": 2.0, "lgbm": 0.5}
    assert s.voter.weight_of("breakout") == 1.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[risk]\nmax_position_pct = -5\n", "settings: risk.max_position_pct = -5: must be > 0 and <= 100"),
        ("[risk]\nmax_position_pct = 150.0\n", "settings: risk.max_position_pct = 150.0: must be > 0 and <= 100"),
        ("[supervision]\nmax_restarts = 0\n", "settings: supervision.max_restarts = 0: must be >= 1"),
        ("[reconciler]\ninterval_s = 0\n", "settings: reconciler.interval_s = 0: must be > 0"),
        (
            "[trading]\nsymbols = ['aapl']\n",
            "settings: trading.symbols = [\"aapl\"]: 'aapl' is not an upper-case ticker",
        ),
        ("[trading]\nsymbols = []\n", "settings: trading.symbols = []: must list at least one symbol"),
        ("[trading]\nsymbols = ['']\n", "settings: trading.symbols = [\"\"]: '' is not an upper-case ticker"),
        (
            "[alpaca]\ndata_url = 'not a url'\n",
            'settings: alpaca.data_url = "not a url": must be a URL like https://host[:port][/path]',
        ),
        (
            "[alpaca]\nstream_url = 'https://x/v2/iex'\n",
            'settings: alpaca.stream_url = "https://x/v2/iex": must be a URL like wss://host[:port][/path]',
        ),
        (
            "[alpaca]\npaper = false\n",
            "settings: alpaca.paper = false: live trading also needs alpaca.allow_live = true",
        ),
        (
            "[telemetry]\nquote_sample_ratio = 1.5\n",
            "settings: telemetry.quote_sample_ratio = 1.5: must be between 0 and 1",
        ),
        (
            "[risk]\nmin_price = 50.0\nmax_price = 10.0\n",
            "settings: risk.min_price = 50.0: must be < risk.max_price (10)",
        ),
        (
            "[orders]\nemergency_reserve = 200\n",
            "settings: orders.emergency_reserve = 200: must be < orders.rate_limit_per_min (160)",
        ),
        ("[analyzer]\nsma_fast = 40\n", "settings: analyzer.sma_fast = 40: must be < analyzer.sma_slow (30)"),
        (
            "[analyzer]\nstrategies = ['momentun']\n",
            "settings: analyzer.strategies = [\"momentun\"]: unknown strategy 'momentun' (known: momentum, mean_reversion, breakout)",
        ),
        ("[risk]\nstop_loss_pct = nan\n", "settings: risk.stop_loss_pct = nan: must be > 0 and <= 100"),
        ("[voter.weights]\nmomentum = -1.0\n", "settings: voter.weights.momentum = -1.0: must be >= 0"),
        (
            "[alerts]\nsmtp_host = 'mail'\n",
            'settings: alerts.smtp_from = "": must be an e-mail address when alerts.smtp_host is set',
        ),
        ("[risk]\nday_trade_budget = -1\n", "settings: risk.day_trade_budget = -1: must be >= 0"),
        ("[risk]\nday_trade_window_days = 0\n", "settings: risk.day_trade_window_days = 0: must be >= 1"),
        (
            "[risk]\nday_trade_budget_below_equity = -1.0\n",
            "settings: risk.day_trade_budget_below_equity = -1.0: must be >= 0",
        ),
        (
            "[runtime]\ncpu_affinity = [-1]\n",
            "settings: runtime.cpu_affinity = [-1]: -1 is not a CPU number (0, 1, ...)",
        ),
        ("[runtime]\ncpu_affinity = [1, 1]\n", "settings: runtime.cpu_affinity = [1, 1]: lists a CPU twice"),
        ("[runtime]\nanalyzer_threads = 0\n", "settings: runtime.analyzer_threads = 0: must be between 1 and 64"),
        ("[runtime]\nanalyzer_threads = 65\n", "settings: runtime.analyzer_threads = 65: must be between 1 and 64"),
        (
            "[venue]\nquote_arrivals = 'burst'\n",
            "settings: venue.quote_arrivals = \"burst\": invalid enum value 'burst'",
        ),
    ],
)
def test_bad_values_name_key_and_value(tmp_path, text, expected):
    with pytest.raises(SettingsError) as ei:
        load_settings(write(tmp_path, text))
    assert str(ei.value) == expected
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "[supervision]\nheartbeat_timeout_s = 0.8\n",
            "settings: supervision.heartbeat_timeout_s = 0.8: must be > 1: a handler may pause that long between REST "
            "calls (a submit retry's backoff, up to max(orders.retry_backoff_s, 1)), which would be taken for a hang",
        ),
        (
            "[orders]\nretry_backoff_s = 4.0\n",  # with the default heartbeat_timeout_s = 3
            "settings: supervision.heartbeat_timeout_s = 3.0: must be > 4: a handler may pause that long between REST "
            "calls (a submit retry's backoff, up to max(orders.retry_backoff_s, 1)), which would be taken for a hang",
        ),
    ],
)
def test_heartbeat_timeout_must_cover_a_handlers_pauses_not_its_rest_timeout(tmp_path, text, expected):
    with pytest.raises(SettingsError) as ei:
        load_settings(write(tmp_path, text))
    assert str(ei.value) == expected
    # The REST timeout itself may exceed the heartbeat timeout: such calls declare themselves busy.
    s = load_settings(write(tmp_path, "[orders]\nrequest_timeout_s = 30.0\n[supervision]\nheartbeat_timeout_s = 1.5\n"))
    assert s.orders.request_timeout_s > s.supervision.heartbeat_timeout_s


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[risk]\nmax_positions = 'five'\n", 'settings: risk.max_positions = "five": expected int, got str'),
        ("[risk]\nmax_position_pct = true\n", "settings: risk.max_position_pct = true: expected float, got bool"),
        ("[risk]\nmax_positions = 2.5\n", "settings: risk.max_positions = 2.5: expected int, got float"),
        ("[venue]\nmode = 'paper'\n", "settings: venue.mode = \"paper\": invalid enum value 'paper'"),
        ("[trading]\nsymbols = ['SPY', 3]\n", "settings: trading.symbols[1] = 3: expected str, got int"),
        ("[voter.weights]\nmomentum = 'x'\n", 'settings: voter.weights = {"momentum": "x"}: expected float, got str'),
    ],
)
def test_wrong_types(tmp_path, text, expected):
    with pytest.raises(SettingsError) as ei:
        load_settings(write(tmp_path, text))
    assert str(ei.value) == expected


def test_unknown_key_and_section_are_errors(tmp_path):
    with pytest.raises(
        SettingsError, match=r"^settings: unknown key risk\.max_postion_pct \(did you mean 'max_position_pct'\?\)$"
    ):
        load_settings(write(tmp_path, "[risk]\nmax_postion_pct = 5\n"))
    with pytest.raises(SettingsError, match=r"^settings: unknown section \[rsik\] \(did you mean 'risk'\?\)$"):
        load_settings(write(tmp_path, "[rsik]\nmax_positions = 5\n"))
    with pytest.raises(SettingsError, match=r"^settings: risk = 5: must be a table \[risk\]$"):
        load_settings(write(tmp_path, "risk = 5\n"))


PDT_HINT = (
    "removed: FINRA retired the pattern-day-trader rule and Alpaca no longer enforces it; delete the key, "
    "or set risk.day_trade_budget = 3 and risk.day_trade_budget_below_equity = 25000 for a self-imposed "
    "limit like the old rule (README, Risk)"
)


@pytest.mark.parametrize(
    "text, key",
    [
        ("pdt_protection = true", "risk.pdt_protection = true"),
        ("pdt_protection = false", "risk.pdt_protection = false"),
        ("pdt_min_equity = 25000.0", "risk.pdt_min_equity = 25000.0"),
    ],
)
def test_the_removed_pdt_keys_are_refused_with_the_migration(tmp_path, text, key):
    """A file copied from the old settings.toml names the old keys: refused, never mapped
    silently, with one line that says what replaces them."""
    with pytest.raises(SettingsError) as ei:
        load_settings(write(tmp_path, f"[risk]\n{text}\n"))
    assert str(ei.value) == f"settings: {key}: {PDT_HINT}"


def test_an_old_settings_file_stops_the_daemon_with_exit_2_and_the_migration(tmp_path):
    import subprocess
    import sys

    old = write(tmp_path, "[risk]\npdt_protection = true\npdt_min_equity = 25000.0\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--settings", old, "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "risk.pdt_protection = true: removed" in lines[0], proc.stderr
    assert "risk.day_trade_budget" in lines[0]
    assert not (tmp_path / "d").exists()  # refused before anything started


def test_the_day_trade_budget_is_off_by_default():
    r = Settings().risk
    assert (r.day_trade_budget, r.day_trade_window_days, r.day_trade_budget_below_equity) == (0, 5, 0.0)


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match="invalid TOML"):
        load_settings(write(tmp_path, "[risk\n"))


def test_live_needs_both_switches():
    s = settings_from_dict({"alpaca": {"paper": False, "allow_live": True}})
    assert s.alpaca.live
    assert not Settings().alpaca.live
    with pytest.raises(SettingsError, match="is the live endpoint but alpaca.paper = true"):
        settings_from_dict({"alpaca": {"trading_url": "https://api.alpaca.markets"}})


def test_venue_mode_resolution(tmp_path):
    s = Settings()
    assert resolve_venue_mode(s, {}) == "embedded"
    keys = {"APCA_API_KEY_ID": "k" * 20, "APCA_API_SECRET_KEY": "s" * 40}
    assert resolve_venue_mode(s, keys) == "alpaca"
    emb = settings_from_dict({"venue": {"mode": "embedded"}})
    assert resolve_venue_mode(emb, keys) == "embedded"
    alp = settings_from_dict({"venue": {"mode": "alpaca"}})
    with pytest.raises(SettingsError, match='venue.mode = "alpaca": needs APCA_API_KEY_ID'):
        resolve_venue_mode(alp, {})
    # credentials directory counts as configured keys
    (tmp_path / "APCA_API_KEY_ID").write_text("kid\n")
    (tmp_path / "APCA_API_SECRET_KEY").write_text("sec\n")
    assert resolve_venue_mode(s, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "alpaca"


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().risk.max_positions = 3  # type: ignore[misc]  # the refused write is the test


def test_regime_thresholds_are_percent_settings():
    s = settings_from_dict({"analyzer": {"high_vol_bar_pct": 0.25}})
    assert s.analyzer.high_vol_bar_pct == 0.25
    with pytest.raises(SettingsError, match=r"analyzer.high_vol_atr_pct = 0: must be > 0 and < 100"):
        settings_from_dict({"analyzer": {"high_vol_atr_pct": 0}})


def test_a_section_built_in_code_checks_itself():
    """Each section validates in __post_init__: a hand-built one obeys the file's rules and messages."""
    from stockade.config.settings import RiskSettings, SupervisionSettings, TradingSettings

    with pytest.raises(SettingsError, match=r"^settings: risk\.max_positions = 0: must be >= 1$"):
        RiskSettings(max_positions=0)
    with pytest.raises(SettingsError, match=r"^settings: risk\.min_price = 50\.0: must be < risk\.max_price \(10\)$"):
        RiskSettings(min_price=50.0, max_price=10.0)
    with pytest.raises(SettingsError, match=r"^settings: supervision\.max_restarts = 0: must be >= 1$"):
        msgspec.structs.replace(SupervisionSettings(), max_restarts=0)
    # The rules between sections are the whole Settings' own.
    with pytest.raises(SettingsError, match=r"^settings: trading\.warmup_bars = 10: must be at least 34"):
        Settings(trading=TradingSettings(warmup_bars=10))


def test_sections_build_their_components_params_with_the_same_names():
    """[risk], [voter] and [analyzer] build their components' params beside them; every shared key arrives unrenamed."""
    s = settings_from_dict(
        {
            "risk": {"max_positions": 7, "circuit_breaker_failures": 9, "max_orders_per_min": 11, "stop_loss_pct": 1.5},
            "voter": {"min_weight": 0.2, "weights": {"momentum": 2.0}, "adaptive_window": 10},
            "analyzer": {"volume_n": 25, "breakout_n": 30, "ema_fast": 8, "ema_slow": 21},
        }
    )
    limits, ensemble, features = s.risk.to_params(), s.voter.to_params(), s.analyzer.to_params()
    brackets, regime = s.risk.bracket_params(), s.analyzer.regime_params()
    pairs = ((s.risk, limits), (s.risk, brackets), (s.voter, ensemble), (s.analyzer, features), (s.analyzer, regime))
    for section, params in pairs:
        shared = set(section.__struct_fields__) & set(params.__struct_fields__)
        assert shared, type(params).__name__
        for name in shared:
            assert getattr(params, name) == getattr(section, name), name
    assert (limits.max_positions, limits.circuit_breaker_failures, limits.max_orders_per_min) == (7, 9, 11)
    assert limits.stop_loss_pct == 1.5 and ensemble.weights == {"momentum": 2.0} and ensemble.min_weight == 0.2
    assert ensemble.decay == pytest.approx(0.9)  # the last ~adaptive_window outcomes carry the weight
    assert (features.volume_n, features.breakout_n, features.macd_fast, features.macd_slow) == (25, 30, 8, 21)
    assert (brackets.method, brackets.stop_loss_pct, brackets.take_profit_pct) == ("percent", 1.5, 4.0)
    assert regime.high_vol_bar_pct == 0.4


def test_alert_levels_and_strategy_names_are_defined_once():
    from typing import get_args

    from stockade.codecs.messages import AlertLevel
    from stockade.config.names import ALERT_LEVELS, STRATEGY_NAMES
    from stockade.trading.strategies import REGISTRY

    assert get_args(AlertLevel) == ALERT_LEVELS == ("INFO", "WARNING", "CRITICAL", "EMERGENCY")
    assert set(REGISTRY) == set(STRATEGY_NAMES)
    with pytest.raises(SettingsError, match=r"unknown strategy 'lstm' \(known: momentum, mean_reversion, breakout\)"):
        settings_from_dict({"analyzer": {"strategies": ["momentum", "lstm"]}})
