from pathlib import Path

import msgspec
import pytest

from stockade.ops.settings import (
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
        ("[trading]\nsymbols = ['aapl']\n", "settings: trading.symbols = [\"aapl\"]: 'aapl' is not an upper-case ticker"),
        ("[trading]\nsymbols = []\n", "settings: trading.symbols = []: must list at least one symbol"),
        ("[trading]\nsymbols = ['']\n", "settings: trading.symbols = [\"\"]: '' is not an upper-case ticker"),
        ("[alpaca]\ndata_url = 'not a url'\n", "settings: alpaca.data_url = \"not a url\": must be a URL like https://host[:port][/path]"),
        ("[alpaca]\nstream_url = 'https://x/v2/iex'\n", "settings: alpaca.stream_url = \"https://x/v2/iex\": must be a URL like wss://host[:port][/path]"),
        ("[alpaca]\npaper = false\n", "settings: alpaca.paper = false: live trading also needs alpaca.allow_live = true"),
        ("[telemetry]\nquote_sample_ratio = 1.5\n", "settings: telemetry.quote_sample_ratio = 1.5: must be between 0 and 1"),
        ("[risk]\nmin_price = 50.0\nmax_price = 10.0\n", "settings: risk.min_price = 50.0: must be < risk.max_price (10)"),
        ("[orders]\nemergency_reserve = 200\n", "settings: orders.emergency_reserve = 200: must be < orders.rate_limit_per_min (160)"),
        ("[analyzer]\nsma_fast = 40\n", "settings: analyzer.sma_fast = 40: must be < analyzer.sma_slow (30)"),
        ("[analyzer]\nstrategies = ['momentun']\n", "settings: analyzer.strategies = [\"momentun\"]: unknown strategy 'momentun' (known: momentum, mean_reversion, breakout)"),
        ("[risk]\nstop_loss_pct = nan\n", "settings: risk.stop_loss_pct = nan: must be > 0 and <= 100"),
        ("[voter.weights]\nmomentum = -1.0\n", "settings: voter.weights.momentum = -1.0: must be >= 0"),
        ("[alerts]\nsmtp_host = 'mail'\n", "settings: alerts.smtp_from = \"\": must be an e-mail address when alerts.smtp_host is set"),
        ("[runtime]\ncpu_affinity = [-1]\n", "settings: runtime.cpu_affinity = [-1]: -1 is not a CPU number (0, 1, ...)"),
        ("[runtime]\ncpu_affinity = [1, 1]\n", "settings: runtime.cpu_affinity = [1, 1]: lists a CPU twice"),
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
        ("[risk]\nmax_positions = 'five'\n", "settings: risk.max_positions = \"five\": expected int, got str"),
        ("[risk]\nmax_position_pct = true\n", "settings: risk.max_position_pct = true: expected float, got bool"),
        ("[risk]\nmax_positions = 2.5\n", "settings: risk.max_positions = 2.5: expected int, got float"),
        ("[venue]\nmode = 'paper'\n", "settings: venue.mode = \"paper\": invalid enum value 'paper'"),
        ("[trading]\nsymbols = ['SPY', 3]\n", "settings: trading.symbols[1] = 3: expected str, got int"),
        ("[voter.weights]\nmomentum = 'x'\n", "settings: voter.weights = {\"momentum\": \"x\"}: expected float, got str"),
    ],
)
def test_wrong_types(tmp_path, text, expected):
    with pytest.raises(SettingsError) as ei:
        load_settings(write(tmp_path, text))
    assert str(ei.value) == expected


def test_unknown_key_and_section_are_errors(tmp_path):
    with pytest.raises(SettingsError, match=r"^settings: unknown key risk\.max_postion_pct \(did you mean 'max_position_pct'\?\)$"):
        load_settings(write(tmp_path, "[risk]\nmax_postion_pct = 5\n"))
    with pytest.raises(SettingsError, match=r"^settings: unknown section \[rsik\] \(did you mean 'risk'\?\)$"):
        load_settings(write(tmp_path, "[rsik]\nmax_positions = 5\n"))
    with pytest.raises(SettingsError, match=r"^settings: risk = 5: must be a table \[risk\]$"):
        load_settings(write(tmp_path, "risk = 5\n"))


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
        Settings().risk.max_positions = 3  # type: ignore[misc]


def test_regime_thresholds_are_percent_settings():
    s = settings_from_dict({"analyzer": {"high_vol_bar_pct": 0.25}})
    assert s.analyzer.high_vol_bar_pct == 0.25
    with pytest.raises(SettingsError, match=r"analyzer.high_vol_atr_pct = 0: must be > 0 and < 100"):
        settings_from_dict({"analyzer": {"high_vol_atr_pct": 0}})
