"""Walk-forward folds and `train`'s symbols and models on Ray, a local pool and one process: the same results.

Real parts: a local Ray started here (two CPUs, no dashboard, one session for
the module), spawned pool processes, the real training and backtests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from stockade.config.settings import settings_from_dict
from stockade.ops.backtest import Backtest
from stockade.ops.train import main as train_main
from stockade.ops.walk_forward import walk_forward
from stockade.ops.workers import Backend

ray = pytest.importorskip("ray", reason="the [cluster] extra (in [test]) brings Ray")

BACKENDS = {
    "inline": Backend(kind="inline"),
    "pool": Backend(kind="pool", workers=2),
    "ray": Backend(kind="ray", workers=2),
}


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _walk_forward(tmp_path: Path, backend: Backend) -> dict:
    settings = settings_from_dict({"models": {"names": ["logit"]}, "logging": {"level": "WARNING"}})
    args = argparse.Namespace(
        start="2026-06-01",
        end="2026-06-03",
        symbols="AAPL",
        source="sim",
        file=None,
        seed=4,
        out=str(tmp_path / "wf"),
        data_dir=str(tmp_path / "data"),
        walk_forward=2,
    )
    summary = walk_forward(Backtest.prepare(settings, args), 2, backend=backend)
    for fold in summary["folds"]:
        fold["out"] = Path(fold["out"]).name
    return summary


def test_walk_forward_folds_on_pool_and_ray_match_one_process(tmp_path):
    results = {kind: _walk_forward(tmp_path / kind, b) for kind, b in BACKENDS.items()}
    assert [f["fold"] for f in results["inline"]["folds"]] == [1, 2]
    assert results["inline"]["folds"][0]["orders"] + results["inline"]["folds"][1]["orders"] > 0
    assert results["pool"] == results["inline"]
    assert results["ray"] == results["inline"]


def test_train_spread_over_symbols_and_models_writes_the_same_files(tmp_path):
    common = ["--symbols", "AAPL,MSFT", "--days", "1", "--folds", "3", "--models", "logit,gbm"]
    flags = {"inline": [], "pool": ["--workers", "2"], "ray": ["--ray", "auto"]}
    files = {}
    for kind, extra in flags.items():
        out = tmp_path / kind
        assert train_main([*common, "--out", str(out), *extra]) == 0
        files[kind] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert set(files["inline"]) == {"logit.onnx", "gbm.onnx", "manifest.json", "reference.json"}
    assert files["pool"] == files["inline"]
    assert files["ray"] == files["inline"]
