"""Restarts and escalations as span events (in the trace of the message that
crashed) and as alerts to the alerter, in a real supervision tree."""

import msgspec
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from supervision_probes import FAST, Probe
from waiting import wait_for

from stockade.codecs.messages import Alert, Tick
from stockade.config.settings import TelemetrySettings
from stockade.ops import telemetry
from stockade.supervisors.base import StockadeActor, handles
from stockade.supervisors.spec import ChildSpec
from stockade.supervisors.supervisor import supervisor_spec


class AlertSink(StockadeActor):
    """Stands in for the alerter: records every Alert it gets."""

    @handles(Alert)
    def on_alert(self, alert: Alert) -> None:
        self.ctx.extras["rec"].add("alert", self.name, self.generation, alert)


class EnvelopeSink(StockadeActor):
    """Records the traceparent of every Tick it gets, and the span it handles it in."""

    @handles(Tick)
    def on_tick(self, tick: Tick, envelope) -> None:
        from opentelemetry import trace

        self.ctx.extras["rec"].add("env", self.name, self.generation, (envelope.traceparent, trace.get_current_span()))


def spec(name):
    return ChildSpec(name=name, start=Probe.start, shutdown_timeout_s=2.0)


def policy(**changes):
    return msgspec.structs.replace(FAST, **changes)


def gen(tree, name):
    status = tree.router.status(name)
    return status.generation if status is not None and status.state == "up" and status.alive else None


@pytest.fixture
def exporter():
    exporter = InMemorySpanExporter()
    shutdown = telemetry.setup(TelemetrySettings(enabled=True, quote_sample_ratio=0.0), env={}, exporter=exporter)
    yield exporter
    shutdown()


def finished(exporter):
    telemetry.ACTIVE.provider.force_flush()
    return exporter.get_finished_spans()


def alerts(rec):
    return [detail for _, _, detail in rec.of("alert")]


def test_a_restart_is_a_span_event_under_the_crashed_message_and_an_alert(make_tree, rec, exporter):
    tree = make_tree(policy(), [ChildSpec(name="alerter", start=AlertSink.start), spec("a")])
    wait_for(lambda: gen(tree, "a") == 1, timeout=5)
    tree.router.tell("a", Tick("boom"), "test")
    wait_for(lambda: gen(tree, "a") == 2, timeout=5)
    wait_for(lambda: [a for a in alerts(rec) if a.key == "restart:a"], timeout=5)

    def spans():
        got = {s.name: s for s in finished(exporter)}
        return got if "root ChildExit" in got and "a Tick" in got else None

    got = wait_for(spans, timeout=5)
    crashed, handling = got["a Tick"], got["root ChildExit"]
    assert crashed.status.status_code.name == "ERROR"
    assert handling.context.trace_id == crashed.context.trace_id
    assert handling.parent.span_id == crashed.context.span_id
    events = {e.name: dict(e.attributes) for e in handling.events}
    assert events["stockade.child.exit"]["stockade.child"] == "a"
    assert events["stockade.child.exit"]["stockade.abnormal"] is True
    assert "boom in a" in events["stockade.child.exit"]["stockade.reason"]
    assert events["stockade.restart"]["stockade.attempt"] == 1
    assert events["stockade.restart"]["stockade.restarted"] == ("a",)
    (alert,) = [a for a in alerts(rec) if a.key == "restart:a"]
    assert alert.level == "WARNING" and alert.source == "root" and "boom in a" in alert.text


def test_an_escalation_is_a_span_event_and_the_parents_span_is_its_child(make_tree, rec, exporter):
    inner = policy(max_restarts=1, period_s=30.0)
    tree = make_tree(
        policy(max_restarts=5),
        [ChildSpec(name="alerter", start=AlertSink.start), supervisor_spec("inner", inner, [spec("x")])],
    )
    wait_for(lambda: gen(tree, "x") == 1, timeout=5)
    tree.router.tell("x", Tick("boom"), "test")
    wait_for(lambda: gen(tree, "x") == 2, timeout=5)
    tree.router.tell("x", Tick("boom"), "test")  # second in the window: inner gives up
    wait_for(lambda: gen(tree, "inner") == 2 and gen(tree, "x") == 3, timeout=5)
    wait_for(lambda: {"restart:x", "escalation:inner", "restart:inner"} <= {a.key for a in alerts(rec)}, timeout=5)

    def spans():
        got = [s for s in finished(exporter) if s.name.endswith("ChildExit")]
        escalations = [s for s in got if any(e.name == "stockade.escalation" for e in s.events)]
        parents = [s for s in got if s.name == "root ChildExit"]
        return (escalations, parents) if escalations and parents else None

    (escalation,), (parent,) = wait_for(spans, timeout=5)
    assert escalation.name == "inner ChildExit"
    event = next(e for e in escalation.events if e.name == "stockade.escalation")
    assert event.attributes["stockade.supervisor"] == "inner"
    assert "more than 1 restarts" in event.attributes["stockade.reason"]
    # One trace: the crashing message, inner's decision to give up, the root restarting inner.
    assert parent.parent.span_id == escalation.context.span_id
    assert parent.context.trace_id == escalation.context.trace_id
    assert [e.name for e in parent.events] == ["stockade.child.exit", "stockade.restart"]
    (esc_alert,) = [a for a in alerts(rec) if a.key == "escalation:inner"]
    assert esc_alert.level == "CRITICAL" and esc_alert.source == "inner"


def test_without_an_alerter_restarts_send_nothing(make_tree, rec):
    # Tracing off here: no spans, and no dead letter for the missing alerter.
    assert telemetry.ACTIVE is None
    tree = make_tree(policy(), [spec("a")])
    wait_for(lambda: gen(tree, "a") == 1, timeout=5)
    tree.router.tell("a", Tick("boom"), "test")
    wait_for(lambda: gen(tree, "a") == 2, timeout=5)
    assert tree.router.dead_letters == 0


def test_actors_propagate_the_trace_through_the_router(make_tree, rec, exporter):
    tree = make_tree(policy(), [spec("a"), ChildSpec(name="sink", start=EnvelopeSink.start)])
    wait_for(lambda: gen(tree, "sink") == 1, timeout=5)
    tree.router.tell("a", Tick("relay:sink:hello"), "test")
    ((tp, _span),) = [d for _, _, d in wait_for(lambda: rec.of("env", "sink"), timeout=5)]

    def spans():
        got = {s.name: s for s in finished(exporter)}
        return got if {"a Tick", "sink Tick"} <= set(got) else None

    got = wait_for(spans, timeout=5)
    relay, sink = got["a Tick"], got["sink Tick"]
    assert tp == f"00-{relay.context.trace_id:032x}-{relay.context.span_id:016x}-{int(relay.context.trace_flags):02x}"
    assert sink.parent.span_id == relay.context.span_id
    assert sink.attributes["stockade.sender"] == "a" and sink.attributes["stockade.tick"] == "hello"


def test_tracing_off_makes_no_spans_and_sends_no_traceparent(make_tree, rec):
    from opentelemetry import trace

    assert telemetry.ACTIVE is None
    tree = make_tree(policy(), [spec("a"), ChildSpec(name="sink", start=EnvelopeSink.start)])
    wait_for(lambda: gen(tree, "sink") == 1, timeout=5)
    tree.router.tell("a", Tick("relay:sink:hello"), "test")
    ((tp, span),) = [d for _, _, d in wait_for(lambda: rec.of("env", "sink"), timeout=5)]
    assert tp is None
    assert span is trace.INVALID_SPAN  # the handler ran with no span around it
