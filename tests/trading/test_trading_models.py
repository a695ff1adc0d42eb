"""The ML members: feature vector, data set, training, ONNX parity, the model store."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import msgspec
import numpy as np
import pytest

from stockade.codecs.messages import Bar
from stockade.ops.bar_sources import sim_bars
from stockade.trading import feature_vector as fv
from stockade.trading.datasets import (
    build_dataset,
    feature_fingerprint,
    symbol_rows,
)
from stockade.trading.features import FeatureParams, FeatureState
from stockade.trading.model_member import signal_from_probability
from stockade.trading.model_store import (
    MANIFEST_NAME,
    SHIPPED_DIR,
    ModelError,
    clear_cache,
    load_models,
    read_manifest,
    resolve_dir,
    write_manifest,
)
from stockade.trading.training import PARITY_TOL, train_models, train_one

NS_MIN = 60_000_000_000
T0 = 1_700_000_040 * 1_000_000_000 // NS_MIN * NS_MIN


def _walk(n: int, seed: int, scale: float = 1.0) -> list[Bar]:
    rng = np.random.default_rng(seed)
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    vols = rng.lognormal(10, 0.4, n)
    return [
        Bar("TEST", c * scale, c * scale * 1.001, c * scale * 0.999, c * scale, float(v), T0 + i * NS_MIN)
        for i, (c, v) in enumerate(zip(closes, vols, strict=True))
    ]


@pytest.fixture(autouse=True)
def _fresh_store():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="module")
def small_data():
    return build_dataset(sim_bars(("AAPL", "MSFT"), seed=3, days=1.0), horizon=5)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, small_data):
    out = tmp_path_factory.mktemp("models")
    train_models(small_data, out, ("gbm", "forest", "logit", "mlp"), seed=5, source="sim", n_splits=3)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---- the feature vector ------------------------------------------------------------


def test_vector_is_none_until_warm_then_named_float32():
    fs = FeatureState("TEST")
    bars = _walk(200, 1)
    seen_none = False
    for bar in bars:
        fs.on_bar(bar)
        x = fv.vector(fs.features())
        if not fs.ready:
            seen_none = seen_none or x is None
            continue
        assert x is not None and x.dtype == np.float32 and x.shape == (len(fv.FEATURE_NAMES),)
    assert seen_none
    assert len(set(fv.FEATURE_NAMES)) == len(fv.FEATURE_NAMES)
    # ret_lag_0 is the latest bar's log return.
    assert x[fv.FEATURE_INDEX["ret_lag_0"]] == pytest.approx(math.log(bars[-1].close / bars[-2].close), rel=1e-5)


def test_vector_is_scale_free_one_model_serves_every_price():
    a, b = FeatureState("TEST"), FeatureState("TEST")
    a.warm_up(_walk(120, 2, scale=1.0))
    b.warm_up(_walk(120, 2, scale=37.0))
    xa, xb = fv.vector(a.features()), fv.vector(b.features())
    np.testing.assert_allclose(xa, xb, rtol=1e-3, atol=1e-6)


def test_vector_treats_unknown_volume_ratio_as_average():
    fs = FeatureState("TEST")
    fs.warm_up(_walk(120, 3))
    f = msgspec.structs.replace(fs.features(), volume_ratio=None)
    assert fv.vector(f)[fv.FEATURE_INDEX["log_volume_ratio"]] == 0.0
    assert fv.vector(msgspec.structs.replace(f, rsi=None)) is None


# ---- the data set -------------------------------------------------------------------


def test_rows_are_what_the_live_feature_state_sees_and_labels_look_ahead():
    bars = _walk(150, 4)
    X, y, ts = symbol_rows("TEST", bars, horizon=3)
    assert len(X) == len(y) == len(ts) > 50
    by_ts = {b.ts_ns: i for i, b in enumerate(bars)}
    for row in (0, 17, len(X) - 1):
        i = by_ts[int(ts[row])]
        live = FeatureState("TEST")
        live.warm_up(bars[: i + 1])  # the analyzer's warm-up path
        np.testing.assert_array_equal(X[row], fv.vector(live.features()))
        assert y[row] == int(bars[i + 3].close > bars[i].close)
    # The last rows have no label (their horizon runs past the data): dropped.
    assert by_ts[int(ts[-1])] == len(bars) - 1 - 3


def test_threshold_labels_only_moves_bigger_than_the_cost():
    bars = _walk(150, 5)
    _, y0, _ = symbol_rows("TEST", bars, horizon=3)
    _, y50, _ = symbol_rows("TEST", bars, horizon=3, threshold_bps=50.0)
    assert y50.sum() < y0.sum()
    assert np.all(y50 <= y0)


def test_dataset_is_in_time_order_across_symbols_and_a_pure_function_of_the_seed(small_data):
    assert np.all(np.diff(small_data.ts_ns) >= 0)
    assert set(small_data.symbols) == {"AAPL", "MSFT"}
    again = build_dataset(sim_bars(("AAPL", "MSFT"), seed=3, days=1.0), horizon=5)
    np.testing.assert_array_equal(again.X, small_data.X)
    np.testing.assert_array_equal(again.y, small_data.y)
    other = build_dataset(sim_bars(("AAPL", "MSFT"), seed=4, days=1.0), horizon=5)
    assert not np.array_equal(other.X[:100], small_data.X[:100])


# ---- training -------------------------------------------------------------------------


def test_training_is_deterministic_for_a_seed(small_data):
    a = train_one("forest", small_data, seed=11, n_splits=3)
    b = train_one("forest", small_data, seed=11, n_splits=3)
    c = train_one("forest", small_data, seed=12, n_splits=3)
    assert a.onnx == b.onnx and a.entry == b.entry
    X = small_data.X[:, fv.columns(a.entry.features)]
    np.testing.assert_array_equal(a.model.predict_proba(X), b.model.predict_proba(X))
    assert c.onnx != a.onnx  # the seed matters, so equality above is not vacuous


def test_trained_dir_is_byte_reproducible(tmp_path, small_data, trained_dir):
    again = tmp_path / "again"
    train_models(small_data, again, ("gbm", "forest", "logit", "mlp"), seed=5, source="sim", n_splits=3)
    for name in (MANIFEST_NAME, "gbm.onnx", "forest.onnx", "logit.onnx", "mlp.onnx"):
        assert (again / name).read_bytes() == (trained_dir / name).read_bytes(), name


@pytest.mark.parametrize("name", ["gbm", "forest", "logit", "mlp"])
def test_onnxruntime_matches_sklearn_on_held_out_rows(small_data, name):
    t = train_one(name, small_data, seed=5, n_splits=3)
    cut = int(small_data.rows * 0.9)
    held = small_data.X[cut:]
    from stockade.trading.model_store import LoadedModel, new_session

    loaded = LoadedModel(name, t.entry, Path(f"{name}.onnx"), new_session(t.onnx))
    ours = loaded.p_up_batch(held)
    theirs = t.model.predict_proba(held[:, fv.columns(t.entry.features)].astype(np.float32))[:, 1]
    assert len(ours) == len(held) > 100
    assert np.max(np.abs(ours - theirs)) <= PARITY_TOL
    assert t.entry.parity_max_abs_diff <= PARITY_TOL
    # One row at a time (the analyzer's path) gives the same.
    assert loaded.p_up(held[0]) == pytest.approx(theirs[0], abs=PARITY_TOL)


def test_manifest_records_features_window_metrics_and_checksums(trained_dir, small_data):
    m = read_manifest(trained_dir)
    assert m.feature_version == fv.FEATURE_VERSION and m.feature_names == fv.FEATURE_NAMES
    assert m.feature_params == FeatureParams()
    assert m.feature_fingerprint == feature_fingerprint()
    assert m.training.rows == small_data.rows and m.training.seed == 5 and m.training.horizon_bars == 5
    assert m.training.start_ns == int(small_data.ts_ns[0]) and m.training.end_ns == int(small_data.ts_ns[-1])
    assert [e.name for e in m.models] == ["gbm", "forest", "logit", "mlp"]
    for e in m.models:
        data = (trained_dir / e.file).read_bytes()
        assert e.sha256 == hashlib.sha256(data).hexdigest() and e.bytes == len(data)
        assert [f.fold for f in e.folds] == [1, 2, 3]
        # Purged walk-forward: horizon (5 bars) x 2 symbols rows between each training block and
        # its scored block, and between the final fit (holdout.train_rows) and the hold-out.
        purge = 5 * 2
        last = e.folds[-1]
        assert last.train_rows + purge + last.test_rows == e.holdout.train_rows
        assert e.holdout.train_rows + purge + e.holdout.test_rows == small_data.rows
        for f in (*e.folds, e.holdout):
            assert 0.0 <= f.accuracy <= 1.0 and 0.0 <= f.f1 <= 1.0 and f.test_rows > 0
            assert f.auc is None or 0.0 <= f.auc <= 1.0
    mlp = next(e for e in m.models if e.name == "mlp")
    assert set(fv.RETURN_FEATURES) <= set(mlp.features)  # the sequence model reads the returns window


# ---- the model store ------------------------------------------------------------------


def test_load_models_shares_one_single_threaded_session_per_file(trained_dir):
    first, errors = load_models(trained_dir, (), FeatureParams())
    second, _ = load_models(trained_dir, ("logit",), FeatureParams())
    assert errors == [] and [m.name for m in first] == ["gbm", "forest", "logit", "mlp"]
    assert [m.name for m in second] == ["logit"]
    assert second[0].session is next(m for m in first if m.name == "logit").session
    opts = second[0].session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1


def test_corrupt_model_is_refused_by_checksum_and_the_others_still_load(tmp_path, trained_dir):
    d = _copy(trained_dir, tmp_path / "m")
    data = bytearray((d / "gbm.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "gbm.onnx").write_bytes(bytes(data))
    loaded, errors = load_models(d)
    assert [m.name for m in loaded] == ["forest", "logit", "mlp"]
    assert len(errors) == 1 and errors[0].path == str(d / "gbm.onnx")
    assert "checksum mismatch" in str(errors[0]) and "python run.py train" in str(errors[0])


def test_garbage_with_a_matching_checksum_is_refused_by_onnxruntime(tmp_path, trained_dir):
    d = _copy(trained_dir, tmp_path / "m")
    garbage = b"this is not an onnx model"
    (d / "logit.onnx").write_bytes(garbage)
    m = read_manifest(d)
    entries = tuple(
        msgspec.structs.replace(e, sha256=hashlib.sha256(garbage).hexdigest()) if e.name == "logit" else e
        for e in m.models
    )
    write_manifest(d, msgspec.structs.replace(m, models=entries))
    loaded, errors = load_models(d)
    assert "logit" not in [x.name for x in loaded] and len(loaded) == 3
    assert len(errors) == 1 and "onnxruntime cannot load it" in str(errors[0]) and "logit.onnx" in str(errors[0])


def test_feature_version_names_or_periods_mismatch_refuses_every_model(tmp_path, trained_dir):
    m = read_manifest(trained_dir)
    cases = {
        "version": (msgspec.structs.replace(m, feature_version=fv.FEATURE_VERSION + 1), "feature version"),
        "names": (msgspec.structs.replace(m, feature_names=tuple(reversed(m.feature_names))), "feature names differ"),
        "periods": (msgspec.structs.replace(m, feature_params=FeatureParams(rsi=7)), "rsi 7 (analyzer: 14)"),
        # Same names and version, but "rsi" was computed differently when the models were trained.
        "formula": (
            msgspec.structs.replace(
                m,
                feature_fingerprint=tuple(
                    v + 0.01 if i == fv.FEATURE_INDEX["rsi"] else v for i, v in enumerate(m.feature_fingerprint)
                ),
            ),
            "features ['rsi'] differently",
        ),
    }
    for case, (manifest, text) in cases.items():
        d = _copy(trained_dir, tmp_path / case)
        write_manifest(d, manifest)
        loaded, errors = load_models(d, (), FeatureParams())
        assert loaded == [] and len(errors) == 1, case
        assert text in str(errors[0]) and str(d / MANIFEST_NAME) in str(errors[0]), (case, str(errors[0]))


def test_unknown_feature_in_one_model_refuses_that_model(tmp_path, trained_dir):
    d = _copy(trained_dir, tmp_path / "m")
    m = read_manifest(d)
    entries = tuple(
        msgspec.structs.replace(e, features=("spread_bps",) + e.features[1:]) if e.name == "mlp" else e
        for e in m.models
    )
    write_manifest(d, msgspec.structs.replace(m, models=entries))
    loaded, errors = load_models(d)
    assert [x.name for x in loaded] == ["gbm", "forest", "logit"]
    assert "spread_bps" in str(errors[0]) and "mlp.onnx" in str(errors[0])


def test_missing_malformed_manifest_and_unknown_name_are_clear_errors(tmp_path, trained_dir):
    loaded, errors = load_models(tmp_path / "nowhere")
    assert loaded == [] and "cannot read the manifest" in str(errors[0])
    d = _copy(trained_dir, tmp_path / "m")
    (d / MANIFEST_NAME).write_text('{"format": 1, "feature_version": "one"}')
    loaded, errors = load_models(d)
    assert loaded == [] and "malformed manifest" in str(errors[0])
    loaded, errors = load_models(trained_dir, ("logit", "transformer"))
    assert [x.name for x in loaded] == ["logit"] and "has no model 'transformer'" in str(errors[0])
    assert isinstance(errors[0], ModelError)


def test_resolve_dir_prefers_setting_then_trained_models_then_shipped(tmp_path, trained_dir):
    assert resolve_dir(str(tmp_path / "x"), trained_dir) == tmp_path / "x"
    assert resolve_dir("", trained_dir) == trained_dir
    assert resolve_dir("", tmp_path / "empty") == SHIPPED_DIR
    assert resolve_dir("", None) == SHIPPED_DIR


def test_shipped_models_load_with_matching_checksums_and_this_codes_features():
    """Fails after a feature change without retraining; the message says how to regenerate."""
    from stockade.config.settings import Settings

    loaded, errors = load_models(SHIPPED_DIR, (), Settings().analyzer.to_params())
    assert errors == [], (
        "shipped models refused: "
        + "; ".join(map(str, errors))
        + " -- regenerate: python run.py train --source sim --out trading/default_models"
    )
    assert sorted(m.name for m in loaded) == ["forest", "gbm", "logit", "mlp"]
    total = sum((SHIPPED_DIR / m.entry.file).stat().st_size for m in loaded)
    assert total < 1_000_000
    # They run on a real snapshot and give a probability.
    fs = FeatureState("TEST")
    fs.warm_up(_walk(120, 6))
    x = fv.vector(fs.features())
    for m in loaded:
        assert 0.0 <= m.p_up(x) <= 1.0


def test_probability_to_vote():
    up, down, flat = signal_from_probability(0.8), signal_from_probability(0.3), signal_from_probability(0.5)
    assert (up.direction, round(up.confidence, 9)) == (1.0, 0.6)
    assert (down.direction, round(down.confidence, 9)) == (-1.0, 0.4)
    assert (flat.direction, flat.confidence) == (0.0, 0.0)
    nan = signal_from_probability(float("nan"))
    assert (nan.direction, nan.confidence) == (0.0, 0.0)


def test_manifest_cannot_point_outside_the_models_folder(tmp_path, trained_dir):
    d = _copy(trained_dir, tmp_path / "m")
    m = read_manifest(d)
    entries = tuple(
        msgspec.structs.replace(e, file="../elsewhere/logit.onnx") if e.name == "logit" else e for e in m.models
    )
    write_manifest(d, msgspec.structs.replace(m, models=entries))
    loaded, errors = load_models(d)
    assert [x.name for x in loaded] == ["gbm", "forest", "mlp"]
    assert "must be a plain file name" in str(errors[0]) and "'logit'" in str(errors[0])


def test_rows_whose_horizon_spans_a_gap_are_dropped():
    bars = _walk(150, 7)
    gap = 16 * 60 * NS_MIN  # overnight between bar 99 and bar 100
    bars = [b if i < 100 else msgspec.structs.replace(b, ts_ns=b.ts_ns + gap) for i, b in enumerate(bars)]
    _, _, ts = symbol_rows("TEST", bars, horizon=3)
    kept = {int(t) for t in ts}
    assert all(bars[i].ts_ns not in kept for i in (97, 98, 99))  # their next 3 bars are after the gap
    assert bars[96].ts_ns in kept and bars[100].ts_ns in kept
