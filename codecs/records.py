"""Storage records: what stockade keeps in lmdb, and the journal's event types.

Every record is a frozen msgspec Struct encoded as a msgpack *map* (not an
array), so a field added later with a default still decodes old values and an
old reader skips fields it does not know. Records are keyword-only because
most have many fields of the same type, where a positional mix-up would be
silent.

Table records (orders, fills, ...) are stored one type per table and carry no
tag. Journal events share one table, so they are a tagged union; the tag is
written out explicitly so renaming a class never orphans an old journal.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from stockade.codecs.messages import AlertLevel, Side, TradingState

OrderState = Literal[
    "intent",  # journaled durably, not yet acknowledged by the broker (maybe not even sent)
    "submitted",  # the submit request went out
    "accepted",  # the broker has it and it is working
    "partially_filled",
    "filled",
    "canceled",
    "rejected",
    "expired",
    "unknown",  # the submit's outcome is unknown (timeout, crash): ask the broker
]
# States an order never leaves for a working one; every other state may be
# working at the broker (the open-orders index). The rules: trading/order_states.py.
TERMINAL_ORDER_STATES: frozenset[str] = frozenset(("filled", "canceled", "rejected", "expired"))
OrderType = Literal["market", "limit", "stop", "stop_limit", "trailing_stop"]
OrderClass = Literal["simple", "bracket", "oco", "oto"]


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the table records (untagged: one type per table)."""


# ---- tables ------------------------------------------------------------------


class OrderRecord(Record, frozen=True, kw_only=True):
    """One order as the ledger knows it, keyed by `client_order_id`.

    A bracket parent lists its children's client order ids in `legs`; a child
    names its parent in `parent_id`.
    """

    client_order_id: str
    intent_id: str
    symbol: str
    side: Side
    qty: int
    order_type: OrderType
    limit_price: float | None = None
    stop_price: float | None = None  # for stop orders such as a protective stop
    take_profit: float | None = None
    stop_loss: float | None = None
    order_class: OrderClass = "simple"
    time_in_force: str = "day"
    state: OrderState = "intent"
    broker_order_id: str | None = None
    filled_qty: int = 0
    filled_avg_price: float | None = None
    created_ns: int
    updated_ns: int
    reason: str = ""
    proposal_id: str = ""
    reduce_only: bool = False
    attempts: int = 0
    last_error: str | None = None
    cancel_requested: bool = False
    legs: tuple[str, ...] = ()
    parent_id: str | None = None
    # Latency accounting: when the quote behind this order came off the
    # socket, and when the first submit request went out.
    quote_recv_ns: int = 0
    sent_ns: int = 0

    @property
    def remaining_qty(self) -> int:
        return max(self.qty - self.filled_qty, 0)


class FillRecord(Record, frozen=True, kw_only=True):
    """One execution, keyed by the broker's execution id (dedups replays)."""

    exec_id: str
    client_order_id: str
    broker_order_id: str | None
    symbol: str
    side: Side
    qty: int
    price: float
    ts_ns: int  # the broker's time of the fill
    recv_ns: int = 0  # when we heard of it
    position_qty: int | None = None  # the broker's position after the fill, when told


class PositionRecord(Record, frozen=True, kw_only=True):
    """The ledger's position in one symbol; `qty` is negative when short."""

    symbol: str
    qty: int
    avg_entry_price: float
    updated_ns: int
    protective_stop_order_id: str | None = None


class FillMark(Record, frozen=True, kw_only=True):
    """The newest fill the ledger recorded in one symbol (key: symbol).

    Written by the OrderManager in the fill's own transaction. `seq` counts
    the symbol's recorded fills: a reader that noted a lower `seq` before it
    asked the broker knows the broker's answer may predate a fill the ledger
    already holds, and must not adopt it (the ledger never goes back in time).
    """

    symbol: str
    seq: int
    ts_ns: int  # when the newest fill was recorded (our clock)


class TradingStateRecord(Record, frozen=True, kw_only=True):
    """The trading state; it survives restarts (key "trading")."""

    state: TradingState
    reason: str
    changed_ns: int
    changed_by: str


class DayCounters(Record, frozen=True, kw_only=True):
    """Per-trading-day counters, keyed by `date` (YYYY-MM-DD, exchange time)."""

    date: str
    start_equity: float | None = None
    day_trades: int = 0
    order_count: int = 0
    realized_pl: float = 0.0
    updated_ns: int = 0


class AlertRecord(Record, frozen=True, kw_only=True):
    level: AlertLevel
    key: str
    text: str
    source: str
    ts_ns: int


class AlertCounts(Record, frozen=True, kw_only=True):
    """Alert counts kept up to date on every write, so `ctl alerts` never scans the history.

    Keyed "all" (since the data dir was created) and by UTC date YYYY-MM-DD.
    `by_kind` counts the part of the key before the first ":".
    """

    period: str
    total: int = 0
    by_level: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    first_ns: int = 0
    last_ns: int = 0


class EquitySnapshot(Record, frozen=True, kw_only=True):
    ts_ns: int
    equity: float
    cash: float
    buying_power: float = 0.0
    last_equity: float = 0.0
    positions_value: float = 0.0


class DecisionRecord(Record, frozen=True, kw_only=True):
    """One risk decision: `rule` names the rule that decided, `reason` says why."""

    ts_ns: int
    proposal_id: str
    symbol: str
    allowed: bool
    rule: str
    reason: str
    side: Side | None = None
    qty: int = 0


class ControlAuditRecord(Record, frozen=True, kw_only=True):
    """One control command (or refused connection): who, what, and the outcome.

    `uid`/`pid`/`gid` come from SO_PEERCRED; `args` is the request's args as
    JSON with secrets redacted and long values cut.
    """

    ts_ns: int
    uid: int
    pid: int
    gid: int
    cmd: str
    args: str
    ok: bool
    error: str = ""
    duration_ms: float = 0.0
    via: str = ""  # "" for the control socket; "dashboard <client address>" for the web UI


class VoteEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One member's vote inside a VoterDecisionRecord, with the weight it carried."""

    model: str
    direction: float
    confidence: float
    weight: float  # normalised over the batch's voters
    high_volatility: bool = False


VoterOutcome = Literal["proposed", "parked", "approved", "rejected", "expired"]


class VoterDecisionRecord(Record, frozen=True, kw_only=True):
    """One step in the life of an ensemble proposal, with every input of the vote.

    Appended on every step (proposed to risk, parked, approved, rejected,
    expired); the newest record of a `proposal_id` is its state, which is how
    parked proposals survive a restart.
    """

    ts_ns: int
    proposal_id: str
    symbol: str
    side: Side
    outcome: VoterOutcome
    mode: str
    score: float
    confidence: float
    threshold: float
    min_confidence: float
    defensive: bool = False
    defensive_reason: str = ""
    size_scale: float = 1.0
    models: tuple[str, ...] = ()  # members that voted on the proposal's side
    votes: tuple[VoteEntry, ...] = ()
    price: float = 0.0
    bid: float = 0.0
    ask: float = 0.0
    quote_ts_ns: int = 0
    quote_recv_ns: int = 0
    proposed_ns: int = 0  # when the proposal was made (expiry counts from here)
    reason: str = ""  # e.g. the operator's reject reason


class VoterWeightRecord(Record, frozen=True, kw_only=True):
    """One ensemble member's learned track record (decayed outcome counts), keyed by member.

    The voter's adaptive weights follow from these; kept so a restart does not
    forget them. The pooled counts (defensive mode) are under `trading.voting.POOLED`.
    """

    hits: float
    misses: float
    ts_ns: int = 0  # when written


ModelSetRole = Literal["champion", "previous", "challenger"]


class ModelSetRecord(Record, frozen=True, kw_only=True):
    """A model set the lifecycle knows, keyed by its role (champion, previous, challenger)."""

    set_id: str
    folder: str
    names: tuple[str, ...]
    created_ns: int
    # Out-of-sample accuracy on the last evaluation window (challenger and the
    # champion it was compared with); empty before any comparison.
    members: dict[str, float] = {}
    score: float | None = None
    against: float | None = None  # the champion's score on the same window (challenger only)
    window: str = ""  # the evaluation window, e.g. "2026-12-01T14:00Z..2026-12-02T20:00Z (812 rows)"
    status: str = ""  # challenger: trained, refused, promoted, kept
    # The folder the settings chose when this set started serving: a champion
    # outranks the settings only while they still choose the same folder.
    origin: str = ""


class ModelEventRecord(Record, frozen=True, kw_only=True):
    """One step of the model lifecycle (trigger, training, verdict, swap, rollback)."""

    ts_ns: int
    kind: str
    set_id: str = ""
    detail: str = ""


class ModelEvaluationRecord(Record, frozen=True, kw_only=True):
    """Which model set one analyzer evaluation voted with (the swap audit)."""

    ts_ns: int  # the quote's receive time
    symbol: str
    set_id: str
    members: tuple[str, ...]
    models: tuple[str, ...] = ()  # each member's file checksum (sha256)


# ---- journal events ----------------------------------------------------------


class JournalEvent(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="type"):
    """Base of the journal's events; `ts_ns` is when the event was journaled."""

    ts_ns: int


class IntentJournaled(JournalEvent, frozen=True, kw_only=True, tag="IntentJournaled"):
    """An order about to be sent; committed durably before it reaches the broker."""

    order: OrderRecord


class OrderSubmitted(JournalEvent, frozen=True, kw_only=True, tag="OrderSubmitted"):
    client_order_id: str
    attempt: int


class OrderSubmitFailed(JournalEvent, frozen=True, kw_only=True, tag="OrderSubmitFailed"):
    """A submit attempt failed; `definitive` means the broker refused it (no retry)."""

    client_order_id: str
    attempt: int
    error: str
    definitive: bool


class OrderAcknowledged(JournalEvent, frozen=True, kw_only=True, tag="OrderAcknowledged"):
    client_order_id: str
    broker_order_id: str


class CancelRequested(JournalEvent, frozen=True, kw_only=True, tag="CancelRequested"):
    client_order_id: str
    reason: str


class OrderStateChanged(JournalEvent, frozen=True, kw_only=True, tag="OrderStateChanged"):
    client_order_id: str
    old: OrderState
    new: OrderState
    event: str  # what caused it (a broker trade-update event or one of ours)
    reason: str = ""


class FillRecorded(JournalEvent, frozen=True, kw_only=True, tag="FillRecorded"):
    fill: FillRecord


class TradingStateSet(JournalEvent, frozen=True, kw_only=True, tag="TradingStateSet"):
    state: TradingState
    reason: str
    changed_by: str


class Reconciled(JournalEvent, frozen=True, kw_only=True, tag="Reconciled"):
    """A reconciliation pass; `mismatches` are one line each, empty when in agreement."""

    positions: int
    open_orders: int
    mismatches: tuple[str, ...] = ()


class KillRequested(JournalEvent, frozen=True, kw_only=True, tag="KillRequested"):
    reason: str
    requested_by: str


AnyJournalEvent = (
    IntentJournaled
    | OrderSubmitted
    | OrderSubmitFailed
    | OrderAcknowledged
    | CancelRequested
    | OrderStateChanged
    | FillRecorded
    | TradingStateSet
    | Reconciled
    | KillRequested
)

_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(AnyJournalEvent)


def encode(obj: msgspec.Struct) -> bytes:
    """msgpack bytes of a record or event."""
    return _encoder.encode(obj)


def decode_event(data: bytes) -> JournalEvent:
    """Decode one journal event; raises msgspec.DecodeError / ValidationError."""
    return _event_decoder.decode(data)
