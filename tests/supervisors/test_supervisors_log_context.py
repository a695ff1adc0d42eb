"""Log lines written while an actor handles a message carry the actor, the
message's symbol and the trace and span ids of the handler's span (the ones
exported), the failure line of a crash included; with tracing off they carry
no trace id."""

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from supervision_probes import FAST
from waiting import wait_for

from stockade.codecs.messages import Quote
from stockade.config.settings import LoggingSettings, TelemetrySettings
from stockade.ops import telemetry
from stockade.ops.logs import setup as log_setup
from stockade.supervisors.base import StockadeActor, handles
from stockade.supervisors.spec import ChildSpec

log = logging.getLogger("stockade.test.actor_log")


class Talker(StockadeActor):
    @handles(Quote)
    def on_quote(self, quote: Quote) -> None:
        log.info("quote for %s", quote.symbol)
        if quote.bid < 0:
            raise RuntimeError("negative bid")


@pytest.fixture
def json_log():
    out = io.StringIO()
    handler, _ = log_setup.make_handler(LoggingSettings(format="json"), env={}, stream=out)
    loggers = [log, logging.getLogger("stockade.supervisors.base")]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    for lg in loggers:
        lg.removeHandler(handler)


def test_handler_lines_carry_actor_symbol_and_the_exported_span(make_tree, json_log):
    exporter = InMemorySpanExporter()
    shutdown = telemetry.setup(TelemetrySettings(enabled=True, quote_sample_ratio=1.0), env={}, exporter=exporter)
    try:
        tree = make_tree(FAST, [ChildSpec(name="talker", start=Talker.start, shutdown_timeout_s=2.0)])
        tree.router.tell("talker", Quote("AAPL", 10.0, 10.01, 100, 100, 1, 1), "test")
        tree.router.tell("talker", Quote("MSFT", -1.0, 10.01, 100, 100, 1, 1), "test")

        def lines():
            got = json_log()
            return got if any("failed in handling Quote" in r["message"] for r in got) else None

        records = wait_for(lines, timeout=10)
        telemetry.ACTIVE.provider.force_flush()
        spans = {
            s.attributes.get("stockade.symbol"): s for s in exporter.get_finished_spans() if s.name == "talker Quote"
        }
    finally:
        shutdown()
    aapl, msft = (next(r for r in records if r["message"] == f"quote for {sym}") for sym in ("AAPL", "MSFT"))
    failure = next(r for r in records if "failed in handling Quote" in r["message"])
    for record, symbol in ((aapl, "AAPL"), (msft, "MSFT"), (failure, "MSFT")):
        sc = spans[symbol].context
        assert record["actor"] == "talker" and record["symbol"] == symbol
        assert record["trace_id"] == f"{sc.trace_id:032x}" and record["span_id"] == f"{sc.span_id:016x}"
    assert "RuntimeError: negative bid" in failure["exception"] and failure["level"] == "ERROR"
    assert aapl["trace_id"] != msft["trace_id"]


def test_tracing_off_no_trace_id_but_the_actor_and_symbol(make_tree, json_log):
    assert telemetry.ACTIVE is None
    tree = make_tree(FAST, [ChildSpec(name="talker", start=Talker.start, shutdown_timeout_s=2.0)])
    tree.router.tell("talker", Quote("NVDA", 10.0, 10.01, 100, 100, 1, 1), "test")
    record = wait_for(lambda: next((r for r in json_log() if r["message"] == "quote for NVDA"), None), timeout=10)
    assert record["actor"] == "talker" and record["symbol"] == "NVDA"
    assert "trace_id" not in record and "span_id" not in record
