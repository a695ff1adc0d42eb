"""All loaded models as one onnxruntime call: the members' graphs merged side by side.

An evaluation used to cost one `session.run` per member (four for the
shipped models), each paying onnxruntime's per-call overhead. The panel
builds one ONNX graph that takes the full feature vector once, gathers each
member's own columns (`Gather` on axis 1, the manifest's column order) and
runs every member's graph, unchanged but renamed with a `m<i>_` prefix, to
its own probabilities output. One session, one call, the same numbers: each
member's nodes and weights are those of its file (a test compares merged
against separate sessions on seeded inputs).

Members exported at an older default-domain opset are converted to the
newest one among them (onnx.version_converter), since one graph has one
opset per domain. A set of members that cannot be merged (conversion or
loading fails) gets no panel: the caller runs them one by one as before.

Panels are cached process-wide, one per set of (file, checksum), like the
sessions: every analyzer shares one.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from stockade.trading.feature_vector import FEATURE_NAMES
from stockade.trading.model_store import LoadedModel, new_session

log = logging.getLogger(__name__)

INPUT = "x"


class ModelPanel:
    """One session computing every member's P(up) from one full feature vector."""

    __slots__ = ("_local", "_outputs", "names", "session")

    def __init__(self, names: tuple[str, ...], session: Any, outputs: list[str]) -> None:
        self.names = names
        self.session = session
        self._outputs = outputs
        # Per thread (analyzers share the panel across their pool's threads): an
        # input row bound once to the session (io_binding), so a call copies the
        # vector in and runs, without `run()`'s per-call checks of names and
        # feeds (~2 of its ~15 us). The same kernels: the same numbers.
        self._local = threading.local()

    def p_up(self, x: np.ndarray) -> list[float]:
        """P(up) of each member (in `names` order) for one vector in FEATURE_NAMES order."""
        local = self._local
        binding = getattr(local, "binding", None)
        if binding is None:
            local.row = np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32)
            binding = self.session.io_binding()
            binding.bind_cpu_input(INPUT, local.row)
            for name in self._outputs:
                binding.bind_output(name)
            local.binding = binding
        local.row[0] = x
        self.session.run_with_iobinding(binding)
        return [float(p[0, 1]) for p in binding.copy_outputs_to_cpu()]

    def p_up_batch(self, X: np.ndarray) -> np.ndarray:
        """P(up) for rows of full vectors: shape (rows, members)."""
        return np.stack([p[:, 1] for p in self.session.run(self._outputs, {INPUT: X})], axis=1)


def merged_model(models: Sequence[LoadedModel]) -> tuple[Any, list[str]]:
    """The merged ONNX ModelProto of `models` and its outputs (one per member, in order)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.compose import add_prefix
    from onnx.version_converter import convert_version

    protos = []
    for m in models:
        data = m.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != m.entry.sha256:
            raise ValueError(f"{m.path} changed since it was loaded")
        protos.append(onnx.load_from_string(data))
    target = max(_default_opset(p) for p in protos)
    nodes, initializers, outputs, value_info = [], [], [], []
    opsets: dict[str, int] = {"": target}
    ir_version = 0
    for i, (m, proto) in enumerate(zip(models, protos, strict=True)):
        if _default_opset(proto) != target:
            proto = convert_version(proto, target)
        for op in proto.opset_import:
            if op.domain not in ("", "ai.onnx"):
                opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
        ir_version = max(ir_version, proto.ir_version)
        prefix = f"m{i}_"
        proto = add_prefix(proto, prefix)
        graph = proto.graph
        (member_input,) = [inp.name for inp in graph.input if inp.name not in {t.name for t in graph.initializer}]
        cols = numpy_helper.from_array(np.asarray(m.columns, dtype=np.int64), prefix + "columns")
        nodes.append(helper.make_node("Gather", [INPUT, cols.name], [member_input], axis=1, name=prefix + "gather"))
        nodes.extend(graph.node)
        initializers.append(cols)
        initializers.extend(graph.initializer)
        value_info.extend(graph.value_info)
        wanted = prefix + m._outputs[0]
        (out,) = [o for o in graph.output if o.name == wanted]
        outputs.append(out)
    graph = helper.make_graph(
        _needed(nodes, {o.name for o in outputs}),
        "stockade_panel",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, len(FEATURE_NAMES)])],
        outputs,
        initializers,
        value_info=value_info,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model, [o.name for o in outputs]


def _needed(nodes: list[Any], outputs: set[str]) -> list[Any]:
    """The nodes `outputs` depend on, in their order: onnxruntime runs every node of a
    graph whatever the outputs asked for, and the members' label paths (ArgMax, ...) are
    never asked for. The probability paths are kept whole, so their numbers do not change."""
    needed, keep = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    keep.reverse()
    return keep


def _default_opset(proto: Any) -> int:
    return max((op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")), default=0)


_lock = threading.Lock()
_panels: dict[tuple[tuple[str, str], ...], ModelPanel | None] = {}


def panel_of(models: Sequence[LoadedModel]) -> ModelPanel | None:
    """The shared panel of `models` (two or more), or None when they cannot be merged."""
    if len(models) < 2:
        return None  # one member: its own session is already one call
    key = tuple((str(m.path), m.entry.sha256) for m in models)
    with _lock:
        if key in _panels:
            return _panels[key]
        try:
            proto, outputs = merged_model(models)
            panel: ModelPanel | None = ModelPanel(
                tuple(m.name for m in models), new_session(proto.SerializeToString()), outputs
            )
        except Exception as exc:  # any failure means "run them one by one"
            log.warning(
                "models %s cannot be merged into one call (%s); running them one by one",
                ", ".join(m.name for m in models),
                str(exc).splitlines()[0][:300] if str(exc) else exc,
            )
            panel = None
        _panels[key] = panel
        return panel


def clear_panels() -> None:
    """Forget the cached panels (tests)."""
    with _lock:
        _panels.clear()
