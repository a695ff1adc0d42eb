"""--walk-forward K: windows, training with `train`'s code on each window, testing on the next."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stockade.ops.backtest_data import BadInput
from stockade.ops.walk_forward import sessions, windows
from stockade.trading.model_store import MANIFEST_NAME

ROOT = Path(__file__).resolve().parents[2]


def test_windows_are_contiguous_and_cover_every_session():
    days = sessions(dt.date(2026, 6, 1), dt.date(2026, 6, 12))  # two weeks: 10 sessions
    assert len(days) == 10
    wins = windows(days, 2)
    assert [len(w) for w in wins] == [4, 3, 3]
    assert [d for w in wins for d in w] == days
    with pytest.raises(BadInput, match="at least 11 trading sessions"):
        windows(days, 10)


def test_walk_forward_trains_on_each_window_and_tests_on_the_next(tmp_path):
    out = tmp_path / "wf"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "backtest",
            "--walk-forward",
            "1",
            "--start",
            "2026-06-01",
            "--end",
            "2026-06-04",
            "--symbols",
            "AAPL",
            "--data-dir",
            str(tmp_path / "data"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "walk_forward.json").read_text())
    (fold,) = summary["folds"]
    assert fold["train"] == ["2026-06-01", "2026-06-02"] and fold["test"] == ["2026-06-03", "2026-06-04"]
    manifest = json.loads((out / "fold-1" / "models" / MANIFEST_NAME).read_text())
    test_start = int(dt.datetime(2026, 6, 3, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
    assert manifest["training"]["end_ns"] < test_start  # trained on its window only, never on the test days
    assert set(fold["models_holdout_auc"]) == {m["name"] for m in manifest["models"]}
    assert summary["stitched_oos_return_pct"] == pytest.approx(fold["return_pct"], abs=1e-3)
    # A fold's out dir is a backtest's: report reads it.
    rep = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "report", "--data-dir", str(out / "fold-1"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert rep.returncode == 0, rep.stderr
    assert (out / "fold-1" / "tearsheet.html").exists()
