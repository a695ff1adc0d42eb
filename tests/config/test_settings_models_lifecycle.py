"""[models] lifecycle keys: defaults, and a bad value refused with one line naming key and value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stockade.config.settings import Settings, SettingsError, load_settings, settings_from_dict

REPO = Path(__file__).resolve().parents[2]


def test_defaults_keep_the_lifecycle_off_and_sane():
    m = Settings().models
    assert m.lifecycle is False and m.retrain_at == "16:30"
    assert 0 < m.hit_rate_margin < 1 and m.min_scored_votes >= 1 and m.psi_threshold > 0
    assert settings_from_dict({"models": {"retrain_at": ""}}).models.retrain_at == ""  # no scheduled retrain


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("retrain_at", '"25:00"', 'models.retrain_at = "25:00": must be HH:MM'),
        ("retrain_at", '"4pm"', 'models.retrain_at = "4pm": must be HH:MM'),
        ("hit_rate_margin", "-0.1", "models.hit_rate_margin = -0.1: must be >= 0 and < 1"),
        ("promote_margin", "1.5", "models.promote_margin = 1.5: must be >= 0 and < 1"),
        ("min_scored_votes", "0", "models.min_scored_votes = 0: must be >= 1"),
        ("psi_threshold", "0.0", "models.psi_threshold = 0.0: must be > 0"),
        ("train_timeout_s", "0.0", "models.train_timeout_s = 0.0: must be > 0"),
        ("score_horizon_s", "-1.0", "models.score_horizon_s = -1.0: must be >= 0"),
        ("retrain_cooldown_s", "nan", "models.retrain_cooldown_s = nan: must be >= 0"),
    ],
)
def test_bad_lifecycle_values_name_key_and_value(tmp_path, key, value, expected):
    path = tmp_path / "s.toml"
    path.write_text(f"[models]\n{key} = {value}\n")
    with pytest.raises(SettingsError) as ei:
        load_settings(str(path))
    text = str(ei.value)
    assert text.startswith(f"settings: {expected}") and "\n" not in text, text


def test_the_daemon_exits_2_with_one_line_on_a_bad_lifecycle_value(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[models]\nretrain_at = "16h30"\n')
    proc = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--settings", str(path), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'models.retrain_at = "16h30": must be HH:MM' in lines[0], proc.stderr
