"""The models' lifecycle in the real daemon (embedded venue): a member that votes at
random is detected, a challenger is trained in its own process and judged by the
promote rule, and the swap (and the rollback) never leaves an evaluation without
one complete model set. `ctl models` through the real control socket."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from itertools import groupby
from pathlib import Path

import msgspec
from daemon_harness import RUN_PY, DaemonProcess, _child_env, settings_text
from waiting import wait_for

from stockade.trading.model_store import SHIPPED_DIR, read_manifest, write_manifest

MARGIN = 0.0  # promote_margin: the rule the test checks the verdict against


def random_onnx(width: int, seed: float = 7.0) -> bytes:
    """A binary classifier over `width` features whose P(up) is uniform noise (seeded)."""
    from onnx import TensorProto, checker, helper

    nodes = [
        helper.make_node("ReduceSum", ["X", "axes"], ["s"], keepdims=1),
        helper.make_node("RandomUniformLike", ["s"], ["p"], seed=seed, dtype=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
        helper.make_node("Greater", ["p", "half"], ["g"]),
        helper.make_node("Cast", ["g"], ["g64"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["g64", "axes"], ["label"]),
    ]
    graph = helper.make_graph(
        nodes,
        "random",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", width])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
        ],
        initializer=[
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    checker.check_model(model)
    return model.SerializeToString()


def random_champion(root: Path) -> Path:
    """A models folder whose only member, `logit`, votes at random while its manifest
    says it scored 0.95 on its hold-out: a member degraded on purpose."""
    folder = root / "champion"
    folder.mkdir()
    manifest = read_manifest(SHIPPED_DIR)
    entry = next(e for e in manifest.models if e.name == "logit")
    data = random_onnx(len(entry.features))
    (folder / entry.file).write_bytes(data)
    entry = msgspec.structs.replace(
        entry,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        holdout=msgspec.structs.replace(entry.holdout, accuracy=0.95),
    )
    write_manifest(folder, msgspec.structs.replace(manifest, models=(entry,)))
    return folder


def _settings(champion: Path) -> str:
    return settings_text(
        None,
        models={
            "dir": str(champion),
            "names": ["logit"],
            "lifecycle": True,
            "retrain_at": "",  # no scheduled retrain: this test is about the triggered one
            "min_scored_votes": 30,
            "hit_rate_margin": 0.05,
            "score_horizon_s": 1.0,
            "train_days": 0.5,
            "train_timeout_s": 300.0,
            "promote_margin": MARGIN,
            "retrain_cooldown_s": 3600.0,
        },
        voter={"min_confidence": 0.0},
    )


def _ctl(daemon: DaemonProcess, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, RUN_PY, "ctl", "--socket", str(daemon.socket), *words],
        capture_output=True,
        text=True,
        timeout=60,
        env=_child_env(),
    )


def _kinds(models: dict) -> list[str]:
    return [e["kind"] for e in reversed(models["events"])]  # oldest first


def _stored(data_dir: Path) -> tuple[list, list]:
    from stockade.storage.store import Store

    store = Store.open(data_dir, readonly=True)
    try:
        return [r for _, r in store.model_evaluations.items()], [r for _, r in store.model_events.items()]
    finally:
        store.close()


def test_a_random_member_is_detected_retrained_judged_and_swapped_without_a_gap(short_dir):
    daemon = DaemonProcess(short_dir / "data", _settings(random_champion(short_dir)))
    try:
        daemon.wait_ready()
        # Refusals, through the real socket and ctl: one clear line, exit 1.
        for words, text in (
            (("models", "promote"), "no challenger to promote"),
            (("models", "rollback"), "no previous champion to roll back to"),
            (("models", "upgrade"), "unknown action 'upgrade'"),
        ):
            done = _ctl(daemon, *words)
            assert done.returncode == 1, done
            assert done.stderr.strip().count("\n") == 0 and text in done.stderr, done.stderr
        shown = json.loads(_ctl(daemon, "models").stdout)["result"]
        assert shown["champion"]["set_id"] == "initial" and shown["champion"]["names"] == ["logit"]
        assert shown["champion"]["trained_holdout_accuracy"] == {"logit": 0.95}

        # Detection, training in its own process, the verdict.
        def verdict() -> dict | None:
            m = daemon.ok("models")
            return m if {"promoted", "kept", "refused", "train-failed"} & set(_kinds(m)) else None

        m = wait_for(verdict, 240, 0.25, "a verdict on the challenger")
        kinds = _kinds(m)
        assert kinds[:2] == ["degraded", "retrain-started"], kinds
        assert "train-failed" not in kinds and "refused" not in kinds, m["events"]
        challenger = m["challenger"]
        assert challenger["members"].keys() == {"logit"} and challenger["window"]
        better = challenger["score"] - challenger["against"] > MARGIN
        assert ("promoted" in kinds) == better, (challenger, kinds)
        new_id = challenger["set_id"]
        if not better:  # the rule kept the champion: the operator promotes it anyway
            assert m["champion"]["set_id"] == "initial"
            assert daemon.ok("models", action="promote") == {"promoted": new_id}
        symbols = sorted(m["serving"])
        assert len(symbols) == 5, m["serving"]

        def serving(set_id: str) -> dict | None:
            m = daemon.ok("models")
            return m if m["serving"] == dict.fromkeys(symbols, set_id) else None

        m = wait_for(lambda: serving(new_id), 60, 0.1, f"every analyzer voting with {new_id}")
        assert m["champion"]["set_id"] == new_id and m["previous"]["set_id"] == "initial"
        folders = {"initial": m["previous"]["folder"], new_id: m["champion"]["folder"]}
        assert (Path(m["champion"]["folder"]) / "reference.json").exists()  # the drift check's reference

        # Rollback: back to the previous champion, again without a gap; then nothing to roll back to.
        assert daemon.ok("models", action="rollback") == {"rolled_back_to": "initial", "from": new_id}
        wait_for(lambda: serving("initial"), 60, 0.1, "every analyzer back on the initial set")
        assert "no previous champion" in daemon.ctl("models", action="rollback")["error"]
        assert all(a["alive"] for a in daemon.status()["actors"])
    finally:
        assert daemon.stop() == 0

    evaluations, events = _stored(daemon.data_dir)
    kinds = [e.kind for e in events]
    assert set(kinds) >= {"degraded", "retrain-started", "evaluated", "promoted", "rolled-back"}, kinds
    assert kinds.count("swapped") == 2, kinds  # to the challenger, and back
    # Every evaluation voted with exactly one complete set, and the set it names is
    # the one whose model file voted (checksums); per analyzer the sets follow each
    # other once: initial, the challenger, initial again.
    sha = {s: tuple(e.sha256 for e in read_manifest(Path(f)).models) for s, f in folders.items()}
    assert sha["initial"] != sha[new_id]
    assert evaluations and all(r.members == ("logit",) and r.models == sha[r.set_id] for r in evaluations), {
        (r.set_id, r.members, r.models) for r in evaluations if r.members != ("logit",) or r.models != sha[r.set_id]
    }
    by_symbol = {s: [r.set_id for r in evaluations if r.symbol == s] for s in symbols}
    for symbol, sets in by_symbol.items():
        runs = [k for k, _ in groupby(sets)]
        assert runs == ["initial", new_id, "initial"], (symbol, runs)
    alerts = [json.loads(x) for x in (daemon.data_dir / "alerts.jsonl").read_text().splitlines() if x.strip()]
    keys = {a["key"].split(":", 1)[0] for a in alerts}
    assert {"model-degraded", "model-retrain-started", "model-promoted", "model-rolled-back"} <= keys, keys


def test_a_training_job_past_its_timeout_is_killed_and_its_challenger_refused(short_dir):
    settings = settings_text(
        None,
        models={
            "lifecycle": True,
            "retrain_at": "",
            "min_scored_votes": 1_000_000,  # no triggered retrain: this one is by hand
            "train_timeout_s": 5.0,
        },
    )
    daemon = DaemonProcess(short_dir / "data", settings)
    try:
        daemon.wait_ready()
        set_id = daemon.ok("models", action="retrain")["retrain"]
        training = daemon.ok("models")["training"]
        assert training["set_id"] == set_id and "ctl models retrain" in training["reason"]
        pid = training["pid"]
        os.kill(pid, signal.SIGSTOP)  # a job that never finishes, whatever the machine's speed
        assert "still training" in daemon.ctl("models", action="retrain")["error"]
        assert "still training" in daemon.ctl("models", action="promote")["error"]

        def failed() -> dict | None:
            m = daemon.ok("models")
            return m if "train-failed" in _kinds(m) else None

        m = wait_for(failed, 60, 0.1, "the job killed on its timeout")
        assert m["training"] is None
        event = next(e for e in m["events"] if e["kind"] == "train-failed")
        assert event["set_id"] == set_id and "timed out after 5 s" in event["detail"]
        assert m["challenger"]["set_id"] == set_id and m["challenger"]["status"] == "refused"
        assert m["champion"]["set_id"] == "initial"
        try:
            os.kill(pid, 0)
            raise AssertionError(f"training process {pid} still exists")
        except ProcessLookupError:
            pass  # killed and reaped
        refused = daemon.ctl("models", action="promote")
        assert refused["error"] == f"no challenger to promote (last: {set_id} refused)"
    finally:
        assert daemon.stop() == 0
