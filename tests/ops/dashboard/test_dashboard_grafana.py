"""deploy/grafana-dashboard.json queries only metrics that /metrics serves."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from stockade.codecs.records import DayCounters, EquitySnapshot
from stockade.trading.market_hours import exchange_date

GRAFANA = Path(__file__).resolve().parents[3] / "deploy" / "grafana-dashboard.json"


def test_grafana_dashboard_uses_served_metrics(make_dash):
    dash = make_dash()
    now = time.time_ns()
    # Equity and the day's start exist once the reconciler has run: here, written as it writes them.
    dash.store.equity.add(EquitySnapshot(ts_ns=now, equity=100_500.0, cash=50_000.0))
    dash.store.counters.put(exchange_date(now), DayCounters(date=exchange_date(now), start_equity=100_000.0))
    served = set()
    for family in text_string_to_metric_families(dash.get("/metrics").body.decode()):
        served.add(family.name)
        served.update(s.name for s in family.samples)
    board = json.loads(GRAFANA.read_text())
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    used = {name for p in board["panels"] for t in p["targets"] for name in re.findall(r"stockade_\w+", t["expr"])}
    assert len(used) >= 15
    # Counter samples end in _total and histograms in _bucket; a family with no
    # samples yet (no rejection so far) still shows its family name.
    unknown = {n for n in used if n not in served and re.sub(r"_(total|bucket|count|sum)$", "", n) not in served}
    assert unknown == set()
