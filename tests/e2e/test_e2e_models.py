"""Trained models in the real daemon: a corrupt or mismatched model file is refused
with one clear error and an alert, and the daemon keeps trading on the rest."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
from daemon_harness import RUN_PY, DaemonProcess, _child_env, settings_text, wait_orders
from waiting import wait_for

from stockade.trading.model_store import (
    MANIFEST_NAME,
    SHIPPED_DIR,
    read_manifest,
    write_manifest,
)


def _settings(models: Path) -> str:
    # Any clear push trades (min_confidence 0): the test is about who votes, not
    # about how often the ensemble is sure enough.
    return settings_text(None, models={"dir": str(models)}, voter={"min_confidence": 0.0})


def _models_copy(root: Path) -> Path:
    d = root / "models"
    shutil.copytree(SHIPPED_DIR, d)
    return d


def _voter_votes(data_dir: Path) -> list[set[str]]:
    """The members that voted in each stored voter decision (daemon stopped)."""
    from stockade.storage.store import Store

    store = Store.open(data_dir, readonly=True)
    try:
        return [{v.model for v in rec.votes} for _, rec in store.voter_decisions.items()]
    finally:
        store.close()


def _alerts(data_dir: Path) -> list[dict]:
    path = data_dir / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _error_lines(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if "ERROR" in line and text in line]


def test_corrupt_model_is_refused_once_alerted_and_the_rest_keep_trading(short_dir):
    models = _models_copy(short_dir)
    data = bytearray((models / "gbm.onnx").read_bytes())
    data[100:120] = b"\x00" * 20  # bad bytes: the checksum no longer matches
    (models / "gbm.onnx").write_bytes(bytes(data))
    daemon = DaemonProcess(short_dir / "data", _settings(models))
    try:
        daemon.wait_ready()
        wait_orders(daemon, 2, timeout=90)
        status = daemon.status()
        assert status["trading_state"] == "ACTIVE"
        assert all(a["alive"] for a in status["actors"] if a["name"].startswith("analyzer:"))
        log = daemon.log()
        # One error for the process, not one per analyzer (five symbols).
        lines = _error_lines(log, "checksum mismatch")
        assert len(lines) == 1, lines
        assert str(models / "gbm.onnx") in lines[0] and "python run.py train" in lines[0]
    finally:
        assert daemon.stop() == 0
    refused = [a for a in _alerts(daemon.data_dir) if a.get("key", "").startswith("model-refused:")]
    assert refused and "gbm.onnx" in refused[0]["text"], _alerts(daemon.data_dir)
    votes = _voter_votes(daemon.data_dir)
    assert votes, "no voter decisions stored"
    everyone = set().union(*votes)
    assert "gbm" not in everyone
    assert {"forest", "logit", "mlp"} <= everyone, everyone  # the good models still vote
    assert {"momentum", "mean_reversion", "breakout"} & everyone


def test_model_with_mismatched_features_is_refused_and_the_rest_keep_trading(short_dir):
    models = _models_copy(short_dir)
    manifest = read_manifest(models)
    # The mlp claims a feature this code does not build (e.g. trained by a newer version).
    entries = tuple(
        msgspec.structs.replace(e, features=("order_flow",) + e.features[1:]) if e.name == "mlp" else e
        for e in manifest.models
    )
    write_manifest(models, msgspec.structs.replace(manifest, models=entries))
    daemon = DaemonProcess(short_dir / "data", _settings(models))
    try:
        daemon.wait_ready()
        wait_orders(daemon, 2, timeout=90)
        assert daemon.status()["trading_state"] == "ACTIVE"
        lines = _error_lines(daemon.log(), "reads features this code does not build")
        assert len(lines) == 1 and str(models / "mlp.onnx") in lines[0] and "order_flow" in lines[0], lines
    finally:
        assert daemon.stop() == 0
    assert any(a.get("key", "") == f"model-refused:{models / 'mlp.onnx'}" for a in _alerts(daemon.data_dir))
    everyone = set().union(*_voter_votes(daemon.data_dir))
    assert "mlp" not in everyone and {"gbm", "forest", "logit"} <= everyone, everyone


def test_manifest_of_another_feature_version_refuses_all_models_and_the_daemon_stays_up(short_dir):
    models = _models_copy(short_dir)
    manifest = read_manifest(models)
    write_manifest(models, msgspec.structs.replace(manifest, feature_version=manifest.feature_version + 1))
    daemon = DaemonProcess(short_dir / "data", _settings(models))
    try:
        daemon.wait_ready()
        wait_for(
            lambda: any(a.get("key", "").startswith("model-refused:") for a in _alerts(daemon.data_dir)),
            30,
            0.1,
            "the model-refused alert delivered",
        )
        lines = _error_lines(daemon.log(), "feature version")
        assert len(lines) == 1, lines
        assert str(models / MANIFEST_NAME) in lines[0] and "python run.py train" in lines[0]
        # Every analyzer runs on (rule strategies only), none restarted, trading not halted.
        wait_for(lambda: daemon.status()["market_data"], 30, 0.1, "market data stats")
        status = daemon.status()
        analyzers = [a for a in status["actors"] if a["name"].startswith("analyzer:")]
        assert len(analyzers) == 5 and all(a["alive"] and a["restarts"] == 0 for a in analyzers), analyzers
        assert status["trading_state"] == "ACTIVE" and status["healthy"]
    finally:
        assert daemon.stop() == 0


def test_train_from_a_running_venue_through_alpaca_py(short_dir, venue):
    out = short_dir / "trained"
    r = subprocess.run(
        [
            sys.executable,
            RUN_PY,
            "train",
            "--source",
            "venue",
            "--data-url",
            venue.base_url,
            "--out",
            str(out),
            "--symbols",
            "AAPL,MSFT",
            "--days",
            "1",
            "--models",
            "logit",
            "--folds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=_child_env({"APCA_API_KEY_ID": venue.key, "APCA_API_SECRET_KEY": venue.secret}),
    )
    assert r.returncode == 0, r.stderr
    assert venue.secret not in r.stdout + r.stderr
    m = read_manifest(out)
    assert m.training.source == "venue" and m.training.symbols == ("AAPL", "MSFT")
    assert m.training.rows > 1000  # a day of minute bars per symbol, less warm-up and horizon
    assert [e.name for e in m.models] == ["logit"]
