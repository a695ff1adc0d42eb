"""--source alpaca: alpaca-py's historical data client against the embedded venue's /v2/stocks/bars,
cached on disk so a rerun makes no call (proved by rerunning with the venue stopped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stockade.ops.backtest import records
from stockade.venue.config import VenueConfig
from stockade.venue.server import start_venue

ROOT = Path(__file__).resolve().parents[2]
KEY, SECRET = "PKBACKTESTTEST", "backtest-secret-not-logged"


def _run(tmp: Path, settings: Path, out: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "backtest",
            "--source",
            "alpaca",
            "--symbols",
            "AAPL,MSFT",
            "--start",
            "2026-06-02",
            "--end",
            "2026-06-02",
            "--settings",
            str(settings),
            "--data-dir",
            str(tmp / "data"),
            "--out",
            str(tmp / out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )


def test_alpaca_source_fetches_once_then_reads_its_cache(tmp_path):
    venue = start_venue(VenueConfig(api_key=KEY, api_secret=SECRET, symbols=("AAPL", "MSFT"), clock="nyse", seed=4))
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[alpaca]\ndata_url = "{venue.base_url}"\n')
    env = {**os.environ, "APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET}
    try:
        first = _run(tmp_path, settings, "out1", env)
    finally:
        venue.stop()
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["source"] == "alpaca" and summary["events"] > 0
    cached = list((tmp_path / "data" / "backtest-cache").glob("alpaca-bars-*.csv"))
    assert len(cached) == 1
    assert SECRET not in first.stderr and SECRET not in cached[0].read_text()
    # The venue is gone: the same request must come from the cache, with the same result.
    second = _run(tmp_path, settings, "out2", env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout.strip().splitlines()[-1])["data_fingerprint"] == summary["data_fingerprint"]
    assert records(tmp_path / "out1") == records(tmp_path / "out2")


def test_alpaca_source_without_keys_is_one_line_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    settings = tmp_path / "settings.toml"
    settings.write_text("")
    done = _run(tmp_path, settings, "out", env)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "backtest: --source alpaca needs APCA_API_KEY_ID and APCA_API_SECRET_KEY in the environment"
    )
