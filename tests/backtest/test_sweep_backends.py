"""The same sweep on Ray, on a local process pool and in one process: the same results.

Real parts: a local Ray started here (two CPUs, no dashboard, one session for
the module), spawned pool processes, the real backtest of every point, a
worker process that really dies (os._exit) and is retried.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sweep_helpers

from stockade.ops.sweep import jsonable, plan, run_sweep
from stockade.ops.sweep_grid import load_grid
from stockade.ops.workers import Backend

ray = pytest.importorskip("ray", reason="the [cluster] extra (in [test]) brings Ray")

BACKENDS = {
    "inline": Backend(kind="inline"),
    "pool": Backend(kind="pool", workers=2),
    "ray": Backend(kind="ray", workers=2),
}


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    from ray import cloudpickle  # Ray's own copy, the one that pickles task arguments

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Ray workers do not have tests/ on their path: the crashing point travels by value.
    cloudpickle.register_pickle_by_value(sweep_helpers)
    yield
    cloudpickle.unregister_pickle_by_value(sweep_helpers)
    ray.shutdown()


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    return sweep_helpers.write_grid(tmp_path_factory.mktemp("grid"))


def _sweep(grid_file: Path, out: Path, backend: Backend, point_fn=None) -> dict:
    grid = load_grid(grid_file)
    jobs = plan(grid, out, str(out.parent / "data"))
    kwargs = {"point_fn": point_fn} if point_fn else {}
    doc = run_sweep(grid, jobs, backend, out, **kwargs)
    assert json.loads((out / "sweep.json").read_text()) == jsonable(doc)
    return doc


def _results(doc: dict) -> list[dict]:
    """What must not depend on where the points ran: everything but the attempts."""
    return [{k: v for k, v in p.items() if k != "attempts"} for p in doc["points"]]


@pytest.fixture(scope="module")
def inline_sweep(grid_file, tmp_path_factory):
    return _sweep(grid_file, tmp_path_factory.mktemp("inline") / "out", BACKENDS["inline"])


def test_inline_sweep_ranks_every_point_out_of_sample(inline_sweep):
    points = inline_sweep["points"]
    assert len(points) == 4 and all(p["ok"] for p in points), points
    assert sorted(p["rank"] for p in points) == [1, 2, 3, 4]
    assert sum(p["orders"] for p in points) > 0  # points that trade, or equality proves little
    # Different settings gave different in-sample results: the points really ran their own settings.
    assert len({json.dumps(p["in_sample"], sort_keys=True) for p in points}) > 1
    by_rank = sorted(points, key=lambda p: p["rank"])
    oos = [p["out_of_sample"]["sharpe"] for p in by_rank]
    assert oos == sorted(oos, reverse=True)


@pytest.mark.parametrize("kind", ["pool", "ray"])
def test_pool_and_ray_give_the_inline_results_bit_for_bit(kind, inline_sweep, grid_file, tmp_path):
    doc = _sweep(grid_file, tmp_path / "out", BACKENDS[kind])
    assert json.dumps(jsonable(_results(doc))) == json.dumps(jsonable(_results(inline_sweep)))
    assert doc["run"]["retries"] == 0


@pytest.mark.parametrize("kind", ["pool", "ray"])
def test_a_worker_killed_mid_sweep_is_retried_and_the_result_is_the_same(kind, inline_sweep, grid_file, tmp_path):
    out = tmp_path / "out"
    doc = _sweep(grid_file, out, BACKENDS[kind], point_fn=sweep_helpers.crash_once)
    assert (out / "crashed-once").exists()  # the worker did die
    assert json.dumps(jsonable(_results(doc))) == json.dumps(jsonable(_results(inline_sweep)))
    crashed = doc["points"][1]
    assert crashed["ok"] and crashed["attempts"] >= 2, crashed
    assert doc["run"]["retries"] >= 1 and doc["run"]["failed"] == 0
