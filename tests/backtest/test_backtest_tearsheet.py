"""The tearsheet renders in a real headless Chromium, offline, with no console message.

Skips on a developer machine without /usr/bin/chromium (Debian's package);
fails under CI (STOCKADE_CI=1), where the browser must be there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_backtest_lookahead import write_bars  # the same small file of bars

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")


def _need_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("STOCKADE_CI") == "1":
        pytest.fail("CI needs /usr/bin/chromium for the tearsheet test (apt-get install chromium)")
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)")


def load(page: Path, tmp: Path) -> tuple[str, list[str]]:
    """The DOM Chromium built from `page`, and every console line it logged."""
    done = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={tmp / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def tearsheet(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sheet")
    bars = tmp / "bars.csv"
    write_bars(bars, spike=False)
    out = tmp / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "backtest",
            "--source",
            "file",
            "--file",
            str(bars),
            "--start",
            "2026-06-01",
            "--end",
            "2026-06-01",
            "--data-dir",
            str(tmp / "data"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "tearsheet.html"


def test_tearsheet_is_self_contained(tearsheet):
    html = tearsheet.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing from the network
    for section in (
        "Equity (USD)",
        "Drawdown",
        "Monthly returns",
        "ACME: price and fills",
        "Attribution per ensemble member",
        "Attribution per symbol",
        "Risk refusals by rule",
        "data_fingerprint",
        "settings_fingerprint",
    ):
        assert section in html, section


def test_tearsheet_renders_its_charts_in_chromium_without_console_errors(tearsheet, tmp_path):
    _need_chromium()
    dom, console = load(tearsheet, tmp_path)
    assert console == []
    charts = re.findall(r'<svg class="chart".*?</svg>', dom, re.S)
    assert len(charts) >= 5  # equity, drawdown, monthly, one price chart, refusals
    assert all(("<path" in c or "<rect" in c) for c in charts)
    assert dom.count("<circle") >= 1  # fills on the price chart


def test_the_console_check_sees_an_error(tmp_path):
    # The harness itself: a page with a script error must show up as a console line.
    _need_chromium()
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>notDefined()</script></body></html>")
    _, console = load(page, tmp_path)
    assert any("notDefined" in line for line in console)
