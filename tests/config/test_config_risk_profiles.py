"""Risk profiles: named presets under the keys a settings file sets, and the new risk keys' checks."""

from __future__ import annotations

import pytest

from stockade.config.settings import RISK_PROFILES, RiskSettings, Settings, SettingsError, load_settings


def load(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return load_settings(str(p))


def test_default_profile_is_the_defaults(tmp_path):
    assert load(tmp_path, '[risk]\nprofile = "default"\n') == Settings()


@pytest.mark.parametrize("name", ["conservative", "aggressive"])
def test_profile_sets_its_keys(tmp_path, name):
    risk = load(tmp_path, f'[risk]\nprofile = "{name}"\n').risk
    assert risk.profile == name
    for key, value in RISK_PROFILES[name].items():
        assert getattr(risk, key) == value, key
    # keys the preset does not name keep their defaults
    assert risk.stop_loss_pct == RiskSettings().stop_loss_pct


def test_profiles_are_ordered_by_appetite():
    c, d, a = RISK_PROFILES["conservative"], RiskSettings(), RISK_PROFILES["aggressive"]
    for key in (
        "max_position_pct",
        "risk_per_trade_pct",
        "daily_loss_limit_pct",
        "loss_breaker_pct",
        "max_portfolio_risk_pct",
    ):
        assert c[key] < getattr(d, key) < a[key], key


def test_a_key_in_the_file_wins_over_the_profile(tmp_path):
    risk = load(tmp_path, '[risk]\nprofile = "conservative"\nmax_position_pct = 7.5\n').risk
    assert risk.max_position_pct == 7.5  # the file's own value
    assert risk.risk_per_trade_pct == RISK_PROFILES["conservative"]["risk_per_trade_pct"]  # the preset's


def test_unknown_profile_names_the_key_and_value(tmp_path):
    with pytest.raises(SettingsError) as e:
        load(tmp_path, '[risk]\nprofile = "yolo"\n')
    assert str(e.value) == (
        'settings: risk.profile = "yolo": unknown profile (known: conservative, default, aggressive)'
    )


def test_profile_values_still_validated(tmp_path):
    # the conservative daily loss limit is 1.5: a breaker under it is refused
    with pytest.raises(SettingsError) as e:
        load(tmp_path, '[risk]\nprofile = "conservative"\nloss_breaker_pct = 1.0\n')
    assert str(e.value).startswith("settings: risk.loss_breaker_pct = 1.0: must be > risk.daily_loss_limit_pct (1.5)")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[risk]\nfractional = true\n", "settings: risk.fractional = true: fractional shares are not supported"),
        (
            "[risk]\nloss_breaker_pct = 3.0\n",
            "settings: risk.loss_breaker_pct = 3.0: must be > risk.daily_loss_limit_pct (3)",
        ),
        ("[risk]\nmax_sector_pct = 0.0\n", "settings: risk.max_sector_pct = 0.0: must be > 0 and <= 100"),
        ("[risk]\nconfidence_floor = 1.5\n", "settings: risk.confidence_floor = 1.5: must be between 0 and 1"),
        (
            "[risk]\nloss_alert_ratio = 1.0\n",
            "settings: risk.loss_alert_ratio = 1.0: must be between 0 and 1 (exclusive)",
        ),
        ("[risk]\nflatten_before_close_min = -1.0\n", "settings: risk.flatten_before_close_min = -1.0: must be >= 0"),
        ('[risk.sectors]\nAAPL = ""\n', 'settings: risk.sectors.AAPL = "": must name a sector'),
    ],
)
def test_new_risk_keys_are_checked(tmp_path, text, expected):
    with pytest.raises(SettingsError) as e:
        load(tmp_path, text)
    assert str(e.value).startswith(expected), str(e.value)


def test_sectors_table_replaces_the_default(tmp_path):
    risk = load(tmp_path, '[risk.sectors]\nXOM = "energy"\n').risk
    assert risk.sectors == {"XOM": "energy"}
