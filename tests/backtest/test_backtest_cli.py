"""`python run.py backtest` end to end: determinism, records readable by `report`, bad input.

Real parts: the real CLI in a subprocess, the daemon's actor classes, the
alpaca-py clients, the venue's matching engine, real lmdb files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stockade.ops.backtest import records

ROOT = Path(__file__).resolve().parents[2]
# One trading day, two symbols, the shipped settings and models: long enough
# for the seeded market (seed 4) to trade, short enough for the suite.
RUN = ["--start", "2026-06-01", "--end", "2026-06-01", "--symbols", "AAPL,MSFT", "--seed", "4"]


def cli(*args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    outs = []
    for i in range(2):
        out = tmp_path_factory.mktemp(f"run{i}") / "out"
        done = cli("backtest", *RUN, "--data-dir", str(out.parent / "data"), "--out", str(out))
        assert done.returncode == 0, done.stderr[-3000:]
        outs.append((out, json.loads(done.stdout.strip().splitlines()[-1])))
    return outs


def test_same_data_settings_and_seed_give_byte_identical_records_and_report(two_runs):
    (a, sa), (b, sb) = two_runs
    assert sa["orders"] > 0 and sa["fills"] > 0, sa  # a run that trades, or the comparison proves little
    ra, rb = records(a), records(b)
    assert ra == rb
    assert (a / "backtest.json").read_bytes() == (b / "backtest.json").read_bytes()
    assert (a / "tearsheet.html").read_bytes() == (b / "tearsheet.html").read_bytes()
    reports = [cli("report", "--data-dir", str(o), "--json") for o in (a, b)]
    assert all(r.returncode == 0 for r in reports), reports[0].stderr
    assert reports[0].stdout == reports[1].stdout
    rep = json.loads(reports[0].stdout)
    assert rep["portfolio"]["days"] >= 1


def test_the_run_summary_matches_its_records(two_runs):
    out, summary = two_runs[0]
    tables = {}
    for table, _, _ in records(out):
        tables[table] = tables.get(table, 0) + 1
    assert tables[b"orders"] == summary["orders"]
    assert tables.get(b"fills", 0) == summary["fills"]
    assert tables[b"voter_decisions"] > 0 and tables[b"equity"] > 0
    assert summary["data_fingerprint"] and summary["settings_fingerprint"]


def _bad(tmp_path: Path, *args: str) -> str:
    done = cli("backtest", "--out", str(tmp_path / "out"), *args, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written
    return lines[0]


def test_bad_input_start_after_end(tmp_path):
    line = _bad(tmp_path, "--start", "2026-06-10", "--end", "2026-06-01")
    assert line == "backtest: --start 2026-06-10 is after --end 2026-06-01"


def test_bad_input_empty_range(tmp_path):
    line = _bad(tmp_path, "--start", "2026-06-06", "--end", "2026-06-07")  # a weekend
    assert "2026-06-06..2026-06-07" in line and "no trading session" in line


def test_bad_input_unknown_symbol(tmp_path):
    csv = tmp_path / "bars.csv"
    csv.write_text("timestamp,symbol,open,high,low,close,volume\n2026-06-01T13:30:00Z,AAPL,10,11,9,10.5,100\n")
    line = _bad(
        tmp_path,
        "--start",
        "2026-06-01",
        "--end",
        "2026-06-01",
        "--source",
        "file",
        "--file",
        str(csv),
        "--symbols",
        "ZZZZ",
    )
    assert "ZZZZ" in line and "not in" in line
    line = _bad(tmp_path, "--start", "2026-06-01", "--end", "2026-06-01", "--symbols", "aapl;rm")
    assert "not a ticker symbol" in line


def test_bad_input_malformed_file_names_file_line_and_field(tmp_path):
    csv = tmp_path / "bars.csv"
    csv.write_text(
        "timestamp,symbol,open,high,low,close,volume\n"
        "2026-06-01T13:30:00Z,AAPL,10,11,9,10.5,100\n"
        "2026-06-01T13:31:00Z,AAPL,10,eleven,9,10.5,100\n"
    )
    line = _bad(tmp_path, "--start", "2026-06-01", "--end", "2026-06-01", "--source", "file", "--file", str(csv))
    assert line == f"backtest: {csv}:3: high = 'eleven': not a number"
    csv.write_text("timestamp,symbol,open,high,low,close,volume\nyesterday,AAPL,10,11,9,10.5,100\n")
    line = _bad(tmp_path, "--start", "2026-06-01", "--end", "2026-06-01", "--source", "file", "--file", str(csv))
    assert line.startswith(f"backtest: {csv}:2: timestamp = 'yesterday'")


def test_bad_input_file_range_without_rows(tmp_path):
    csv = tmp_path / "bars.csv"
    csv.write_text("timestamp,symbol,open,high,low,close,volume\n2026-06-01T13:30:00Z,AAPL,10,11,9,10.5,100\n")
    line = _bad(tmp_path, "--start", "2026-07-01", "--end", "2026-07-02", "--source", "file", "--file", str(csv))
    assert "no rows between 2026-07-01 and 2026-07-02" in line


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path):
    if importlib.util.find_spec("pyarrow") is not None:
        pytest.skip("pyarrow is installed: Parquet is read, no error to show")
    pq = tmp_path / "bars.parquet"
    pq.write_bytes(b"PAR1")
    line = _bad(tmp_path, "--start", "2026-06-01", "--end", "2026-06-01", "--source", "file", "--file", str(pq))
    assert "needs pyarrow" in line


def test_bad_backtest_setting_names_key_and_value(tmp_path):
    settings = tmp_path / "s.toml"
    settings.write_text("[backtest]\nslippage_bps = -3\n")
    line = _bad(tmp_path, "--settings", str(settings), "--start", "2026-06-01", "--end", "2026-06-01")
    assert line == "backtest: settings: backtest.slippage_bps = -3: must be >= 0"
