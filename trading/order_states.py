"""The order state machine, as pure functions.

`next_state(current, event)` returns the state after `event`, which may be
`current` unchanged (late or duplicate news), or raises `InvalidTransition`
(a bug on our side, or news the caller must alert on).

Events are Alpaca's trade-update event names plus a few of our own:
- "submit": the submit request goes out (also a retry, same client_order_id).
- "submit_unknown": the request's outcome is unknown (timeout, crash).
- "submit_rejected": the broker definitively refused the submit (4xx).
- "cancel_request": we asked to cancel; the state does not change, because
  the order may still fill before the cancel lands (a fill after a cancel
  request is still a fill).
- "not_found": the broker has no order with this client_order_id.
- "abandon": an intent we decided never to send (the broker confirmed it has
  nothing under this id).

The rules, briefly: the broker is the truth, news arrives late and out of
order, and a fill is a fact. Terminal states never go back to a live one; the
one terminal-to-terminal move is canceled/expired -> filled, when a full fill
raced the cancel and its report came second.
"""

from __future__ import annotations

from stockade.codecs.records import TERMINAL_ORDER_STATES, OrderState

STATES: frozenset[str] = frozenset(
    ("intent", "submitted", "accepted", "partially_filled", "filled", "canceled", "rejected", "expired", "unknown")
)
TERMINAL: frozenset[str] = TERMINAL_ORDER_STATES
# Orders that may be working at the broker: an "intent" may have been sent just
# before a crash, so it counts until the broker says otherwise.
OPEN: frozenset[str] = STATES - TERMINAL
# The broker may not know about these yet.
PENDING: frozenset[str] = frozenset(("intent", "submitted", "unknown"))

# Trade-update events that say "the broker has it and it is working" (or are
# bookkeeping that leaves the state where it is).
_ACK_EVENTS = frozenset(
    (
        "new",
        "accepted",
        "pending_new",
        "held",
        "accepted_for_bidding",
        "calculated",
        "pending_cancel",
        "pending_replace",
        "order_cancel_rejected",
        "order_replace_rejected",
        "done_for_day",
        "stopped",
        "suspended",
        "restated",
    )
)
_OWN_EVENTS = frozenset(("submit", "submit_unknown", "submit_rejected", "cancel_request", "not_found", "abandon"))
_BROKER_EVENTS = _ACK_EVENTS | frozenset(("partial_fill", "fill", "canceled", "expired", "rejected", "replaced"))
EVENTS: frozenset[str] = _OWN_EVENTS | _BROKER_EVENTS


class InvalidTransition(ValueError):
    """`event` cannot happen to an order in `current` state."""

    def __init__(self, current: str, event: str, why: str) -> None:
        super().__init__(f"order in state {current!r} cannot take event {event!r}: {why}")
        self.current = current
        self.event = event


def is_terminal(state: str) -> bool:
    return state in TERMINAL


def is_open(state: str) -> bool:
    return state in OPEN


def next_state(current: OrderState, event: str) -> OrderState:
    """The state after `event`; unchanged for late/duplicate news; raises InvalidTransition."""
    if current not in STATES:
        raise ValueError(f"unknown order state {current!r}")
    if event not in EVENTS:
        raise ValueError(f"unknown order event {event!r}")

    if event == "submit":
        if current in ("intent", "submitted", "unknown"):
            return "submitted"
        raise InvalidTransition(current, event, "the broker already has or finished this order")
    if event == "submit_unknown":
        return "unknown" if current in ("intent", "submitted") else current
    if event == "submit_rejected":
        # After an ack this is a late duplicate (e.g. a retry that hit "client
        # order id already exists"): the broker has the order, ignore.
        return "rejected" if current in PENDING else current
    if event == "cancel_request":
        if current in TERMINAL:
            raise InvalidTransition(current, event, "the order is already done")
        return current
    if event == "not_found":
        if current in PENDING:
            return "rejected"  # the submit never landed
        if current in TERMINAL:
            return current
        raise InvalidTransition(current, event, "the broker lost an order it had acknowledged")
    if event == "abandon":
        if current == "intent":
            return "canceled"
        raise InvalidTransition(current, event, "only an unsent intent can be abandoned")

    # Broker trade updates from here on.
    if event in _ACK_EVENTS:
        if current in PENDING:
            return "accepted"
        return current  # accepted/partially_filled stay; terminal stays terminal
    if event == "partial_fill":
        if current == "rejected":
            raise InvalidTransition(current, event, "a fill on a rejected order")
        if current in TERMINAL:
            return current  # late report; the fill itself is still recorded by the caller
        return "partially_filled"
    if event == "fill":
        if current == "rejected":
            raise InvalidTransition(current, event, "a fill on a rejected order")
        return "filled"  # also from canceled/expired: the fill raced the cancel
    if event in ("canceled", "replaced"):
        # "replaced" ends the old order (a trailing stop moved): the new one is
        # a separate order with its own client_order_id and record.
        return "canceled" if current in OPEN else current
    if event == "expired":
        return "expired" if current in OPEN else current
    if event == "rejected":
        return "rejected" if current in OPEN else current
    raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover


# Alpaca order `status` values (REST) -> our state, for reconciliation, where
# the broker's answer replaces ours outright.
_STATUS_TO_STATE: dict[str, OrderState] = {
    "new": "accepted",
    "accepted": "accepted",
    "pending_new": "accepted",
    "accepted_for_bidding": "accepted",
    "held": "accepted",
    "pending_cancel": "accepted",
    "pending_replace": "accepted",
    "stopped": "accepted",
    "suspended": "accepted",
    "calculated": "accepted",
    "done_for_day": "accepted",
    "partially_filled": "partially_filled",
    "filled": "filled",
    "canceled": "canceled",
    "replaced": "canceled",
    "expired": "expired",
    "rejected": "rejected",
}


def state_from_broker_status(status: str) -> OrderState:
    """Our state for an Alpaca order status string; "unknown" for one we do not know."""
    return _STATUS_TO_STATE.get(status.lower(), "unknown")
