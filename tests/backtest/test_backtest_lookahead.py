"""No look-ahead: a price spike planted in the future changes nothing before it.

Two backtests on the same file of minute bars, one with a spike planted at
T (prices x1.4 for five minutes), one without. Every record stamped before T
(risk decisions, voter decisions, orders last touched, fills, journal
events, equity snapshots) must be identical: a decision that saw any price
after its own time (warm-up history, a fill at a later price, a bar read
before it closed) would differ. After T the runs must differ, or the spike
was never seen at all and the comparison proves nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import msgspec

from stockade.ops.backtest import records

ROOT = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
SPIKE = dt.datetime(2026, 6, 1, 18, 30, tzinfo=dt.UTC)  # 14:30 New York
SPIKE_NS = int(SPIKE.timestamp()) * NS
TIMESERIES = {b"decisions", b"voter_decisions", b"equity", b"alerts"}


def write_bars(path: Path, spike: bool) -> None:
    rng = random.Random(11)
    price = 50.0
    lines = ["timestamp,symbol,open,high,low,close,volume"]
    for day in (dt.date(2026, 5, 29), dt.date(2026, 6, 1)):
        t = dt.datetime(day.year, day.month, day.day, 13, 30, tzinfo=dt.UTC)
        drift = 0.0
        for i in range(390):
            if i % 45 == 0:
                drift = rng.choice((-1, 1)) * 0.0009  # trends the rule strategies act on
            o = price
            c = o * (1 + drift + rng.gauss(0, 0.0012))
            hi, lo = max(o, c) * (1 + abs(rng.gauss(0, 0.0005))), min(o, c) * (1 - abs(rng.gauss(0, 0.0005)))
            if spike and SPIKE <= t < SPIKE + dt.timedelta(minutes=5):
                o, hi, lo, c = o * 1.4, hi * 1.4, lo * 1.4, c * 1.4  # planted: never seen before SPIKE
            else:
                price = c
            lines.append(
                f"{t.isoformat().replace('+00:00', 'Z')},ACME,{o:.4f},{hi:.4f},{lo:.4f},{c:.4f},"
                f"{rng.randint(2000, 9000)}"
            )
            t += dt.timedelta(minutes=1)
    path.write_text("\n".join(lines) + "\n")


def _stamp(table: bytes, key: bytes, value: bytes) -> int | None:
    """When a record was last written, in simulated ns (None: not a timed record)."""
    if table in TIMESERIES:
        return int.from_bytes(key[:8], "big")
    doc = msgspec.msgpack.decode(value)
    if not isinstance(doc, dict):
        return None
    if table == b"orders":
        return doc.get("updated_ns")
    if table in (b"fills", b"journal"):
        return doc.get("ts_ns")
    return None


def run(tmp: Path, spike: bool) -> tuple[list[tuple[bytes, bytes, bytes]], dict]:
    tmp.mkdir()
    bars = tmp / "bars.csv"
    write_bars(bars, spike)
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
            "--seed",
            "3",
            "--data-dir",
            str(tmp / "data"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "random"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return records(out), json.loads(done.stdout.strip().splitlines()[-1])


def test_a_planted_future_spike_changes_no_record_before_its_time(tmp_path):
    plain, s_plain = run(tmp_path / "plain", spike=False)
    spiked, s_spiked = run(tmp_path / "spiked", spike=True)

    def before(rows):
        return sorted((t, k, v) for t, k, v in rows if (ts := _stamp(t, k, v)) is not None and ts < SPIKE_NS)

    def after(rows):
        return sorted((t, k, v) for t, k, v in rows if (ts := _stamp(t, k, v)) is not None and ts >= SPIKE_NS)

    early = before(plain)
    tables = {t for t, _, _ in early}
    # Not vacuous: the strategies decided and traded before the spike.
    assert {b"decisions", b"voter_decisions", b"orders", b"equity"} <= tables, tables
    assert early == before(spiked)
    # ... and the spike was seen once its time came.
    assert after(plain) != after(spiked)
    assert s_plain["data_fingerprint"] != s_spiked["data_fingerprint"]


def test_a_file_market_serves_the_data_api_bars_complete_by_the_venues_now():
    # The analyzers' warm-up goes through the venue's data API, which gives the
    # market the venue's (simulated) now: a file's bars up to the last complete one.
    from alpaca.data.requests import StockBarsRequest
    from alpaca.data.timeframe import TimeFrame

    from stockade.ops.backtest_broker import BacktestBroker
    from stockade.ops.backtest_data import BarRow, FileMarket
    from stockade.venue.inprocess import InProcessVenue

    t0 = SPIKE_NS - 60 * 60 * NS
    market = FileMarket(("AAPL",), [BarRow("AAPL", t0 + i * 60 * NS, 100, 101, 99, 100.5, 1000) for i in range(30)])
    now = t0 + 20 * 60 * NS + 30 * NS  # half-way through the 21st bar
    market.bind_clock(lambda: now)
    venue = InProcessVenue(("AAPL",), lambda: now, market=market, clock_mode="always_open")
    client = BacktestBroker.for_venue(venue, key="LOOKAHEAD").data_client()
    bars = client.get_stock_bars(
        StockBarsRequest(
            symbol_or_symbols="AAPL",
            timeframe=TimeFrame.Minute,
            start=SPIKE - dt.timedelta(days=1),
            end=dt.datetime.fromtimestamp(now / NS, dt.UTC),
        )
    ).data["AAPL"]
    assert [int(b.timestamp.timestamp()) * NS for b in bars] == [t0 + i * 60 * NS for i in range(20)]
