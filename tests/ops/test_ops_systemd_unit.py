"""deploy/stockade.service: what the unit promises, and `systemd-analyze` agrees it is valid.

The unit names /opt/stockade, which does not exist here, and `verify` checks
that ExecStart is executable; so a copy with ExecStart/WorkingDirectory pointed
at this checkout and its python is verified. Only those two lines differ (a
test holds that), so everything else verified is the real file.

Without `systemd-analyze` the verify tests skip on a developer's machine, but
fail under CI: `.ci/run` installs systemd's tools and sets STOCKADE_CI=1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stockade.config import paths
from stockade.config.settings import Settings
from stockade.ops import daemon

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "stockade.service"
ANALYZE = shutil.which("systemd-analyze")


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (systemd allows a key more than once)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert section is not None, line
        section.setdefault(key, []).append(value)
    return out


UNIT_TEXT = UNIT.read_text()
U = parse(UNIT_TEXT)
SERVICE = U["Service"]


def one(key: str, section: dict[str, list[str]] = SERVICE) -> str:
    values = section[key]
    assert len(values) == 1, (key, values)
    return values[0]


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, value
    return float(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_notify_watchdog_and_restart_policy():
    assert one("Type") == "notify" and one("NotifyAccess") == "main"
    assert one("Restart") == "on-failure"
    assert seconds(one("RestartSec")) >= 1
    assert one("RestartPreventExitStatus") == "2"  # bad settings: a restart cannot fix them
    unit = U["Unit"]
    assert seconds(one("StartLimitIntervalSec", unit)) >= 60 and 1 < int(one("StartLimitBurst", unit)) <= 10
    assert "network-online.target" in one("After", unit) and "network-online.target" in one("Wants", unit)
    assert one("WantedBy", U["Install"]) == "multi-user.target"


def test_timings_agree_with_the_daemon():
    defaults = Settings()
    watchdog = seconds(one("WatchdogSec"))
    sup = defaults.supervision
    # A hung child must be seen and replaced by its supervisor well before systemd gives up on the whole process.
    assert watchdog >= 3 * (sup.heartbeat_interval_s + sup.heartbeat_timeout_s + sup.backoff_max_s) / 2
    assert watchdog >= 4 * 1.0  # the daemon loop ticks at most every second
    # An orderly stop (control socket, tree, embedded venue) must finish before SIGKILL,
    # and the tree's share leaves room for one liquidation pass.
    budget = daemon.CONTROL_STOP_S + daemon.TREE_STOP_S + daemon.VENUE_STOP_S + daemon.DASHBOARD_STOP_S
    assert seconds(one("TimeoutStopSec")) >= budget + 10
    assert daemon.TREE_STOP_S >= defaults.emergency.flat_timeout_s
    assert seconds(one("TimeoutStartSec")) >= daemon.READY_TIMEOUT_S
    assert one("KillSignal") == "SIGTERM" and one("KillMode") == "mixed"


def test_directories_secrets_and_socket_location():
    assert one("StateDirectory") == "stockade" and one("StateDirectoryMode") == "0700"
    assert one("RuntimeDirectory") == "stockade" and one("RuntimeDirectoryMode") == "0700"
    # ctl, run by an operator without $RUNTIME_DIRECTORY, looks where systemd puts it.
    assert paths.SYSTEMD_RUNTIME_SOCKET == Path("/run") / one("RuntimeDirectory") / paths.SOCKET_NAME
    assert one("EnvironmentFile") == "-/etc/stockade/env"
    for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "STOCKADE_SMTP_PASSWORD", "STOCKADE_WEBHOOK_URL"):
        assert f"#LoadCredential={name}:/etc/stockade/credentials/{name}" in UNIT_TEXT
    assert one("User") == "stockade" and one("Group") == "stockade"
    assert (
        one("ExecStart") == "/opt/stockade/.venv/bin/python /opt/stockade/run.py --settings /etc/stockade/settings.toml"
    )
    assert one("UMask") == "0077"


def test_cpu_affinity_is_there_to_set():
    # Empty (all CPUs) as shipped; documented beside the daemon's runtime.cpu_affinity.
    assert one("CPUAffinity") == ""
    assert "runtime] cpu_affinity" in UNIT_TEXT


def test_hardening():
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "SystemCallArchitectures": "native",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }
    assert {k: one(k) for k in expected} == expected
    assert SERVICE["SystemCallFilter"] == ["@system-service", "~@privileged"]
    # ProtectSystem=strict makes everything read-only but the state and runtime directories.
    assert "ReadWritePaths" not in SERVICE


def _ci() -> bool:
    return os.environ.get("STOCKADE_CI") == "1"


def _analyze_or_skip() -> str:
    if ANALYZE:
        return ANALYZE
    if _ci():
        pytest.fail("systemd-analyze is missing under CI (.ci/run should have installed systemd)")
    pytest.skip("systemd-analyze not installed (CI installs it and never skips this)")


def checkout_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart/WorkingDirectory pointing at this checkout; nothing else changed."""
    text = UNIT_TEXT.replace(
        "ExecStart=/opt/stockade/.venv/bin/python /opt/stockade/run.py",
        f"ExecStart={sys.executable} {REPO / 'run.py'}",
    ).replace("WorkingDirectory=/opt/stockade\n", f"WorkingDirectory={REPO}\n")
    changed = [(a, b) for a, b in zip(UNIT_TEXT.splitlines(), text.splitlines(), strict=True) if a != b]
    assert [a.split("=", 1)[0] for a, _ in changed] == ["WorkingDirectory", "ExecStart"], changed
    path = tmp_path / "stockade.service"
    path.write_text(text)
    return path


def verify(analyze: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60, cwd=path.parent
    )


def complaints(proc: subprocess.CompletedProcess, path: Path) -> list[str]:
    # verify exits 0 on unknown keys and unparsable values: it only warns. Any
    # line about our unit is a failure; lines about other units on the host are not ours.
    return [line for line in (proc.stdout + proc.stderr).splitlines() if path.name in line or str(path) in line]


def test_systemd_analyze_verify(tmp_path):
    analyze = _analyze_or_skip()
    path = checkout_copy(tmp_path)
    proc = verify(analyze, path)
    assert proc.returncode == 0 and complaints(proc, path) == [], proc.stdout + proc.stderr


def test_verify_catches_what_this_test_relies_on(tmp_path):
    """The check above can fail: a misspelt key and a bad value are reported."""
    analyze = _analyze_or_skip()
    path = checkout_copy(tmp_path)
    path.write_text(
        path.read_text()
        .replace("ProtectSystem=strict", "ProtectSystm=strict")
        .replace("WatchdogSec=30", "WatchdogSec=thirty")
    )
    found = "\n".join(complaints(verify(analyze, path), path))
    assert "Unknown key 'ProtectSystm'" in found and "thirty" in found, found


def test_systemd_analyze_security_exposure_is_low(tmp_path):
    analyze = _analyze_or_skip()
    path = checkout_copy(tmp_path)
    # --threshold: exit non-zero when the exposure (0-100 here, 0.0-10.0 shown) is above it.
    proc = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", "--threshold=20", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "Overall exposure level for stockade.service" in proc.stdout
