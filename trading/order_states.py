"""The order state machine: a transition table over enums (ORDER_STATE_TABLE).

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

from enum import StrEnum

import msgspec

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


class OrderStatus(StrEnum):
    """The nine states (`codecs.records.OrderState` as an enum)."""

    INTENT = "intent"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


class OrderEvent(StrEnum):
    """Every event `next_state` takes: ours (`_OWN_EVENTS`) and Alpaca's trade updates."""

    ABANDON = "abandon"
    ACCEPTED = "accepted"
    ACCEPTED_FOR_BIDDING = "accepted_for_bidding"
    CALCULATED = "calculated"
    CANCEL_REQUEST = "cancel_request"
    CANCELED = "canceled"
    DONE_FOR_DAY = "done_for_day"
    EXPIRED = "expired"
    FILL = "fill"
    HELD = "held"
    NEW = "new"
    NOT_FOUND = "not_found"
    ORDER_CANCEL_REJECTED = "order_cancel_rejected"
    ORDER_REPLACE_REJECTED = "order_replace_rejected"
    PARTIAL_FILL = "partial_fill"
    PENDING_CANCEL = "pending_cancel"
    PENDING_NEW = "pending_new"
    PENDING_REPLACE = "pending_replace"
    REJECTED = "rejected"
    REPLACED = "replaced"
    RESTATED = "restated"
    STOPPED = "stopped"
    SUBMIT = "submit"
    SUBMIT_REJECTED = "submit_rejected"
    SUBMIT_UNKNOWN = "submit_unknown"
    SUSPENDED = "suspended"


S = OrderStatus
_ALL = frozenset(S)
_PENDING = frozenset(S(s) for s in PENDING)
_TERMINAL = frozenset(S(s) for s in TERMINAL)
_OPEN = _ALL - _TERMINAL
_WORKING = frozenset((S.ACCEPTED, S.PARTIALLY_FILLED))


class Row(msgspec.Struct, frozen=True):
    """From any of `states`, on any of `events`: `to` (None: stay where it is), or
    `invalid` (the reason `InvalidTransition` gives). `late`: a stay row for late
    or duplicate news, kept apart from the moves so the two read separately."""

    states: frozenset[OrderStatus]
    events: tuple[str, ...]
    to: OrderStatus | None = None
    invalid: str = ""
    late: bool = False


_ACKS = tuple(sorted(_ACK_EVENTS))

# The order state machine. Each (state, event) pair is covered by exactly one
# row (checked when the table is built below).
ORDER_STATE_TABLE: tuple[Row, ...] = (
    # -- our own events -------------------------------------------------------
    Row(_PENDING, ("submit",), S.SUBMITTED),  # also a retry, same client_order_id
    Row(_ALL - _PENDING, ("submit",), invalid="the broker already has or finished this order"),
    Row(frozenset((S.INTENT, S.SUBMITTED)), ("submit_unknown",), S.UNKNOWN),
    Row(_ALL - {S.INTENT, S.SUBMITTED}, ("submit_unknown",), late=True),
    Row(_PENDING, ("submit_rejected",), S.REJECTED),
    # After an ack: a late duplicate (a retry that hit "client order id already exists").
    Row(_ALL - _PENDING, ("submit_rejected",), late=True),
    # A cancel request changes nothing: the order may still fill before it lands.
    Row(_OPEN, ("cancel_request",), None),
    Row(_TERMINAL, ("cancel_request",), invalid="the order is already done"),
    Row(_PENDING, ("not_found",), S.REJECTED),  # the submit never landed
    Row(_TERMINAL, ("not_found",), late=True),
    Row(_WORKING, ("not_found",), invalid="the broker lost an order it had acknowledged"),
    Row(frozenset((S.INTENT,)), ("abandon",), S.CANCELED),
    Row(_ALL - {S.INTENT}, ("abandon",), invalid="only an unsent intent can be abandoned"),
    # -- the broker's trade updates -------------------------------------------
    Row(_PENDING, _ACKS, S.ACCEPTED),
    Row(_WORKING, _ACKS, None),  # bookkeeping: a working order stays as it is
    Row(_TERMINAL, _ACKS, late=True),
    Row(_OPEN, ("partial_fill",), S.PARTIALLY_FILLED),
    Row(frozenset((S.REJECTED,)), ("partial_fill", "fill"), invalid="a fill on a rejected order"),
    # A late report; the fill itself is still recorded by the caller.
    Row(_TERMINAL - {S.REJECTED}, ("partial_fill",), late=True),
    # A fill is a fact: also from canceled/expired, when it raced the cancel.
    Row(_ALL - {S.REJECTED}, ("fill",), S.FILLED),
    # "replaced" ends the old order (a trailing stop moved): the new one is a
    # separate order with its own client_order_id and record.
    Row(_OPEN, ("canceled", "replaced"), S.CANCELED),
    Row(_TERMINAL, ("canceled", "replaced"), late=True),
    Row(_OPEN, ("expired",), S.EXPIRED),
    Row(_TERMINAL, ("expired",), late=True),
    Row(_OPEN, ("rejected",), S.REJECTED),
    Row(_TERMINAL, ("rejected",), late=True),
)


def _build(rows: tuple[Row, ...]) -> dict[tuple[OrderStatus, OrderEvent], Row]:
    table: dict[tuple[OrderStatus, OrderEvent], Row] = {}
    for row in rows:
        for state in row.states:
            for name in row.events:
                event = OrderEvent(name)  # a misspelt event fails at import
                if (state, event) in table:
                    raise AssertionError(f"order state table: two rows for ({state}, {event})")
                table[(state, event)] = row
    missing = [(s, e) for s in S for e in OrderEvent if (s, e) not in table]
    if missing:
        raise AssertionError(f"order state table: no row for {missing[:5]}")
    return table


_TABLE = _build(ORDER_STATE_TABLE)


def next_state(current: OrderState, event: str) -> OrderState:
    """The state after `event`; unchanged for late/duplicate news; raises InvalidTransition."""
    if current not in STATES:
        raise ValueError(f"unknown order state {current!r}")
    if event not in EVENTS:
        raise ValueError(f"unknown order event {event!r}")
    row = _TABLE[(S(current), OrderEvent(event))]
    if row.invalid:
        raise InvalidTransition(current, event, row.invalid)
    return current if row.to is None else row.to.value


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
