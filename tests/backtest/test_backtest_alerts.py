"""Alerts and the gap-risk check in a backtest: they run as live, on the simulated clock.

A position held over a weekend whose symbol opens 10% higher on Monday: the
reconciler's first pass after the open measures the gap from what the replay
showed the venue (Friday's last price, Monday's first), and the Alerter
records the EXTREME gap's alert in the out dir (history and alerts.jsonl).
A webhook is configured and must get nothing: a backtest never pages anyone.

Real parts: the daemon's actor classes, the alpaca-py clients on the
in-process venue, real lmdb files, a real listening socket as the webhook.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import socket
from pathlib import Path

from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from stockade.actors import names
from stockade.config.settings import settings_from_dict
from stockade.ops.backtest import Engine
from stockade.ops.backtest_alerts import ALERTS_FILE
from stockade.ops.backtest_data import FileSource
from stockade.ops.report import build_report
from stockade.ops.tearsheet import render
from stockade.storage.store import Store

FRIDAY, MONDAY = dt.date(2026, 5, 29), dt.date(2026, 6, 1)
GAP = 1.10  # Monday opens 10% above Friday's close: EXTREME at the shipped 5% threshold


def write_gap_bars(path: Path) -> tuple[float, float]:
    """A quiet Friday and a Monday that opens GAP times higher; (Friday's last close, Monday's open)."""
    rng = random.Random(5)
    price = 40.0
    lines = ["timestamp,symbol,open,high,low,close,volume"]
    friday_close = monday_open = 0.0
    for day in (FRIDAY, MONDAY):
        t = dt.datetime(day.year, day.month, day.day, 13, 30, tzinfo=dt.UTC)
        if day == MONDAY:
            price = round(price * GAP, 4)
            monday_open = price
        for _ in range(390):
            o = price
            c = round(o * (1 + rng.gauss(0, 0.0005)), 4)
            hi, lo = max(o, c), min(o, c)
            lines.append(f"{t.isoformat().replace('+00:00', 'Z')},ACME,{o:.4f},{hi:.4f},{lo:.4f},{c:.4f},1000")
            price = c
            t += dt.timedelta(minutes=1)
        if day == FRIDAY:
            friday_close = price
    path.write_text("\n".join(lines) + "\n")
    return friday_close, monday_open


def test_a_gap_at_the_open_is_measured_on_simulated_time_and_its_alert_recorded_not_delivered(tmp_path):
    friday_close, monday_open = write_gap_bars(tmp_path / "bars.csv")
    hook = socket.socket()
    hook.bind(("127.0.0.1", 0))
    hook.listen(8)
    hook.setblocking(False)
    url = f"http://127.0.0.1:{hook.getsockname()[1]}/hook"
    settings = settings_from_dict({"logging": {"level": "WARNING"}, "alerts": {"webhook_url": url}})
    source = FileSource(tmp_path / "bars.csv", None, FRIDAY, MONDAY)
    b = settings.backtest
    friday, monday = list(source.days(b.bar_spread_bps, b.quote_size))
    out = tmp_path / "out"
    engine = Engine(settings, ("ACME",), 4, out, None, market=source.market)
    try:
        engine.replay(friday.events[:40])
        alerter = engine.dispatcher.actors[names.ALERTER]
        assert alerter.workers == []  # no delivery thread: the webhook has no way to be called
        assert [c.name for c in alerter.local] == ["jsonl"]
        # A position held over the weekend (bought through the same alpaca-py client the actors use).
        engine.svc.broker.trading_client().submit_order(
            MarketOrderRequest(symbol="ACME", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
        )
        engine.replay(friday.events[40:])
        assert engine.svc.stats.get("gap_risk") is None  # not measured yet: no open seen after the first
        engine.replay(monday.events)
        engine.finish()
    finally:
        engine.close()

    gap = engine.svc.stats["gap_risk"]["ACME"]
    # Prices are the quotes' mids, i.e. the bars' prices.
    assert gap["previous_close"] == round(friday_close, 4) or abs(gap["previous_close"] - friday_close) < 1e-6
    assert abs(gap["open"] - monday_open) < 1e-6
    assert gap["class"] == "EXTREME" and abs(gap["gap_pct"] - (monday_open / friday_close - 1) * 100) < 0.01

    store = Store.open(out, readonly=True)
    try:
        alerts = [r for _, r in store.alerts.items()]
        report = build_report(store)
        page = render(store, {"symbols": ["ACME"]}, {}, engine.prices)
    finally:
        store.close()
    gaps = [a for a in alerts if a.key == "gap:ACME"]
    assert len(gaps) == 1 and gaps[0].level == "CRITICAL"
    assert gaps[0].ts_ns > int(dt.datetime(2026, 6, 1, 13, 30, tzinfo=dt.UTC).timestamp()) * 10**9  # simulated now
    lines = [json.loads(x) for x in (out / ALERTS_FILE).read_text().splitlines()]
    assert any(x["key"] == "gap:ACME" and x["level"] == "CRITICAL" for x in lines)

    try:
        hook.accept()
        raise AssertionError("the backtest called the webhook")
    except BlockingIOError:
        pass  # nobody knocked
    finally:
        hook.close()

    assert report["alerts"]["by_level"].get("CRITICAL", 0) >= 1
    assert any(a["key"] == "gap:ACME" for a in report["alerts"]["recent"])
    assert "gap:ACME" in page and "Alerts by level" in page
