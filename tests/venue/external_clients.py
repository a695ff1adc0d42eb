"""Running Alpaca clients that are not Python-in-this-venv against a venue: the JS SDKs and alpaca-trade-api.

Each client is a script (tests/venue/js/sdk3.js, sdk4.js, tests/venue/ata/client.py)
that reads the venue's URL and keys from the environment, drives it and prints
one JSON report: {step: {"ok": true, "value": ...} | {"ok": false, "error": ...}}.
The tests judge the report. The tools come from `.ci/run` (Node and `npm ci`
in tests/venue/js, a virtual environment with alpaca-trade-api in
tests/venue/ata/.venv); without them the tests skip on a developer's machine
but fail under CI (STOCKADE_CI=1), as the systemd-analyze tests do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
JS_DIR = HERE / "js"
ATA_DIR = HERE / "ata"
CLIENT_TIMEOUT_S = 150.0  # the scripts bound themselves tighter; this is the last resort


def _ci() -> bool:
    return os.environ.get("STOCKADE_CI") == "1"


def need(available: bool, missing: str) -> None:
    """Skip (developer machine) or fail (CI) when a client is not installed."""
    if available:
        return
    if _ci():
        pytest.fail(f"{missing} under CI (.ci/run should have installed it)")
    pytest.skip(f"{missing} (.ci/run installs it; CI never skips this)")


def node_or_skip(min_major: int = 16) -> str:
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    assert node is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    major = int(version.lstrip("v").split(".")[0]) if version.startswith("v") else 0
    need(major >= min_major, f"node {version or '?'} is older than {min_major}, which this SDK requires")
    need(
        (JS_DIR / "node_modules" / "alpaca3").is_dir() and (JS_DIR / "node_modules" / "alpaca4").is_dir(),
        "the JS SDKs are not installed (npm ci in tests/venue/js)",
    )
    return str(node)


def ata_python_or_skip() -> str:
    python = Path(os.environ.get("STOCKADE_ATA_PYTHON", ATA_DIR / ".venv" / "bin" / "python"))
    need(python.exists(), f"alpaca-trade-api's environment is missing ({python})")
    return str(python)


def run_client(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run one client script; its report, with every failed step's error in the assertion message."""
    proc = subprocess.run(
        argv, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S
    )
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, f"client exited {proc.returncode}: {proc.stderr[-4000:]}"
    report = json.loads(lines[-1])
    failed = {k: v["error"] for k, v in report.items() if not v.get("ok", True)}
    assert not failed, "client steps failed:\n" + "\n".join(f"{k}: {e}" for k, e in failed.items())
    return {k: v.get("value") for k, v in report.items()}
