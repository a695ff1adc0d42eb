"""`report --data-dir LIVE --compare-data-dir BT`: a live period and a backtest side by side.

The live data dir is written with the daemon's own storage code (as in
test_ops_report.py, plus a risk refusal and an alert); the backtest's is a
real `python run.py backtest` out dir. Each column must be exactly that
dir's own report, and the page must draw both equity curves.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stockade.codecs.records import AlertRecord, DecisionRecord
from stockade.ops import report
from stockade.storage.store import Store

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(REPO / "tests" / "backtest"))

from test_backtest_lookahead import write_bars  # noqa: E402 - the backtest tests' small file of bars
from test_backtest_tearsheet import _need_chromium, load  # noqa: E402 - the headless browser check
from test_ops_report import data_dir, ns  # noqa: E402, F401 - the hand-worked live data dir (a fixture)


@pytest.fixture
def live(data_dir):  # noqa: F811 - the imported fixture
    with Store.open(data_dir) as store:
        for i, rule in enumerate(("max_positions", "max_positions", "spread")):
            rec = DecisionRecord(
                ts_ns=ns(3, 15) + i, proposal_id=f"r{i}", symbol="X", allowed=False, rule=rule, reason="test"
            )
            store.decisions.add(rec, ts_ns=rec.ts_ns)
        store.add_alert(
            AlertRecord(level="WARNING", key="gap:X", text="X gapped", source="reconciler", ts_ns=ns(3, 14))
        )
    return data_dir


@pytest.fixture(scope="module")
def backtest_out(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bt")
    write_bars(tmp / "bars.csv", spike=False)
    out = tmp / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "backtest", "--source", "file", "--file", str(tmp / "bars.csv")]
        + ["--start", "2026-05-29", "--end", "2026-06-01", "--data-dir", str(tmp / "data"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = report.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_each_column_is_that_dirs_own_report(live, backtest_out, capsys):
    code, both, err = _run(capsys, "--data-dir", str(live), "--compare-data-dir", str(backtest_out), "--json")
    assert code == 0, err
    periods = json.loads(both)["periods"]
    assert [p["label"] for p in periods] == ["live 2026-03-02..2026-03-04", "backtest 2026-05-29..2026-06-01"]
    for p, d in zip(periods, (live, backtest_out), strict=True):
        _, alone, _ = _run(capsys, "--data-dir", str(d), "--json")
        assert {k: v for k, v in p.items() if k not in ("label", "data_dir")} == json.loads(alone)
    lv, bt = periods
    assert lv["refusals"]["by_rule"] == {"max_positions": 2, "spread": 1}
    assert lv["alerts"]["by_level"] == {"WARNING": 1}
    assert bt["overall"]["trades"] > 0 and bt["portfolio"]["days"] == 2  # a backtest that traded


def test_text_puts_the_periods_in_columns(live, backtest_out, capsys):
    code, text, err = _run(capsys, "--data-dir", str(live), "--compare-data-dir", str(backtest_out))
    assert code == 0, err
    rows = {line.split("  ")[0].strip(): line for line in text.splitlines()}
    header = next(line for line in text.splitlines() if "live 2026-03-02..2026-03-04" in line and "backtest" in line)
    assert header.index("live") < header.index("backtest")
    cells = rows["trades"].split()
    lv, bt = (json.loads(_run(capsys, "--data-dir", str(d), "--json")[1]) for d in (live, backtest_out))
    assert cells[-2:] == [str(lv["overall"]["trades"]), str(bt["overall"]["trades"])]
    assert rows["refused by max_positions"].split()[-2:][0] == "2"
    assert rows["refused by spread"].split()[-2:][0] == "1"
    for line in ("net P&L (closed trades)", "hit rate", "max drawdown", "alerts WARNING"):
        assert line in rows, line
    for member in set(lv["members"]) | set(bt["members"]):  # attribution per member, from both periods
        assert f"member {member}: net_pnl" in rows


def test_html_has_both_equity_curves_and_renders(live, backtest_out, capsys, tmp_path):
    page = tmp_path / "compare.html"
    code, _, err = _run(capsys, "--data-dir", str(live), "--compare-data-dir", str(backtest_out), "--html", str(page))
    assert code == 0, err
    html = page.read_text()
    overlay = re.search(r"<figcaption>Equity, % from each period.*?</svg>", html, re.S)
    assert overlay is not None and overlay.group(0).count("<path") == 2  # one curve per period
    assert "Equity (USD): live 2026-03-02..2026-03-04" in html and "Equity (USD): backtest 2026-05-29" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # opens offline
    _need_chromium()
    dom, console = load(page, tmp_path)
    assert console == []
    assert dom.count('<svg class="chart"') >= 3


def test_bad_compare_arguments(live, tmp_path, capsys):
    code, _, err = _run(capsys, "--data-dir", str(live), "--compare-data-dir", str(tmp_path / "none"))
    assert code == 1 and "no stockade data in" in err and "none" in err
    code, _, err = _run(capsys, "--data-dir", str(live), "--html", str(tmp_path / "x.html"))
    assert code == 2 and "--compare-data-dir" in err
