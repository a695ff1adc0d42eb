"""The merged model panel (trading/model_panel.py) gives every member's output exactly
as its own session does, in one call."""

from __future__ import annotations

import numpy as np
import pytest

from stockade.trading.feature_vector import FEATURE_NAMES
from stockade.trading.model_member import ModelMember
from stockade.trading.model_panel import clear_panels, panel_of
from stockade.trading.model_store import SHIPPED_DIR, clear_cache, load_models


@pytest.fixture
def shipped():
    clear_cache()
    clear_panels()
    loaded, errors = load_models(SHIPPED_DIR)
    assert not errors and len(loaded) == 4
    yield loaded
    clear_panels()
    clear_cache()


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Scale-free features: small ratios and returns, oscillators around zero;
    # a few wide rows reach the trees' far branches.
    X = rng.normal(0.0, 0.02, (n, len(FEATURE_NAMES)))
    X[: n // 10] *= 25
    return X.astype(np.float32)


def test_merged_equals_separate_members_on_seeded_rows(shipped):
    panel = panel_of(shipped)
    assert panel is not None and panel.names == tuple(m.name for m in shipped)
    X = _rows(2_000, seed=12)
    separate = np.stack([m.p_up_batch(X) for m in shipped], axis=1)
    np.testing.assert_array_equal(panel.p_up_batch(X), separate)
    members = [ModelMember(m) for m in shipped]
    for x in X[:300]:
        assert panel.p_up(x) == [m.model.p_up(x) for m in members]


def test_panels_are_shared_and_one_member_needs_none(shipped):
    assert panel_of(shipped) is panel_of(list(shipped))
    assert panel_of(shipped[:1]) is None
    assert panel_of([]) is None


def test_the_merged_graph_runs_only_what_the_probabilities_need(shipped):
    # onnxruntime runs every node of a graph whatever the outputs asked for: the
    # members' label paths (the MLP's ArgMax ... Cast) would cost every evaluation.
    from stockade.trading.model_panel import merged_model

    proto, outputs = merged_model(shipped)
    produced = {o for node in proto.graph.node for o in node.output}
    used = {i for node in proto.graph.node for i in node.input} | set(outputs)
    ops = [node.op_type for node in proto.graph.node]
    assert "ArgMax" not in ops and "ArrayFeatureExtractor" not in ops
    # Every node feeds something asked for (a tree ensemble's label output comes with its probabilities).
    assert all(any(o in used for o in node.output) for node in proto.graph.node)
    assert produced >= set(outputs)


def test_threads_sharing_a_panel_each_get_their_own_rows_answer(shipped):
    # Analyzers share one panel across their pool's threads; each thread has its own bound row.
    import threading

    panel = panel_of(shipped)
    assert panel is not None
    X = _rows(400, seed=5)
    expected = [panel.p_up(x) for x in X]
    got: dict[int, list[list[float]]] = {}
    start = threading.Barrier(4)

    def work(k: int) -> None:
        start.wait(timeout=10)
        got[k] = [panel.p_up(x) for x in X[k::4] for _ in range(3)][::3]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got) == [0, 1, 2, 3]
    for k in range(4):
        assert got[k] == expected[k::4]
