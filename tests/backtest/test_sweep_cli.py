"""`python run.py sweep` end to end: the table, sweep.json and sweep.html; bad sweep files; failed points kept.

Real parts: the CLI in a subprocess, real backtests of every point on a tiny
bars file, a spawned local pool.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sweep_helpers

from stockade.ops.sweep import plan, run_sweep, table
from stockade.ops.sweep_grid import GridError, load_grid
from stockade.ops.workers import Backend, Bar, UnitResult

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "sweep", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_a_sweep_on_a_local_pool_prints_the_table_and_writes_json_and_a_self_contained_page(tmp_path):
    grid = sweep_helpers.write_grid(
        tmp_path, extra='objective = "sortino"\ntop = 2', grid='"voter.threshold" = [0.02, 0.1]'
    )
    out = tmp_path / "out"
    done = cli("--grid", str(grid), "--workers", "2", "--out", str(out), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "sweep.json").read_text())
    assert [p["values"] for p in doc["points"]] == [{"voter.threshold": 0.02}, {"voter.threshold": 0.1}]
    assert doc["sweep"]["objective"] == "sortino" and doc["run"]["backend"] == "pool (2 workers)"
    lines = done.stdout.splitlines()
    assert "IS sortin" in lines[1] and "OOS sortin" in lines[1]
    for p in doc["points"]:
        assert p["ok"] and set(p["in_sample"]) == set(p["out_of_sample"])
        row = next(line for line in lines if f" {p['point']} " in line)
        assert f"{p['out_of_sample']['return_pct']:8.3f}" in row and f"{p['in_sample']['return_pct']:8.3f}" in row
    page = (out / "sweep.html").read_text()
    assert "<svg" in page and "Objective surface" in page and "out-of-sample equity" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert (out / "points" / "p0000" / "backtest.json").exists()  # a point's records, as any backtest's
    again = cli("--grid", str(grid), "--out", str(out), timeout=120)  # never over an earlier sweep
    assert again.returncode == 2 and "already holds a sweep" in again.stderr


def _bad(tmp_path: Path, grid_text: str | None = None, *flags: str, **grid_kw) -> str:
    grid = sweep_helpers.write_grid(tmp_path, **grid_kw)
    if grid_text is not None:
        grid.write_text(grid_text)
    done = cli("--grid", str(grid), "--out", str(tmp_path / "out"), *flags, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written
    return lines[0]


def test_an_unknown_settings_key_is_refused_with_its_name(tmp_path):
    line = _bad(tmp_path, grid='"voter.threshhold" = [0.1]')
    assert line.startswith("sweep: ") and "unknown key voter.threshhold" in line and "threshold" in line


def test_a_bad_value_is_refused_naming_key_and_value(tmp_path):
    line = _bad(tmp_path, grid='"voter.threshold" = [0.1, "high"]')
    assert "voter.threshold" in line and '"high"' in line
    line = _bad(tmp_path, grid='"risk.stop_loss_pct" = [2.0, -1.0]')
    assert "risk.stop_loss_pct" in line and "-1.0" in line


@pytest.mark.parametrize(
    "text, expect",
    [
        ('[sweep]\nstart = "2026-06-01"\nend = "2026-06-03"\n', "[grid] is empty"),
        ('[sweep]\nstart = "2026-06-01"\nend = "2026-06-03"\n[grid]\n', "[grid] is empty"),
        ('[sweep]\nstart = "2026-06-01"\nend = "2026-06-03"\n[grid]\n"voter.threshold" = []\n', "no value to try"),
        (
            '[sweep]\nstart = "2026-06-01"\nend = "2026-06-03"\nobjective = "calmar"\n[grid]\n"voter.threshold" = [0.1]\n',
            "sweep.objective",
        ),
        ('[sweep]\nstart = "2026-06-01"\n[grid]\n"voter.threshold" = [0.1]\n', "end"),
        ('[sweep]\nstart = "2026-06-01"\nend = "2026-06-03"\n[grid]\nthreshold = [0.1]\n', "section.key"),
        ("[sweep\n", "invalid TOML"),
    ],
)
def test_bad_sweep_files_exit_2_with_one_line(tmp_path, text, expect):
    assert expect in _bad(tmp_path, text)


def test_bad_flags_and_data_exit_2_with_one_line(tmp_path):
    assert "--workers = 0" in _bad(tmp_path, None, "--workers", "0")
    weekend = '[sweep]\nstart = "2026-06-06"\nend = "2026-06-07"\n[grid]\n"voter.threshold" = [0.1]\n'
    assert "no trading session in that range" in _bad(tmp_path, weekend)
    assert "--walk-forward 5 needs at least 6 trading sessions" in _bad(tmp_path, None, extra="walk_forward = 5")


def test_random_mode_draws_seeded_points_inside_the_ranges(tmp_path):
    def points(seed: int) -> list[dict]:
        grid = sweep_helpers.write_grid(
            tmp_path,
            extra=f'mode = "random"\nsamples = 5\nrandom_seed = {seed}',
            grid='"voter.threshold" = { min = 0.01, max = 0.2 }\n"risk.max_positions" = { min = 1, max = 9 }',
        )
        return list(load_grid(grid).points)

    a, b, c = points(1), points(1), points(2)
    assert a == b and a != c and len(a) == 5
    assert all(0.01 <= p["voter.threshold"] <= 0.2 and 1 <= p["risk.max_positions"] <= 9 for p in a)
    assert all(isinstance(p["risk.max_positions"], int) for p in a)
    with pytest.raises(GridError, match="only for mode"):
        load_grid(sweep_helpers.write_grid(tmp_path, grid='"voter.threshold" = { min = 0.01, max = 0.2 }'))


def _fail_point_one(job):
    from stockade.ops.sweep import run_point

    if job.index == 1:
        raise RuntimeError("no data for this point")
    return run_point(job)


def test_a_failed_point_is_reported_with_its_error_never_dropped(tmp_path):
    grid = load_grid(sweep_helpers.write_grid(tmp_path, grid='"voter.threshold" = [0.02, 0.1, 0.3]'))
    out = tmp_path / "out"
    doc = run_sweep(grid, plan(grid, out, str(tmp_path / "data")), Backend(), out, point_fn=_fail_point_one)
    assert [p["ok"] for p in doc["points"]] == [True, False, True]
    failed = doc["points"][1]
    assert failed["error"] == "RuntimeError: no data for this point" and failed["rank"] is None
    assert doc["run"]["failed"] == 1
    assert "FAILED (1 tries): RuntimeError: no data for this point" in table(doc)
    assert "no data for this point" in (out / "sweep.html").read_text()
    assert json.loads((out / "sweep.json").read_text())["points"][1]["error"] == failed["error"]


def test_the_drawdown_limit_leaves_deep_points_unranked():
    from stockade.ops.sweep import rank

    def point(i, sharpe, dd):
        return {"ok": True, "out_of_sample": {"sharpe": sharpe, "max_drawdown_pct": dd}, "point": f"p{i}"}

    points = [point(0, 1.0, 2.0), point(1, 3.0, 9.0), point(2, 2.0, 1.0), point(3, None, 0.5)]
    rank(points, "sharpe", 5.0)
    assert [p["rank"] for p in points] == [2, None, 1, None]
    assert "drawdown 9.00% > limit 5%" in points[1]["excluded"] and "no out-of-sample sharpe" in points[3]["excluded"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_counts_points_and_failures_on_a_terminal_only():
    tty, pipe = _Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = Bar(3, stream)
        for ok in (True, False, True):
            bar.update(UnitResult(key="p", ok=ok))
    assert "3/3 points, 1 failed" in tty.getvalue() and "ETA" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_a_walk_forward_sweep_ranks_on_the_folds_test_windows(tmp_path):
    (tmp_path / "base.toml").write_text('[models]\nnames = ["logit"]\n')
    grid_file = tmp_path / "sweep.toml"
    grid_file.write_text(
        '[sweep]\nstart = "2026-06-01"\nend = "2026-06-03"\nsymbols = ["AAPL"]\nseed = 4\n'
        'settings = "base.toml"\nwalk_forward = 2\n[grid]\n"voter.threshold" = [0.05]\n'
    )
    grid = load_grid(grid_file)
    out = tmp_path / "out"
    doc = run_sweep(grid, plan(grid, out, str(tmp_path / "data")), Backend(), out)
    (p,) = doc["points"]
    assert p["ok"] and p["rank"] == 1, p
    wf = json.loads((out / "points" / "p0000" / "walk_forward.json").read_text())
    assert [f["test"] for f in wf["folds"]] == [["2026-06-02", "2026-06-02"], ["2026-06-03", "2026-06-03"]]
    # Out-of-sample is the folds' test windows chained: the walk-forward's own stitched return.
    assert p["out_of_sample"]["return_pct"] == pytest.approx(wf["stitched_oos_return_pct"], abs=1e-3)
    # In-sample is each fold's models on their own training window, run and kept apart.
    for fold in wf["folds"]:
        assert (Path(fold["in_sample_out"]) / "backtest.json").exists()
    assert p["in_sample"]["curve"] != p["out_of_sample"]["curve"]


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["backtest", "--start", "2026-06-01", "--end", "2026-06-02", "--workers", "2"], "give --walk-forward K too"),
        (
            ["backtest", "--start", "2026-06-01", "--end", "2026-06-03", "--walk-forward", "1", "--workers", "0"],
            "--workers = 0",
        ),
        (["train", "--workers", "0"], "--workers = 0"),
        (["train", "--ray", " "], "--ray = ''"),
    ],
)
def test_backtest_and_train_refuse_bad_worker_flags_with_one_line(tmp_path, argv, expect):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            *argv,
            *(["--out", str(tmp_path / "out")] if argv[0] == "backtest" else []),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], done.stderr
