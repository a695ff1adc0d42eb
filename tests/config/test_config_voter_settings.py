"""[voter] keys of the ensemble: bad values stop start-up naming the key and the value."""

from __future__ import annotations

import pytest

from stockade.config.settings import Settings, SettingsError, load_settings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_confidence = 1.5", "settings: voter.min_confidence = 1.5: must be between 0 and 1"),
        (
            "min_confidence = 0.9",
            "settings: voter.hybrid_auto_confidence = 0.8: must be >= voter.min_confidence and <= 1",
        ),
        (
            "hybrid_auto_confidence = 0.5",
            "settings: voter.hybrid_auto_confidence = 0.5: must be >= voter.min_confidence",
        ),
        ("score_horizon_s = 0", "settings: voter.score_horizon_s = 0: must be > 0"),
        ("score_dead_band_bps = -1", "settings: voter.score_dead_band_bps = -1: must be >= 0"),
        ("defensive_size_scale = 0", "settings: voter.defensive_size_scale = 0: must be > 0"),
        ("defensive_size_scale = 2", "settings: voter.defensive_size_scale = 2: must be between 0 and 1"),
        ("defensive_drawdown_pct = 0", "settings: voter.defensive_drawdown_pct = 0: must be > 0 and <= 100"),
        ("defensive_hit_rate = 1.2", "settings: voter.defensive_hit_rate = 1.2: must be between 0 and 1"),
        ("hybrid_auto_threshold = 0.5", "settings: unknown key voter.hybrid_auto_threshold"),
    ],
)
def test_bad_voter_values(tmp_path, text, message):
    path = tmp_path / "s.toml"
    path.write_text(f"[voter]\n{text}\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert str(info.value).startswith(message)


def test_voter_defaults():
    v = Settings().voter
    assert (v.threshold, v.min_confidence, v.hybrid_auto_confidence) == (0.05, 0.65, 0.8)
    assert v.weight_of("gbm") == 1.0  # an ML member not configured weighs 1
