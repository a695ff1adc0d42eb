"""Fault knobs of the venue, settable at start and at run time (admin endpoint)."""

from __future__ import annotations

import msgspec


class RejectSpec(msgspec.Struct, frozen=True):
    """Reject the next order submission with this Alpaca error."""

    status: int = 403
    code: int = 40310000
    message: str = "insufficient qty available for order"


class Faults(msgspec.Struct, kw_only=True):
    """Mutable on purpose: the admin endpoint changes it while the venue runs.

    Only the venue's event-loop thread reads and writes it.
    """

    http_error_rate: float = 0.0  # probability a /v2 REST request fails
    http_error_status: int = 500
    burst_429: int = 0  # the next N /v2 requests get 429
    latency_ms: float = 0.0  # added to every /v2 REST request
    partial_fill_prob: float = 0.0  # probability a fill is partial
    # Probability that an order is placed but its response is lost (the client
    # gets a 504): the ambiguous failure an exactly-once client must survive.
    lose_response_rate: float = 0.0
    reject_next: RejectSpec | None = None
    stream_silent: bool = False  # websockets stay connected but send no data
    seed: int = 0  # for the fault RNG, so fault tests are reproducible
