"""Manual approval through the real control socket of a real daemon, against a
standalone venue: approved -> an order at the venue; rejected -> no order;
parked proposals survive a restart; unanswered ones expire. `run.py report`
reads the decisions while the daemon runs."""

from __future__ import annotations

import json
import subprocess
import sys

from daemon_harness import RUN_PY, DaemonProcess, _child_env, settings_text
from waiting import wait_for

from stockade.storage.store import Store

TIMEOUT_S = 30.0


def stored(data_dir):
    """(voter outcomes by proposal id, ledger orders by proposal id), read beside the running daemon."""
    store = Store.open(data_dir, readonly=True)
    try:
        outcomes: dict[str, list[str]] = {}
        for _, r in store.voter_decisions.items():
            outcomes.setdefault(r.proposal_id, []).append(r.outcome)
        orders: dict[str, list[str]] = {}
        for coid, o in store.orders.items():
            if o.proposal_id:
                orders.setdefault(o.proposal_id, []).append(coid)
        return outcomes, orders
    finally:
        store.close()


def report(data_dir) -> dict:
    proc = subprocess.run(
        [sys.executable, RUN_PY, "report", "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_child_env(),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_manual_approval_reject_restart_and_expiry(short_dir, venue):
    data = short_dir / "data"
    text = settings_text(venue, voter={"mode": "manual", "cooldown_s": 0.5, "approval_timeout_s": TIMEOUT_S})
    daemon = DaemonProcess(data, text, venue)
    try:
        daemon.wait_ready()
        first = wait_for(
            lambda: [p for p in daemon.ok("pending") if p["side"] == "buy"], 60, 0.2, "a parked buy proposal"
        )[0]
        assert daemon.status()["orders_placed"] == 0 and venue.orders() == []  # nothing goes out unapproved

        # Approved -> the order manager places it at the venue.
        assert daemon.ok("approve", id=first["proposal_id"])["approved"] == first["proposal_id"]
        placed = wait_for(lambda: stored(data)[1].get(first["proposal_id"]), 30, 0.2, "the approved proposal's order")
        wait_for(lambda: {o.client_order_id for o in venue.orders()} & set(placed), 30, 0.2, "the order at the venue")

        # Rejected -> no order, ever.
        other = wait_for(
            lambda: [p for p in daemon.ok("pending") if p["proposal_id"] != first["proposal_id"]],
            60,
            0.2,
            "another parked proposal",
        )[0]
        assert daemon.ok("reject", id=other["proposal_id"], reason="e2e")["rejected"] == other["proposal_id"]
        assert other["proposal_id"] not in {p["proposal_id"] for p in daemon.ok("pending")}

        # Parked proposals survive a restart.
        kept = wait_for(
            lambda: [p for p in daemon.ok("pending") if p["expires_in_s"] > TIMEOUT_S - 5],
            60,
            0.2,
            "a fresh proposal to carry over a restart",
        )[0]
        assert daemon.stop() == 0
        daemon = DaemonProcess(data, text, venue)
        daemon.wait_ready()
        assert kept["proposal_id"] in {p["proposal_id"] for p in daemon.ok("pending")}, daemon.log()[-3000:]

        # Unanswered -> expires after approval_timeout_s (counted from when it was made).
        wait_for(
            lambda: "expired" in stored(data)[0].get(kept["proposal_id"], []),
            TIMEOUT_S + 20,
            0.5,
            "the carried-over proposal to expire",
        )
        assert kept["proposal_id"] not in {p["proposal_id"] for p in daemon.ok("pending")}

        outcomes, orders = stored(data)
        assert outcomes[first["proposal_id"]] == ["parked", "approved"]
        assert outcomes[other["proposal_id"]] == ["parked", "rejected"]
        assert outcomes[kept["proposal_id"]] == ["parked", "expired"]
        assert other["proposal_id"] not in orders and kept["proposal_id"] not in orders

        # The report reads the same data while the daemon runs.
        rep = report(data)
        by = rep["proposals"]["by_outcome"]
        assert by.get("approved", 0) >= 1 and by.get("rejected", 0) >= 1 and by.get("expired", 0) >= 1
        assert rep["portfolio"]["snapshots"] >= 1
        assert all(a["restarts"] == 0 for a in daemon.status()["actors"])
    finally:
        assert daemon.stop() == 0


def test_hybrid_mode_sends_confident_proposals_and_parks_the_rest(short_dir):
    data = short_dir / "data"
    daemon = DaemonProcess(data, settings_text(None, voter={"mode": "hybrid", "cooldown_s": 0.5}))
    try:
        daemon.wait_ready()

        def both() -> dict[str, list] | None:
            store = Store.open(data, readonly=True)
            try:
                first: dict[str, object] = {}
                for _, r in store.voter_decisions.items():
                    first.setdefault(r.proposal_id, r)
            finally:
                store.close()
            by: dict[str, list] = {}
            for r in first.values():
                by.setdefault(r.outcome, []).append(r)
            return by if by.get("proposed") and by.get("parked") else None

        by = wait_for(both, 90, 0.5, "one proposal sent on and one parked")
        assert all(r.confidence >= 0.8 and r.mode == "hybrid" for r in by["proposed"])
        assert all(0.65 <= r.confidence < 0.8 for r in by["parked"])
        wait_for(lambda: daemon.status()["orders_placed"] >= 1, 30, 0.2, "an order from a confident proposal")
        assert all(0.65 <= p["confidence"] < 0.8 for p in daemon.ok("pending"))
    finally:
        assert daemon.stop() == 0
