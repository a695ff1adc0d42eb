"""The challenger job's scoring (ops/retrain.py): both sets scored on the same rows,
and a corrupt or incomplete set refused as the daemon's loading refuses it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from stockade.ops.bar_sources import sim_bars
from stockade.ops.retrain import _scores
from stockade.trading.datasets import build_dataset
from stockade.trading.features import FeatureParams
from stockade.trading.model_store import SHIPPED_DIR, ModelError, load_models


@pytest.fixture(scope="module")
def rows():
    data = build_dataset(sim_bars(("AAPL", "MSFT"), 3, 0.3), horizon=5)
    return data.X[-400:], data.y[-400:]


def test_scores_are_each_members_accuracy_on_the_given_rows(rows):
    X, y = rows
    got = _scores(SHIPPED_DIR, ("logit", "gbm"), FeatureParams(), X, y)
    loaded, _ = load_models(SHIPPED_DIR, ("logit", "gbm"))
    for m in loaded:
        assert got[m.name] == pytest.approx(float(np.mean((m.p_up_batch(X) > 0.5) == y)))
    assert set(got) == {"logit", "gbm"} and all(0.3 < v < 0.8 for v in got.values())


def test_a_corrupt_member_or_a_missing_one_is_refused(tmp_path, rows):
    X, y = rows
    folder = tmp_path / "models"
    shutil.copytree(SHIPPED_DIR, folder)
    data = bytearray((folder / "logit.onnx").read_bytes())
    data[50:60] = b"\xff" * 10
    (folder / "logit.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum mismatch"):
        _scores(folder, ("logit", "gbm"), FeatureParams(), X, y)
    with pytest.raises(ModelError, match="has no model 'ridge'"):
        _scores(SHIPPED_DIR, ("gbm", "ridge"), FeatureParams(), X, y)
    with pytest.raises(ModelError, match="other indicator periods"):
        _scores(SHIPPED_DIR, ("gbm",), FeatureParams(rsi=9), X, y)
