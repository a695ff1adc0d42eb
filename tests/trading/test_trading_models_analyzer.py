"""The Analyzer actor in-process with trained models: real pykka actors, a real router,
real lmdb and real onnxruntime sessions; the voter and the alerter are recording actors."""

from __future__ import annotations

import hashlib
import math
import queue
import shutil

import msgspec
import numpy as np
import onnx
import pytest
from actor_probes import add_recorder, services, start_actor
from onnx import TensorProto, helper

from stockade.actors.analyzer import Analyzer
from stockade.codecs.messages import Alert, Quote, Vote, Votes
from stockade.config.settings import settings_from_dict
from stockade.storage.store import Store
from stockade.supervisors.router import Router
from stockade.trading.feature_vector import INDICATOR_FEATURES
from stockade.trading.model_store import (
    SHIPPED_DIR,
    ModelEntry,
    clear_cache,
    read_manifest,
    write_manifest,
)

NS_MIN = 60_000_000_000
T0 = 1_700_000_000 * 1_000_000_000 // NS_MIN * NS_MIN
RULES = ("momentum", "mean_reversion", "breakout")


class Harness:
    def __init__(self, tmp_path, models_dir) -> None:
        clear_cache()
        self.settings = settings_from_dict({"models": {"dir": str(models_dir)}, "analyzer": {"evaluate_every_s": 1e-6}})
        self.store = Store.open(tmp_path / "data")
        svc = services(self.settings, self.store)
        self.router = Router()
        self.votes: queue.Queue = queue.Queue()
        self.alerts: queue.Queue = queue.Queue()
        self.sinks = []
        for name, q in (("ensemble_voter", self.votes), ("alerter", self.alerts)):
            ref, _ = add_recorder(self.router, name, q)
            self.sinks.append(ref)
        # No broker: the warm-up fails and it starts cold, as designed.
        self.ref = start_actor(
            self.router, Analyzer, "analyzer:TEST", {"services": svc, "data_dir": str(tmp_path / "data")}
        )

    def feed_minutes(self, minutes: int, start_minute: int = 0, per_minute: int = 4, seed: int = 1) -> int:
        """Quotes of a seeded walk, `per_minute` a minute, so bars close from quotes as live.
        Returns the last quote's recv_ns."""
        rng = np.random.default_rng(seed)
        mid = 100.0
        ts = 0
        for m in range(start_minute, start_minute + minutes):
            for k in range(per_minute):
                mid *= math.exp(rng.normal(0, 0.001))
                ts = T0 + m * NS_MIN + k * (NS_MIN // per_minute)
                self.router.tell("analyzer:TEST", Quote("TEST", mid - 0.01, mid + 0.01, 100.0, 100.0, ts, ts), "test")
        return ts

    def batch(self, timeout: float = 30.0) -> list[Vote]:
        """The next whole evaluation's votes (one quote's batch, one message)."""
        msg = self.votes.get(timeout=timeout)
        assert isinstance(msg, Votes) and msg.symbol == "TEST", msg
        votes = list(msg.votes)
        assert len(votes) == votes[0].batch_size
        assert {v.quote_recv_ns for v in votes} == {votes[0].quote_recv_ns}
        return votes

    def batch_for(self, recv_ns: int, timeout: float = 30.0) -> list[Vote]:
        """Batches in order until the one of the quote received at `recv_ns` (all before it handled)."""
        while True:
            batch = self.batch(timeout)
            if batch[0].quote_recv_ns == recv_ns:
                return batch

    def close(self) -> None:
        self.ref.stop(timeout=10)
        for s in self.sinks:
            s.stop(timeout=10)
        self.store.close()
        clear_cache()


def _broken_model(n_features: int) -> bytes:
    """A valid ONNX graph that loads but fails at run time: reshapes a 1 x 3 row into (-1, 2)."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 2])
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["probabilities"]),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture
def shipped_copy(tmp_path):
    d = tmp_path / "models"
    shutil.copytree(SHIPPED_DIR, d)
    return d


def test_every_evaluation_sends_rules_and_models_as_one_batch(tmp_path, shipped_copy):
    h = Harness(tmp_path, shipped_copy)
    try:
        h.feed_minutes(70)
        batch = h.batch()
        names = sorted(v.model for v in batch)
        assert names == sorted((*RULES, "gbm", "forest", "logit", "mlp"))
        assert all(v.batch_size == 7 and v.symbol == "TEST" for v in batch)
        assert len({v.high_volatility for v in batch}) == 1  # one regime per evaluation
        for v in batch:
            if v.model in RULES:
                continue
            # P(up) -> direction sign(p - 0.5), conviction |2p - 1|, never a hard call from a coin flip.
            assert v.direction in (-1.0, 0.0, 1.0) and 0.0 <= v.confidence < 1.0
        assert h.alerts.empty()
    finally:
        h.close()


def test_a_model_failing_at_run_time_leaves_the_batch_once_with_one_alert(tmp_path, shipped_copy):
    data = _broken_model(3)
    onnx.checker.check_model(onnx.load_from_string(data))
    (shipped_copy / "broken.onnx").write_bytes(data)
    m = read_manifest(shipped_copy)
    template = m.models[0]
    broken = ModelEntry(
        name="broken",
        file="broken.onnx",
        estimator="test",
        features=INDICATOR_FEATURES[:3],
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        folds=template.folds,
        holdout=template.holdout,
        parity_max_abs_diff=0.0,
    )
    write_manifest(shipped_copy, msgspec.structs.replace(m, models=(*m.models, broken)))
    h = Harness(tmp_path, shipped_copy)
    try:
        h.feed_minutes(70)
        first = h.batch()
        assert "broken" not in {v.model for v in first} and first[0].batch_size == 7
        alert = h.alerts.get(timeout=10)
        assert isinstance(alert, Alert) and alert.key.startswith("model-refused:") and "broken.onnx" in alert.text
        assert "failed to run" in alert.text
        last = h.feed_minutes(5, start_minute=70, seed=2)  # later evaluations: the other seven, no new alert
        later = h.batch_for(last)
        assert sorted(v.model for v in later) == sorted(v.model for v in first)
        assert h.ref.is_alive()
        assert h.alerts.empty()
    finally:
        h.close()


def test_refused_models_leave_the_rules_voting_alone_with_one_alert(tmp_path, shipped_copy):
    m = read_manifest(shipped_copy)
    write_manifest(shipped_copy, msgspec.structs.replace(m, feature_version=m.feature_version + 7))
    h = Harness(tmp_path, shipped_copy)
    try:
        alert = h.alerts.get(timeout=10)
        assert "feature version" in alert.text and alert.level == "WARNING"
        h.feed_minutes(70)
        batch = h.batch()
        assert sorted(v.model for v in batch) == sorted(RULES) and batch[0].batch_size == 3
    finally:
        h.close()


def test_one_onnx_call_per_evaluation_for_all_members(tmp_path, shipped_copy, monkeypatch):
    import onnxruntime

    runs = []
    # Either way of running a session counts (the panel runs through an io binding).
    for method in ("run", "run_with_iobinding"):
        real = getattr(onnxruntime.InferenceSession, method)
        monkeypatch.setattr(
            onnxruntime.InferenceSession,
            method,
            lambda self, *a, _real=real, **k: runs.append(1) or _real(self, *a, **k),
        )
    h = Harness(tmp_path, shipped_copy)
    try:
        last = h.feed_minutes(70)
        batches = 0
        while True:
            batch = h.batch()
            assert len([v for v in batch if v.model not in RULES]) == 4  # every member still votes
            batches += 1
            if batch[0].quote_recv_ns == last:
                break
        assert batches > 10
        assert len(runs) == batches  # four members, one call (was four)
    finally:
        h.close()


def test_a_merged_call_that_fails_while_every_member_runs_alone_is_given_up(tmp_path, shipped_copy, monkeypatch):
    from stockade.trading.model_panel import ModelPanel

    merged_calls = []

    def failing(self, x):
        merged_calls.append(1)
        raise RuntimeError("merged graph broken")

    monkeypatch.setattr(ModelPanel, "p_up", failing)
    h = Harness(tmp_path, shipped_copy)
    try:
        last = h.feed_minutes(70)
        batches = 0
        while True:
            batch = h.batch()
            assert len([v for v in batch if v.model not in RULES]) == 4  # the members vote, one by one
            batches += 1
            if batch[0].quote_recv_ns == last:
                break
        assert batches > 10
        assert len(merged_calls) == 1  # tried once, not before every evaluation
        assert h.alerts.empty()  # no member refused: none of them failed
    finally:
        h.close()


def test_after_a_member_fails_the_others_are_merged_again(tmp_path, shipped_copy, monkeypatch):
    from stockade.trading.model_panel import ModelPanel

    data = _broken_model(3)
    (shipped_copy / "broken.onnx").write_bytes(data)
    m = read_manifest(shipped_copy)
    template = m.models[0]
    broken = ModelEntry(
        name="broken",
        file="broken.onnx",
        estimator="test",
        features=INDICATOR_FEATURES[:3],
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        folds=template.folds,
        holdout=template.holdout,
        parity_max_abs_diff=0.0,
    )
    write_manifest(shipped_copy, msgspec.structs.replace(m, models=(*m.models, broken)))
    merged: list[tuple[str, ...]] = []
    real = ModelPanel.p_up
    monkeypatch.setattr(ModelPanel, "p_up", lambda self, x: merged.append(self.names) or real(self, x))
    h = Harness(tmp_path, shipped_copy)
    try:
        last = h.feed_minutes(70)
        assert "broken" not in {v.model for v in h.batch()}
        h.batch_for(last)
        # The first merged call held the broken member and failed; every later
        # evaluation is one merged call over the other four.
        assert "broken" in merged[0]
        assert len(merged) > 10 and all("broken" not in names and len(names) == 4 for names in merged[1:])
    finally:
        h.close()
