"""`/metrics`: Prometheus text format, read from existing state at scrape time.

Nothing here sits on the quote path. A scrape reads the tree's snapshot, the
counters the actors already publish (`svc.stats`), the shared REST bucket and
the storage (read transactions); the journal and risk-decision tails turn
appended records into counters and the tick-to-order histogram. The one
counter bumped per quote (`FeedWatch.quote`, a dict store it already did) is
published by the streamer once a second.

Counters restart from zero with the daemon (or, for quotes, with the
streamer), which Prometheus' `rate()` and `increase()` handle.
Everything lives in a private registry: no process-global state, so two
daemons in one test process do not mix.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from stockade.ops.dashboard.journal_tail import JournalTail
from stockade.storage.tables import time_key
from stockade.trading.market_hours import exchange_date

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Tick-to-order buckets (seconds): the pipeline is sub-millisecond to tens of ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ORDER_SCAN_EVERY_S = 10.0
TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")


class RiskTail:
    """Counts risk refusals by rule from the decisions table, from start on."""

    def __init__(self, store: Any, batch: int = 5_000) -> None:
        self.store = store
        self.batch = batch
        self.by_rule: Counter[str] = Counter()
        self._after = time_key(time.time_ns())

    def poll(self) -> None:
        table = self.store.decisions.table
        with self.store.read() as txn:
            rows = list(table.items(start=self._after, limit=self.batch, txn=txn))
        for key, record in rows:
            if key == self._after:
                continue
            if not record.allowed:
                self.by_rule[record.rule or "unknown"] += 1
            self._after = key


class StockadeCollector(Collector):
    """Builds every stockade metric family at scrape time."""

    def __init__(self, svc: Any, tree: Any, tail: JournalTail, risk: RiskTail) -> None:
        self.svc = svc
        self.tree = tree
        self.tail = tail
        self.risk = risk
        # The very bucket the order manager, reconciler and kill switch draw from.
        self.bucket = svc.rest_bucket()
        self._orders_at = -1e9
        self._orders_by_state: dict[str, int] = {}

    def collect(self) -> Iterator[Any]:
        svc, store = self.svc, self.svc.store
        md = svc.stats.get("market_data", {})
        quotes = CounterMetricFamily(
            "stockade_quotes_received", "Quotes received from the market-data stream", labels=["symbol"]
        )
        for sym, n in sorted(md.get("quotes_by_symbol", {}).items()):
            quotes.add_metric([sym], n)
        yield quotes
        stale = GaugeMetricFamily(
            "stockade_feed_staleness_seconds", "Seconds since the last quote of the symbol", labels=["symbol"]
        )
        for sym, age in sorted(md.get("quote_age_s", {}).items()):
            stale.add_metric([sym], float("inf") if age is None else age)
        yield stale
        yield GaugeMetricFamily(
            "stockade_feed_connected",
            "1 when the market-data stream is connected",
            value=1.0 if md.get("state") == "connected" else 0.0,
        )

        yield self._orders()
        rej = CounterMetricFamily("stockade_order_rejections", "Orders rejected, by reason", labels=["reason"])
        for reason, n in sorted(self.tail.rejection_counts().items()):
            rej.add_metric([reason], n)
        yield rej
        refusals = CounterMetricFamily(
            "stockade_risk_refusals", "Proposals refused by the risk guard, by rule", labels=["rule"]
        )
        for rule, n in sorted(self.risk.by_rule.items()):
            refusals.add_metric([rule], n)
        yield refusals

        restarts = CounterMetricFamily("stockade_actor_restarts", "Restarts of each actor", labels=["actor"])
        up = GaugeMetricFamily("stockade_actor_up", "1 while the actor is alive", labels=["actor"])
        depth = GaugeMetricFamily("stockade_mailbox_depth", "Messages waiting in the actor's mailbox", labels=["actor"])
        for a in self.tree.snapshot():
            restarts.add_metric([a.name], a.restarts)
            up.add_metric([a.name], 1.0 if a.alive else 0.0)
            depth.add_metric([a.name], a.mailbox + a.buffered)
        yield restarts
        yield up
        yield depth
        yield GaugeMetricFamily(
            "stockade_healthy", "1 while every heartbeat is answered", value=1.0 if self.tree.healthy() else 0.0
        )
        yield GaugeMetricFamily(
            "stockade_rest_budget_tokens",
            "REST budget tokens left (emergency reserve included)",
            value=self.bucket.tokens,
        )

        with store.read() as txn:
            state = svc.trading_state(txn)
            latest = store.equity.latest(1, txn=txn)
            day = store.counters.get(exchange_date(time.time_ns()), txn=txn)
            positions = [p for p in store.positions.values(txn=txn) if p.qty != 0]
        ts = GaugeMetricFamily("stockade_trading_state", "1 for the current trading state", labels=["state"])
        for name in TRADING_STATES:
            ts.add_metric([name], 1.0 if state.state == name else 0.0)
        yield ts
        if latest:
            snap = latest[0]
            yield GaugeMetricFamily(
                "stockade_equity_dollars", "Account equity at the last reconciliation", value=snap.equity
            )
            if day is not None and day.start_equity:
                yield GaugeMetricFamily(
                    "stockade_pnl_today_dollars",
                    "Equity change since the trading day's start",
                    value=snap.equity - day.start_equity,
                )
            yield GaugeMetricFamily(
                "stockade_exposure_dollars", "Market value of the positions (gross)", value=snap.positions_value
            )
        marks = svc.stats.get("broker_positions", {})
        yield GaugeMetricFamily(
            "stockade_unrealized_pnl_dollars",
            "Unrealised P&L of the open positions",
            value=sum(m.get("unrealized_pl", 0.0) for m in marks.values()),
        )
        yield GaugeMetricFamily("stockade_positions", "Open positions", value=len(positions))
        qty = GaugeMetricFamily("stockade_position_qty", "Shares held (negative: short)", labels=["symbol"])
        for p in positions:
            qty.add_metric([p.symbol], p.qty)
        yield qty
        yield CounterMetricFamily(
            "stockade_orders_placed", "Orders stockade placed (ledger)", value=store.orders_placed
        )

    def _orders(self) -> Any:
        # The orders table grows all day: count it at most every ORDER_SCAN_EVERY_S.
        now = time.monotonic()
        if now - self._orders_at >= ORDER_SCAN_EVERY_S:
            counts: Counter[str] = Counter()
            with self.svc.store.read() as txn:
                for o in self.svc.store.orders.values(txn=txn):
                    counts[o.state] += 1
            self._orders_by_state, self._orders_at = dict(counts), now
        fam = GaugeMetricFamily("stockade_orders", "Orders in the ledger, by state", labels=["state"])
        for state, n in sorted(self._orders_by_state.items()):
            fam.add_metric([state], n)
        return fam


class Metrics:
    """The registry and the tails behind it; `render()` is one scrape."""

    def __init__(self, svc: Any, tree: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram(
            "stockade_tick_to_order_seconds",
            "From a quote off the socket to the first submit request of the order it led to",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tail = JournalTail(svc.store, on_latency=self.latency.observe)
        self.risk = RiskTail(svc.store)
        self.registry.register(StockadeCollector(svc, tree, self.tail, self.risk))
        self._lock = threading.Lock()

    def poll(self) -> None:
        """Read what was appended since the last call (called at each update and each scrape)."""
        with self._lock:
            self.tail.poll()
            self.risk.poll()

    def render(self) -> bytes:
        self.poll()
        return generate_latest(self.registry)
