"""`python run.py report` on real lmdb files: missing, empty and hand-worked data dirs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stockade.codecs.records import EquitySnapshot, FillRecord, OrderRecord, VoteEntry, VoterDecisionRecord
from stockade.ops import report
from stockade.storage.store import Store

REPO = Path(__file__).resolve().parents[2]


def ns(day: int, hour: int) -> int:
    return int(datetime(2026, 3, day, hour, tzinfo=UTC).timestamp() * 1e9)


def decision(pid: str, models: tuple[str, ...], outcome: str, ts: int) -> VoterDecisionRecord:
    return VoterDecisionRecord(
        ts_ns=ts,
        proposal_id=pid,
        symbol="X",
        side="buy",
        outcome=outcome,
        mode="auto",
        score=0.3,
        confidence=0.8,
        threshold=0.05,
        min_confidence=0.65,
        models=models,
        price=100.0,
        proposed_ns=ts,
        votes=tuple(VoteEntry(model=m, direction=1.0, confidence=0.6, weight=1 / len(models)) for m in models),
    )


def order(coid, side, qty, proposal_id="", parent_id=None):
    return OrderRecord(
        client_order_id=coid,
        intent_id=coid,
        symbol="X",
        side=side,
        qty=qty,
        order_type="market",
        created_ns=0,
        updated_ns=0,
        proposal_id=proposal_id,
        parent_id=parent_id,
        state="filled",
    )


def fill(n, coid, side, qty, price, ts):
    return FillRecord(
        exec_id=f"e{n}",
        client_order_id=coid,
        broker_order_id=None,
        symbol="X",
        side=side,
        qty=qty,
        price=price,
        ts_ns=ts,
    )


def run(capsys, *args) -> tuple[int, str, str]:
    code = report.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_missing_data_dir_says_so(tmp_path, capsys):
    code, out, err = run(capsys, "--data-dir", str(tmp_path / "nothing"))
    assert code == 1 and out == ""
    assert "no stockade data in" in err and "nothing" in err


def test_empty_data_dir_reports_nothing_yet(tmp_path, capsys):
    Store.open(tmp_path / "d").close()
    code, out, _ = run(capsys, "--data-dir", str(tmp_path / "d"))
    assert code == 0
    assert "no equity snapshots yet" in out and "(no trades)" in out and "== proposals == 0 (none)" in out
    code, out, _ = run(capsys, "--data-dir", str(tmp_path / "d"), "--json")
    rep = json.loads(out)
    assert rep["overall"]["trades"] == 0 and rep["members"] == {} and rep["portfolio"]["sharpe"] is None


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "d"
    with Store.open(d) as store:
        for o in (
            order("entry1", "buy", 10, "p1"),
            order("tp1", "sell", 10, parent_id="entry1"),
            order("entry2", "buy", 5, "p2"),
            order("exit2", "sell", 5),
            order("entry3", "buy", 2, "p3"),
        ):
            store.put_order(o)
        store.fills.put_many(
            {
                f.exec_id: f
                for f in (
                    fill(1, "entry1", "buy", 10, 100.0, ns(2, 15)),
                    fill(2, "tp1", "sell", 10, 101.6, ns(2, 16)),  # +16
                    fill(3, "entry2", "buy", 5, 50.0, ns(3, 15)),
                    fill(4, "exit2", "sell", 5, 49.0, ns(3, 16)),  # -5
                    fill(5, "entry3", "buy", 2, 20.0, ns(4, 15)),  # open
                )
            }
        )
        for rec in (
            decision("p1", ("momentum", "gbm"), "proposed", ns(2, 14)),
            decision("p2", ("breakout",), "parked", ns(3, 14)),
            decision("p2", ("breakout",), "approved", ns(3, 14) + 1),
            decision("p3", ("momentum",), "proposed", ns(4, 14)),
            decision("p4", ("momentum",), "parked", ns(4, 17)),
            decision("p4", ("momentum",), "expired", ns(4, 18)),
        ):
            store.voter_decisions.add(rec, ts_ns=rec.ts_ns)
        for ts, eq in (
            (ns(2, 12), 100_000.0),
            (ns(2, 13), 100_500.0),
            (ns(2, 20), 100_000.0),
            (ns(3, 12), 101_500.0),
            (ns(3, 20), 101_000.0),
            (ns(4, 20), 100_495.0),
        ):
            store.equity.add(EquitySnapshot(ts_ns=ts, equity=eq, cash=eq), ts_ns=ts)
    return d


def test_hand_worked_report(data_dir, capsys):
    code, out, _ = run(capsys, "--data-dir", str(data_dir), "--json")
    assert code == 0
    rep = json.loads(out)
    p = rep["portfolio"]
    # Daily closes 100000, 101000, 100495: returns +1%, -0.5%.
    assert p["days"] == 3 and p["snapshots"] == 6
    assert p["sharpe"] == pytest.approx(0.0025 / math.sqrt(2 * 0.0075**2) * math.sqrt(252))
    assert p["sortino"] == pytest.approx(0.0025 / math.sqrt(0.005**2 / 2) * math.sqrt(252))
    assert p["var_95"] == pytest.approx(0.005) and p["es_95"] == pytest.approx(0.005)
    # Over every snapshot: 101500 (intraday) down to 100495.
    assert p["max_drawdown"] == pytest.approx(1005.0) and p["max_drawdown_pct"] == pytest.approx(1005 / 1015)

    o = rep["overall"]
    assert o["trades"] == 2 and o["win_rate"] == 0.5 and o["net_pnl"] == pytest.approx(11.0)
    assert o["profit_factor"] == pytest.approx(16 / 5) and o["expectancy"] == pytest.approx(5.5)
    assert o["max_drawdown"] == pytest.approx(5.0)
    # entry3 (2 @ 20) is marked at the newest price seen for X: p4's decision at 100, after the fill.
    assert o["var_95"] == pytest.approx(5 / 250) and o["unrealized_pnl"] == pytest.approx(160.0)

    m = rep["members"]
    assert set(m) == {"momentum", "gbm", "breakout"}
    assert m["momentum"]["kind"] == "rule" and m["gbm"]["kind"] == "model"
    assert m["momentum"]["trades"] == 1 and m["momentum"]["profit_factor"] == "inf"  # no losing trade
    assert m["breakout"]["win_rate"] == 0.0 and m["breakout"]["net_pnl"] == pytest.approx(-5.0)
    assert rep["symbols"]["X"]["trades"] == 2
    [open_trade] = rep["open_trades"]
    assert open_trade["open_qty"] == 2 and open_trade["members"] == ["momentum"]
    assert rep["proposals"] == {"total": 4, "by_outcome": {"approved": 1, "expired": 1, "proposed": 2}, "defensive": 0}


def test_text_report_has_every_section(data_dir, capsys):
    code, out, _ = run(capsys, "--data-dir", str(data_dir))
    assert code == 0
    assert "== portfolio" in out and "days 3" in out
    rows: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.strip():
            rows.setdefault(line.split()[0], line.split())  # the first row of each name: the tables
    assert rows["momentum"][1:4] == ["1", "100.0%", "inf"]
    assert rows["breakout"][1:3] == ["1", "0.0%"]
    assert rows["X"][1:4] == ["2", "50.0%", "3.200"]
    assert "== open trades ==" in out and "== proposals == 4" in out


def test_report_reads_beside_a_writer(data_dir):
    # A writer holds the data dir (lock and a fresh write) as the daemon does; the
    # report, another process, opens it read-only and sees the committed data.
    with Store.open(data_dir) as writer:
        writer.voter_decisions.add(decision("p5", ("logit",), "proposed", ns(5, 1)), ts_ns=ns(5, 1))
        proc = subprocess.run(
            [sys.executable, str(REPO / "run.py"), "report", "--json", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["proposals"]["total"] == 5
