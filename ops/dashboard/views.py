"""What the dashboard shows, as plain JSON-able data.

Every view reads the storage in read transactions (a consistent snapshot,
no lock on the writers) and the same `status` the control socket gives; none
asks an actor. Each is bounded: pages and caps, never a whole table per
request, because the web thread shares the interpreter with the actors.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import msgspec

from stockade.ops.alerts import report as alert_report
from stockade.ops.commands import status
from stockade.ops.dashboard.journal_tail import JournalTail
from stockade.ops.report import build_report
from stockade.storage.tables import parse_time_key, time_key
from stockade.trading.market_hours import exchange_date

MAX_PAGE = 200
DECISION_SCAN = 2_000  # voter records looked at for one page of proposals
RISK_SCAN = 5_000
EQUITY_SCAN = 20_000
PENDING_SCAN = 20_000
REPORT_CACHE_S = 30.0
OPEN_ORDERS_SHOWN = 200


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


class Views:
    """The dashboard's reads over the daemon's services and tree."""

    def __init__(self, svc: Any, tree: Any, tail: JournalTail) -> None:
        self.svc = svc
        self.tree = tree
        self.tail = tail
        self._report: tuple[float, dict[str, Any]] | None = None
        self._report_lock = threading.Lock()

    # ---- overview -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The control socket's `status`, as `ctl status` prints it."""
        return status(self.svc, self.tree)

    def overview(self) -> dict[str, Any]:
        svc, store = self.svc, self.svc.store
        st = status(svc, self.tree)
        now = time.time_ns()
        with store.read() as txn:
            latest = store.equity.latest(1, txn=txn)
            day = store.counters.get(exchange_date(now), txn=txn)
            positions = [p for p in store.positions.values(txn=txn) if p.qty != 0]
            open_orders = list(store.open_orders(txn=txn))
        snap = latest[0] if latest else None
        marks = svc.stats.get("broker_positions", {})
        rows = []
        for p in sorted(positions, key=lambda p: p.symbol):
            stop, target = _protection(p, open_orders)
            mark = marks.get(p.symbol, {})
            rows.append(
                {
                    "symbol": p.symbol,
                    "qty": p.qty,
                    "avg_entry_price": _r(p.avg_entry_price),
                    "market_value": _r(mark.get("market_value"), 2),
                    "unrealized_pl": _r(mark.get("unrealized_pl"), 2),
                    "stop": _r(stop),
                    "target": _r(target),
                }
            )
        open_orders.sort(key=lambda o: o.created_ns, reverse=True)
        orders = [_order(o) for o in open_orders[:OPEN_ORDERS_SHOWN]]
        md = svc.stats.get("market_data", {})
        ages = md.get("quote_age_s", {})
        counts = md.get("quotes_by_symbol", {})
        stale = set(md.get("stale_symbols", ()))
        feed = [
            {"symbol": s, "age_s": ages.get(s), "quotes": counts.get(s, 0), "stale": s in stale}
            for s in svc.settings.trading.symbols
        ]
        return {
            "ts_ns": now,
            "trading_state": st["trading_state"],
            "trading_state_reason": st["trading_state_reason"],
            "healthy": st["healthy"],
            "venue": st["venue"],
            "uptime_s": st["uptime_s"],
            "control_enabled": svc.settings.dashboard.control,
            "equity": _r(snap.equity, 2) if snap else None,
            "cash": _r(snap.cash, 2) if snap else None,
            "exposure": _r(snap.positions_value, 2) if snap else None,
            "pnl_today": _r(snap.equity - day.start_equity, 2) if snap and day and day.start_equity else None,
            "unrealized_pl": _r(sum(m.get("unrealized_pl", 0.0) for m in marks.values()), 2),
            "positions": rows,
            "open_orders": orders,
            "open_orders_total": len(open_orders),
            "orders_placed": st["orders_placed"],
            "market_clock": svc.stats.get("market_clock", {}),
            "feed": {"state": md.get("state", "unknown"), "symbols": feed},
        }

    # ---- supervision tree -----------------------------------------------------

    def tree_view(self) -> dict[str, Any]:
        ages = self.tree.health.heartbeat_ages()
        report = self.tree.health_report()
        overdue = set(report.get("overdue_heartbeats", ()))
        actors = [
            {
                "name": a.name,
                "parent": a.parent,
                "alive": a.alive,
                "state": a.state,
                "restarts": a.restarts,
                "generation": a.generation,
                "mailbox": a.mailbox + a.buffered,
                "heartbeat_age_s": _r(ages.get(a.name), 2),
                "overdue": a.name in overdue,
            }
            for a in self.tree.snapshot()
        ]
        return {"healthy": report.get("healthy", False), "exhausted": report.get("exhausted", {}), "actors": actors}

    # ---- decisions ------------------------------------------------------------

    def decisions(self, limit: int = 25, before: str = "") -> dict[str, Any]:
        """Recent proposals, newest first: votes and weights, the risk verdict, the orders and fills."""
        store = self.svc.store
        limit = max(1, min(limit, MAX_PAGE))
        start = bytes.fromhex(before) if before else None
        newest: dict[str, Any] = {}
        steps: dict[str, list[str]] = {}
        cursor = ""
        scanned = 0
        with store.read() as txn:
            for key, r in store.voter_decisions.table.items(start=start, reverse=True, limit=DECISION_SCAN, txn=txn):
                scanned += 1
                if start is not None and key == start:
                    continue
                if r.proposal_id not in newest:
                    if len(newest) >= limit:
                        break
                    newest[r.proposal_id] = r
                steps.setdefault(r.proposal_id, []).insert(0, r.outcome)
                cursor = key.hex()
            oldest = min((r.proposed_ns or r.ts_ns for r in newest.values()), default=time.time_ns())
            risk: dict[str, Any] = {}
            for _, d in store.decisions.table.items(
                start=time_key(max(0, oldest - 5_000_000_000)), limit=RISK_SCAN, txn=txn
            ):
                if d.proposal_id in newest:
                    risk[d.proposal_id] = d
            out = []
            for pid, r in newest.items():
                orders = []
                for coid in self.tail.orders_of(pid):
                    o = store.orders.get(coid, txn=txn)
                    if o is not None:
                        orders.append({**_order(o), "fills": self.tail.fills_of(coid)})
                d = risk.get(pid)
                out.append(
                    {
                        "proposal_id": pid,
                        "ts_ns": r.ts_ns,
                        "symbol": r.symbol,
                        "side": r.side,
                        "outcome": r.outcome,
                        "steps": steps.get(pid, []),
                        "mode": r.mode,
                        "score": _r(r.score),
                        "confidence": _r(r.confidence),
                        "threshold": r.threshold,
                        "defensive": r.defensive,
                        "price": r.price,
                        "reason": r.reason,
                        "votes": [
                            {
                                "model": v.model,
                                "direction": _r(v.direction),
                                "confidence": _r(v.confidence),
                                "weight": _r(v.weight),
                            }
                            for v in r.votes
                        ],
                        "risk": None
                        if d is None
                        else {"allowed": d.allowed, "rule": d.rule, "reason": d.reason, "qty": d.qty},
                        "orders": orders,
                    }
                )
        more = scanned >= DECISION_SCAN or len(newest) >= limit
        return {"decisions": out, "next": cursor if more and cursor else ""}

    def pending(self) -> list[dict[str, Any]]:
        """Proposals parked for approval: the newest step of each recent proposal is `parked`."""
        timeout_s = self.svc.settings.voter.approval_timeout_s
        now = time.time_ns()
        since = now - int((timeout_s + 60) * 1e9)
        newest: dict[str, Any] = {}
        with self.svc.store.read() as txn:
            for _, r in self.svc.store.voter_decisions.table.items(start=time_key(since), limit=PENDING_SCAN, txn=txn):
                newest[r.proposal_id] = r
        out = []
        for r in newest.values():
            expires_in = timeout_s - (now - r.proposed_ns) / 1e9
            if r.outcome != "parked" or expires_in <= 0:
                continue
            out.append(
                {
                    "proposal_id": r.proposal_id,
                    "symbol": r.symbol,
                    "side": r.side,
                    "score": _r(r.score),
                    "confidence": _r(r.confidence),
                    "price": r.price,
                    "models": list(r.models),
                    "votes": [
                        {"model": v.model, "direction": _r(v.direction), "weight": _r(v.weight)} for v in r.votes
                    ],
                    "age_s": round((now - r.proposed_ns) / 1e9, 1),
                    "expires_in_s": round(expires_in, 1),
                }
            )
        out.sort(key=lambda p: p["expires_in_s"])
        return out

    # ---- history --------------------------------------------------------------

    def alerts(self, limit: int = 50, level: str = "INFO") -> dict[str, Any]:
        rep = alert_report.report(
            self.svc.store, self.svc.stats.get("alerts"), limit=min(limit, MAX_PAGE), min_level=level
        )
        # "key" is a secret-bearing name to the redaction filter: call it what it is.
        rep["alerts"] = [{("alert_key" if k == "key" else k): v for k, v in a.items()} for a in rep["alerts"]]
        return rep

    def equity(self, hours: float = 24.0, points: int = 500) -> dict[str, Any]:
        """Equity over the last `hours`, at most `points` points, with the drawdown from the running peak."""
        since = time.time_ns() - int(hours * 3600e9)
        with self.svc.store.read() as txn:
            snaps = [
                s
                for _, s in self.svc.store.equity.table.items(reverse=True, limit=EQUITY_SCAN, txn=txn)
                if s.ts_ns >= since
            ]
        snaps.reverse()
        step = max(1, len(snaps) // max(points, 2))
        series = snaps[::step]
        if snaps and series[-1] is not snaps[-1]:
            series.append(snaps[-1])
        peak = 0.0
        out, max_dd = [], 0.0
        for s in series:
            peak = max(peak, s.equity)
            dd = (s.equity - peak) / peak if peak > 0 else 0.0
            max_dd = min(max_dd, dd)
            out.append({"ts_ns": s.ts_ns, "equity": round(s.equity, 2), "drawdown": round(dd, 6)})
        return {"points": out, "max_drawdown": round(max_dd, 6), "snapshots": len(snaps)}

    def report(self) -> dict[str, Any]:
        """The per-member report of `run.py report` (reads the whole history: cached)."""
        with self._report_lock:
            now = time.monotonic()
            if self._report is None or now - self._report[0] > REPORT_CACHE_S:
                self._report = (now, build_report(self.svc.store))
            return self._report[1]

    def orders(self, limit: int = 50, after: str = "", open_only: bool = False) -> dict[str, Any]:
        """Orders by client order id, a page at a time (`after`: the last id of the previous page)."""
        limit = max(1, min(limit, MAX_PAGE))
        table = self.svc.store.open_index if open_only else self.svc.store.orders
        rows = []
        with self.svc.store.read() as txn:
            for key, o in table.items(start=after or None, limit=limit + 1, txn=txn):
                if key == after:
                    continue
                rows.append(_order(o))
                if len(rows) >= limit:
                    break
            total = table.count(txn=txn)
        return {"orders": rows, "total": total, "next": rows[-1]["client_order_id"] if len(rows) >= limit else ""}

    def audit(self, limit: int = 50) -> list[dict[str, Any]]:
        return [msgspec.to_builtins(a) for a in self.svc.store.audit.latest(min(limit, MAX_PAGE))]

    # ---- live updates ---------------------------------------------------------

    def live(self) -> dict[str, Any]:
        """What each live update carries: the overview, the tree, the pending proposals."""
        newest = self.svc.store.voter_decisions.table.items(reverse=True, limit=1)
        last = next(iter(newest), None)
        return {
            "overview": self.overview(),
            "tree": self.tree_view(),
            "pending": self.pending(),
            "last_decision_ns": parse_time_key(last[0])[0] if last else 0,
        }


def _order(o: Any) -> dict[str, Any]:
    return {
        "client_order_id": o.client_order_id,
        "symbol": o.symbol,
        "side": o.side,
        "qty": o.qty,
        "type": o.order_type,
        "class": o.order_class,
        "state": o.state,
        "filled_qty": o.filled_qty,
        "filled_avg_price": _r(o.filled_avg_price),
        "limit_price": o.limit_price,
        "stop_price": o.stop_price,
        "created_ns": o.created_ns,
        "proposal_id": o.proposal_id,
        "reason": o.reason,
    }


def _protection(p: Any, open_orders: list[Any]) -> tuple[float | None, float | None]:
    """(stop, target) of a position: its working exit orders, else the bracket's planned levels."""
    exit_side = "sell" if p.qty > 0 else "buy"
    stop = target = None
    for o in open_orders:
        if o.symbol != p.symbol:
            continue
        if o.side == exit_side and o.order_type in ("stop", "stop_limit", "trailing_stop") and o.stop_price:
            stop = o.stop_price
        elif o.side == exit_side and o.order_type == "limit" and o.parent_id:
            target = o.limit_price
        if o.stop_loss and stop is None:
            stop = o.stop_loss
        if o.take_profit and target is None:
            target = o.take_profit
    return stop, target
