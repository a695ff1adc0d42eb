"""The dashboard's reads over a real store: the journal tail, decisions joined
to their verdict, orders and fills, pending approvals, equity and drawdown."""

from __future__ import annotations

import time

from stockade.codecs.records import (
    DecisionRecord,
    EquitySnapshot,
    FillRecord,
    FillRecorded,
    IntentJournaled,
    OrderRecord,
    OrderStateChanged,
    OrderSubmitted,
    VoteEntry,
    VoterDecisionRecord,
)
from stockade.ops.dashboard.journal_tail import JournalTail, rejection_label

S = 1_000_000_000


def _order(coid: str, proposal: str, t: int, state: str = "intent") -> OrderRecord:
    return OrderRecord(
        client_order_id=coid,
        intent_id=coid,
        symbol="AAPL",
        side="buy",
        qty=5,
        order_type="market",
        state=state,
        created_ns=t,
        updated_ns=t,
        proposal_id=proposal,
        quote_recv_ns=t - 2_000_000,
    )


def _voter(pid: str, t: int, outcome: str) -> VoterDecisionRecord:
    return VoterDecisionRecord(
        ts_ns=t,
        proposal_id=pid,
        symbol="AAPL",
        side="buy",
        outcome=outcome,
        mode="manual",
        score=0.2,
        confidence=0.8,
        threshold=0.05,
        min_confidence=0.65,
        proposed_ns=t,
        votes=(
            VoteEntry(model="momentum", direction=1.0, confidence=0.8, weight=0.6),
            VoteEntry(model="breakout", direction=0.5, confidence=0.7, weight=0.4),
        ),
    )


def test_journal_tail_counts_only_news_and_keeps_history(make_dash):
    dash = make_dash()
    store, now = dash.store, time.time_ns()
    store.journal.append(IntentJournaled(ts_ns=now, order=_order("old-1", "p-old", now)))
    seen: list[float] = []
    tail = JournalTail(store, on_latency=seen.append)
    store.journal.append(IntentJournaled(ts_ns=now, order=_order("new-1", "p-new", now)))
    store.journal.append(OrderSubmitted(ts_ns=now + 3_000_000, client_order_id="new-1", attempt=1))
    store.journal.append(
        OrderStateChanged(
            ts_ns=now,
            client_order_id="new-1",
            old="submitted",
            new="rejected",
            event="submit_rejected",
            reason="buying_power: HTTP 403",
        )
    )
    store.journal.append(
        FillRecorded(
            ts_ns=now,
            fill=FillRecord(
                exec_id="e1",
                client_order_id="old-1",
                broker_order_id="b",
                symbol="AAPL",
                side="buy",
                qty=5,
                price=10.0,
                ts_ns=now,
            ),
        )
    )
    assert tail.poll() == 5
    assert tail.orders_of("p-old") == ["old-1"] and tail.orders_of("p-new") == ["new-1"]
    assert [round(x, 6) for x in seen] == [0.005]  # 2 ms before the intent + 3 ms to the submit
    assert tail.rejection_counts() == {"buying_power": 1}
    assert tail.fills_of("old-1") == [{"qty": 5, "price": 10.0, "ts_ns": now}]
    assert tail.poll() == 0
    assert rejection_label("rejected", "") == "broker" and rejection_label("submit_rejected", "weird: x") == "other"


def test_tick_to_order_counts_only_orders_that_answer_a_quote(make_dash):
    # A protective stop stamps quote_recv_ns with its own creation time: it
    # answers no quote, and counted it would make tick-to-order look faster.
    dash = make_dash()
    store, now = dash.store, time.time_ns()
    seen: list[float] = []
    tail = JournalTail(store, on_latency=seen.append)
    protect = OrderRecord(
        client_order_id="stk-protect-1",
        intent_id="protect-1",
        symbol="AAPL",
        side="sell",
        qty=5,
        order_type="stop",
        stop_price=9.0,
        state="intent",
        created_ns=now,
        updated_ns=now,
        proposal_id="",
        quote_recv_ns=now,
        reduce_only=True,
    )
    store.journal.append(IntentJournaled(ts_ns=now, order=protect))
    store.journal.append(OrderSubmitted(ts_ns=now + 1_000_000, client_order_id="stk-protect-1", attempt=1))
    store.journal.append(IntentJournaled(ts_ns=now, order=_order("new-2", "p-2", now)))
    store.journal.append(OrderSubmitted(ts_ns=now + 3_000_000, client_order_id="new-2", attempt=1))
    assert tail.poll() == 4
    assert [round(x, 6) for x in seen] == [0.005]  # the strategy's order only


def test_decisions_join_votes_verdict_orders_and_fills(make_dash):
    dash = make_dash()
    store, now = dash.store, time.time_ns()
    store.voter_decisions.add(_voter("p1", now - 2 * S, "parked"))
    store.voter_decisions.add(_voter("p1", now - S, "approved"))
    store.decisions.add(
        DecisionRecord(
            ts_ns=now - S, proposal_id="p1", symbol="AAPL", allowed=True, rule="all", reason="ok", side="buy", qty=5
        )
    )
    store.put_order(_order("c1", "p1", now, "filled"))
    store.journal.append(IntentJournaled(ts_ns=now, order=_order("c1", "p1", now)))
    dash.server.api.metrics.poll()
    page = dash.get("/api/v1/decisions").json()
    (d,) = page["decisions"]
    assert d["steps"] == ["parked", "approved"] and d["outcome"] == "approved"
    assert [(v["model"], v["weight"]) for v in d["votes"]] == [("momentum", 0.6), ("breakout", 0.4)]
    assert d["risk"] == {"allowed": True, "rule": "all", "reason": "ok", "qty": 5}
    assert [o["client_order_id"] for o in d["orders"]] == ["c1"]


def test_pending_is_the_newest_step_parked_and_unexpired(make_dash):
    dash = make_dash()
    store, now = dash.store, time.time_ns()
    store.voter_decisions.add(_voter("waiting", now - S, "parked"))
    store.voter_decisions.add(_voter("done", now - 2 * S, "parked"))
    store.voter_decisions.add(_voter("done", now - S, "approved"))
    store.voter_decisions.add(_voter("stale", now - 400 * S, "parked"))  # beyond voter.approval_timeout_s (300)
    assert [p["proposal_id"] for p in dash.get("/api/v1/pending").json()] == ["waiting"]


def test_equity_curve_and_drawdown(make_dash):
    dash = make_dash()
    now = time.time_ns()
    for i, eq in enumerate((100.0, 110.0, 99.0, 105.0)):
        dash.store.equity.add(EquitySnapshot(ts_ns=now - (4 - i) * S, equity=eq, cash=0.0))
    out = dash.get("/api/v1/equity?hours=1").json()
    assert [p["equity"] for p in out["points"]] == [100.0, 110.0, 99.0, 105.0]
    assert out["max_drawdown"] == round((99.0 - 110.0) / 110.0, 6)


def test_orders_are_paged(make_dash):
    dash = make_dash()
    now = time.time_ns()
    for i in range(5):
        dash.store.put_order(_order(f"c{i}", "", now, "filled"))
    first = dash.get("/api/v1/orders?limit=2").json()
    assert [o["client_order_id"] for o in first["orders"]] == ["c0", "c1"] and first["total"] == 5
    second = dash.get(f"/api/v1/orders?limit=2&after={first['next']}").json()
    assert [o["client_order_id"] for o in second["orders"]] == ["c2", "c3"]


def test_feed_watch_counts_quotes_and_ages_per_symbol():
    from stockade.actors.quote_streamer import FeedWatch

    watch = FeedWatch(("AAPL", "MSFT"), down_after_s=10.0, stale_after_s=5.0, now=100.0)
    watch.quote("AAPL", 101.0)
    watch.quote("AAPL", 102.0)
    assert watch.received == {"AAPL": 2}
    assert watch.ages(104.5) == {"AAPL": 2.5, "MSFT": None}


def test_rest_budget_metric_is_the_order_paths_bucket(make_dash):
    # The gauge once read a bucket of its own (a key without the protection
    # reserve): always full, whatever the order path spent.
    from prometheus_client.parser import text_string_to_metric_families

    dash = make_dash()

    def tokens_left() -> float:
        text = dash.get("/metrics").body.decode()
        (sample,) = [
            s
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name == "stockade_rest_budget_tokens"
        ]
        return sample.value

    bucket = dash.svc.rest_bucket()
    before = tokens_left()
    for _ in range(40):
        assert bucket.take()
    assert tokens_left() <= before - 30  # 40 spent; the refill (160/min) gives back a few at most
