"""`[runtime] cpu_affinity`: every thread of the real daemon runs on the CPUs asked for,
and a CPU the process may not use stops start-up with exit 2 and one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_harness import RUN_PY, DaemonProcess, _child_env, settings_text


def allowed_list(pid: int, tid: str) -> str | None:
    """The thread's allowed CPUs, or None when it ended between listing and reading."""
    try:
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    except FileNotFoundError:
        return None
    return next(line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list"))


def test_every_daemon_thread_is_pinned(short_dir):
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("one CPU available: pinning cannot be told apart from not pinning")
    cpu = allowed[-1]
    daemon = DaemonProcess(short_dir / "data", settings_text(None, runtime={"cpu_affinity": [cpu]}))
    try:
        daemon.wait_ready(timeout=120)
        tids = os.listdir(f"/proc/{daemon.proc.pid}/task")
        assert len(tids) > 10  # actors, streams, venue: the threads started after the pinning
        masks = {tid: allowed_list(daemon.proc.pid, tid) for tid in tids}
        masks = {tid: mask for tid, mask in masks.items() if mask is not None}
        assert len(masks) > 10, masks
        assert set(masks.values()) == {str(cpu)}, masks
        assert f"pinned to CPU {cpu} (runtime.cpu_affinity)" in daemon.log()
    finally:
        assert daemon.stop() == 0


def test_a_cpu_not_available_exits_2_naming_the_setting(tmp_path):
    settings = tmp_path / "s.toml"
    settings.write_text("[runtime]\ncpu_affinity = [4095]\n")
    out = subprocess.run(
        [sys.executable, RUN_PY, "run", "--settings", str(settings), "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        env=_child_env(),
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "stockade: settings: runtime.cpu_affinity = [4095]: CPU 4095 not available to this process"
    ), out.stderr
