"""The RiskGuard's decision on its message span: allowed, rule, quantity and,
for an allowed proposal, the client_order_id of the intent it sent. A real
RiskGuard actor behind a real router, tracing on with an in-memory exporter."""

from __future__ import annotations

import queue
import time
import uuid

import pytest
from actor_probes import add_recorder, services, start_actor
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from waiting import wait_for

from stockade.actors.risk_guard import RiskGuard
from stockade.broker.orders import client_order_id
from stockade.codecs.messages import AccountSnapshot, ClockSnapshot, OrderIntent, Proposal
from stockade.config.settings import Settings, TelemetrySettings
from stockade.ops import telemetry
from stockade.storage.store import Store
from stockade.supervisors.router import Router

PEERS = ("ensemble_voter", "order_manager", "alerter", "emergency_stop")


@pytest.fixture
def traced_guard(tmp_path):
    """(router, intents queue, spans()) with tracing on; everything torn down after."""
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # one global provider per process: reset around the test
    trace._TRACER_PROVIDER = None
    exporter = InMemorySpanExporter()
    shutdown = telemetry.setup(TelemetrySettings(enabled=True, quote_sample_ratio=0.0), env={}, exporter=exporter)
    store = Store.open(tmp_path / "data")
    svc = services(Settings(), store)
    router = Router()
    queues: dict[str, queue.Queue] = {}
    refs = []
    for name in PEERS:
        ref, queues[name] = add_recorder(router, name)
        refs.append(ref)
    guard = start_actor(router, RiskGuard, "risk_guard", {"services": svc})

    def spans(proposal_id: str):
        def find():
            telemetry.ACTIVE.provider.force_flush()
            return next(
                (
                    s
                    for s in exporter.get_finished_spans()
                    if s.name == "risk_guard Proposal" and s.attributes.get("stockade.proposal_id") == proposal_id
                ),
                None,
            )

        return wait_for(find, 10, 0.01, f"the risk guard's span of {proposal_id}")

    try:
        yield router, queues["order_manager"], spans
    finally:
        guard.stop(timeout=10)
        for ref in refs:
            ref.stop(timeout=10)
        store.close()
        shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
    assert telemetry.ACTIVE is None


def propose(router: Router, symbol: str = "AAPL", price: float = 100.0) -> str:
    pid = uuid.uuid4().hex
    now = time.time_ns()
    router.tell(
        "risk_guard", Proposal(pid, symbol, "buy", 0.5, 0.9, price, price - 0.01, price + 0.01, now, now), "test"
    )
    return pid


def test_allowed_and_rejected_decisions_are_on_the_risk_guard_span(traced_guard):
    router, intents, spans = traced_guard
    now = time.time_ns()
    router.tell("risk_guard", ClockSnapshot(True, now), "test")
    router.tell("risk_guard", AccountSnapshot(100_000.0, 100_000.0, 100_000.0, 200_000.0, False, now), "test")

    allowed = propose(router)
    intent = intents.get(timeout=10)
    assert isinstance(intent, OrderIntent) and intent.proposal_id == allowed and intent.qty > 0
    a = spans(allowed).attributes
    assert a["stockade.risk.allowed"] is True
    assert a["stockade.risk.rule"] == "all"
    assert a["stockade.risk.qty"] == intent.qty
    assert a["stockade.client_order_id"] == client_order_id(intent.intent_id)

    rejected = propose(router)  # the same symbol while the first entry is in flight
    r = spans(rejected).attributes
    assert r["stockade.risk.allowed"] is False
    assert r["stockade.risk.rule"] == "in_flight"
    assert r["stockade.risk.qty"] == 0
    assert "stockade.client_order_id" not in r  # no intent, no order id
