"""`python run.py train` as a real subprocess, the `[models]` settings and the analyzer's loading."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from stockade.actors.analyzer import load_members
from stockade.config.settings import SettingsError, settings_from_dict
from stockade.ops.bar_sources import sim_bars
from stockade.trading.datasets import build_dataset
from stockade.trading.model_lifecycle import REFERENCE_NAME, Reference, reference_of
from stockade.trading.model_store import SHIPPED_DIR, clear_cache, read_manifest

REPO = Path(__file__).resolve().parents[2]


def _train(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "CREDENTIALS_DIRECTORY"))}
    return subprocess.run(
        [sys.executable, str(REPO / "run.py"), "train", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )


@pytest.fixture(autouse=True)
def _fresh_store():
    clear_cache()
    yield
    clear_cache()


def test_train_writes_models_and_manifest_with_progress(tmp_path):
    out = tmp_path / "models"
    r = _train(
        "--source",
        "sim",
        "--out",
        str(out),
        "--symbols",
        "AAPL,SPY",
        "--days",
        "1",
        "--seed",
        "3",
        "--models",
        "logit,mlp",
        "--folds",
        "3",
        "--horizon",
        "3",
    )
    assert r.returncode == 0, r.stderr
    for model in ("logit", "mlp"):
        for fold in (1, 2, 3):
            assert f"train: {model}: fold {fold}/3:" in r.stderr
        assert f"train: {model}: hold-out" in r.stderr
    assert f"models written to {out}" in r.stdout
    m = read_manifest(out)
    assert [e.name for e in m.models] == ["logit", "mlp"]
    assert m.training.symbols == ("AAPL", "SPY") and m.training.horizon_bars == 3 and m.training.source == "sim"
    assert sorted(p.name for p in out.iterdir()) == ["logit.onnx", "manifest.json", "mlp.onnx", "reference.json"]
    # The lifecycle's drift reference: the distribution of the very rows trained on.
    data = build_dataset(sim_bars(["AAPL", "SPY"], 3, 1.0), 3, 0.0, settings_from_dict({}).analyzer.to_params())
    got = msgspec.json.decode((out / REFERENCE_NAME).read_bytes(), type=Reference)
    assert got == reference_of(data.X) and got.rows == m.training.rows


def test_the_shipped_reference_is_the_shipped_models_training_distribution():
    """The drift check works on the shipped set: its reference.json is the distribution of
    the rows its manifest says it was trained on (`train --source sim` with the defaults)."""
    m = read_manifest(SHIPPED_DIR)
    t = m.training
    days = settings_from_dict({}).models.train_days  # the default the shipped set was trained with
    data = build_dataset(sim_bars(t.symbols, t.seed, days), t.horizon_bars, t.label_threshold_bps, m.feature_params)
    assert data.rows == t.rows
    shipped = msgspec.json.decode((SHIPPED_DIR / REFERENCE_NAME).read_bytes(), type=Reference)
    assert shipped == reference_of(data.X)


def test_train_default_out_is_the_data_dir_models_folder_the_daemon_prefers(tmp_path):
    r = _train(
        "--data-dir", str(tmp_path / "data"), "--symbols", "MSFT", "--days", "1", "--models", "logit", "--folds", "2"
    )
    assert r.returncode == 0, r.stderr
    settings = settings_from_dict({})
    members, errors = load_members(settings, tmp_path / "data")
    assert errors == [] and [m.name for m in members] == ["logit"]
    assert members[0].model.path == tmp_path / "data" / "models" / "logit.onnx"


@pytest.mark.parametrize(
    "args, text",
    [
        (("--models", "gbm,transformer"), "unknown ['transformer']"),
        (("--days", "0"), "--days 0.0: must be > 0"),
        (("--source", "venue"), "needs APCA_API_KEY_ID"),
    ],
)
def test_train_bad_usage_exits_2_with_one_line(tmp_path, args, text):
    r = _train("--out", str(tmp_path / "m"), *args)
    assert r.returncode == 2 and text in r.stderr, r.stderr
    assert not (tmp_path / "m").exists()


def test_models_settings_validation_names_the_key():
    with pytest.raises(SettingsError, match=r"models.names = .*lists a model twice"):
        settings_from_dict({"models": {"names": ["gbm", "gbm"]}})
    with pytest.raises(SettingsError, match=r"models.horizon_bars = 0: must be >= 1"):
        settings_from_dict({"models": {"horizon_bars": 0}})
    with pytest.raises(SettingsError, match=r"unknown key models.dirr"):
        settings_from_dict({"models": {"dirr": "x"}})


def test_analyzer_members_follow_the_settings(tmp_path):
    shipped, errors = load_members(settings_from_dict({}), tmp_path)
    assert errors == [] and sorted(m.name for m in shipped) == ["forest", "gbm", "logit", "mlp"]
    assert all(m.model.path.parent == SHIPPED_DIR for m in shipped)
    assert load_members(settings_from_dict({"models": {"enabled": False}}), tmp_path) == ([], [])
    some, _ = load_members(settings_from_dict({"models": {"names": ["gbm", "mlp"]}}), tmp_path)
    assert [m.name for m in some] == ["gbm", "mlp"]
    # Other indicator periods than the shipped models were trained with: refused, clearly.
    none, errors = load_members(settings_from_dict({"analyzer": {"rsi": 9}}), tmp_path)
    assert none == [] and "rsi 14 (analyzer: 9)" in str(errors[0])


def test_bench_reports_training_side_by_side_inference_and_per_quote_cost():
    from stockade.bench.trading import bench_models

    r = bench_models(quick=True)
    for name in ("gbm", "forest", "logit", "mlp"):
        assert r[f"train_{name}_s"] > 0
        side = r[f"infer_{name}_us"]
        assert side["onnxruntime"]["n"] == side["sklearn"]["n"] == 300
    per_quote = r["per_quote_us"]
    assert per_quote["vector_and_models"]["count"] == 4 and per_quote["total"]["n"] == 3000
    assert per_quote["total"]["p50"] >= per_quote["indicators"]["p50"]
