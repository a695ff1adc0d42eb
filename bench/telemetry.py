"""`bench_tracing` for `python run.py bench`: what a span costs per handled message.

One real `StockadeActor` handles enveloped messages through its own
`on_receive` (the actor base's whole path: fencing check, fault hook,
dispatch, span) in the bench thread, so pykka's mailbox hop does not drown
the difference. The handler builds one outgoing envelope with
`current_traceparent()`, as `router.tell` does, so propagation is counted.
Modes, interleaved round by round in the same run:

- `off`: tracing not set up (the default);
- `on_unsampled`: set up, quote ratio 0: a firehose quote gets no span object,
  only the small record kept in case its trace reaches the risk guard;
- `on_sampled`: set up, ratio 1: a recorded span per message, batched to an
  exporter that drops them in-process (the network does not count; the
  batch thread's share of the CPU does);
- `on_signal_promoted`: ratio 0, a proposal under an unsampled quote's span:
  the path that exports a buffered trace.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from stockade.codecs.messages import Envelope, Proposal, Quote
from stockade.config.settings import TelemetrySettings
from stockade.ops import telemetry
from stockade.supervisors.base import StockadeActor, handles
from stockade.supervisors.context import ActorContext
from stockade.supervisors.router import Router


class DropExporter(SpanExporter):
    """Counts spans and drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class _Relay(StockadeActor):
    """Handles a message and wraps one onward, as a real actor does."""

    @handles(Quote, Proposal)
    def on_msg(self, msg: Any) -> None:
        self.out = Envelope.wrap(msg, self.name, telemetry.current_traceparent())


def _tracer(ratio: float, exporter: SpanExporter) -> telemetry.MessageTracer:
    cfg = TelemetrySettings(enabled=True, quote_sample_ratio=ratio, max_queue_size=8192)
    provider, processor = telemetry.build_provider(cfg, exporter)
    return telemetry.MessageTracer(provider, processor, cfg.max_pending_traces)


def bench_tracing(n: int = 20_000, rounds: int = 7) -> dict[str, Any]:
    """Cost of handling one message (µs) per tracing mode, and the overhead over `off`."""
    router = Router()
    generation = router.next_generation("relay")
    actor = _Relay(ActorContext(name="relay", generation=generation, router=router, notify=lambda event: None))
    router.register("relay", actor.actor_ref, generation)

    quote = Quote("SPY", 99.9, 100.1, 100.0, 100.0, 1, 2)
    proposal = Proposal("p-1", "SPY", "buy", 0.8, 0.9, 100.0, 99.9, 100.1, 1, 2)
    sampled_out, sampled_in = DropExporter(), DropExporter()
    unsampled, sampled = _tracer(0.0, sampled_out), _tracer(1.0, sampled_in)
    # An unsampled quote span's traceparent: what a proposal from an unsampled quote carries.
    quote_tp = "00-{:032x}-{:016x}-00"

    def envelopes(mode: str) -> list[Envelope]:
        if mode == "on_signal_promoted":
            # A fresh unsampled trace per proposal, so every one promotes.
            return [Envelope.wrap(proposal, "bench", quote_tp.format(i + 1, i + 1)) for i in range(n)]
        return [Envelope.wrap(quote, "bench", None) for _ in range(n)]

    modes = {"off": None, "on_unsampled": unsampled, "on_sampled": sampled, "on_signal_promoted": unsampled}
    per_msg: dict[str, list[float]] = {mode: [] for mode in modes}
    saved = telemetry.ACTIVE
    try:
        for _ in range(rounds):
            for mode, tracer in modes.items():
                batch = envelopes(mode)
                telemetry.ACTIVE = tracer
                receive = actor.on_receive
                t0 = time.perf_counter_ns()
                for envelope in batch:
                    receive(envelope)
                elapsed = time.perf_counter_ns() - t0
                telemetry.ACTIVE = saved
                per_msg[mode].append(elapsed / n / 1e3)
    finally:
        telemetry.ACTIVE = saved
        for tracer in (unsampled, sampled):
            tracer.provider.force_flush(10_000)
            tracer.provider.shutdown()
    median = {mode: round(statistics.median(v), 3) for mode, v in per_msg.items()}
    return {
        "per_message_us": median,
        "overhead_us": {mode: round(median[mode] - median["off"], 3) for mode in modes if mode != "off"},
        "spans_exported": {"on_sampled": sampled_in.spans, "unsampled_tracer": sampled_out.spans},
        "messages_per_mode": n * rounds,
        "what": "median over rounds of one actor's on_receive per message (envelope unwrap, dispatch, span, one "
        "outgoing traceparent), modes interleaved; spans go to an in-process exporter that drops them",
    }
