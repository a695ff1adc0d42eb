"""Every message that travels between actors.

All are frozen msgspec Structs, so a message cannot be changed after it is
sent and costs little to build. They travel wrapped in an `Envelope`
(id, sender, sent time, W3C traceparent) so one quote that leads to an order
is one trace.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Literal

import msgspec

# Alert levels are defined once, in config (the settings' min_level_* keys use them too).
from stockade.config.names import AlertLevel as AlertLevel

Side = Literal["buy", "sell"]
TradingState = Literal["ACTIVE", "REDUCING", "HALTED"]


class Message(msgspec.Struct, frozen=True, tag=True, tag_field="type"):
    """Base of every actor message (tagged by class name when encoded)."""


# Envelope ids: this process's random prefix and a counter, 32 hex digits like
# the uuid4 they replace. Unique without asking the OS for 16 random bytes per
# message (a uuid4 was a fifth of a message's cost in a backtest); the counter's
# `next` is atomic under the GIL.
_ID_PREFIX = os.urandom(8).hex()
_ID_SEQ = itertools.count(1)


def _new_id_prefix() -> None:
    """A forked child gets its own prefix (it would otherwise repeat the parent's ids)."""
    global _ID_PREFIX, _ID_SEQ
    _ID_PREFIX, _ID_SEQ = os.urandom(8).hex(), itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)


class Envelope(msgspec.Struct, frozen=True):
    """What actually sits in an actor's mailbox."""

    id: str
    sender: str
    sent_ns: int
    traceparent: str | None
    body: Message

    @classmethod
    def wrap(cls, body: Message, sender: str, traceparent: str | None = None) -> Envelope:
        return cls(f"{_ID_PREFIX}{next(_ID_SEQ):016x}", sender, time.time_ns(), traceparent, body)


# ---- market data -------------------------------------------------------------


class Quote(Message, frozen=True):
    """Top of book for one symbol. `ts_ns` is the venue's time, `recv_ns` ours."""

    symbol: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    ts_ns: int
    recv_ns: int

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0

    @property
    def spread_bps(self) -> float:
        mid = self.mid
        return (self.ask - self.bid) / mid * 1e4 if mid > 0 else float("inf")


class Trade(Message, frozen=True):
    symbol: str
    price: float
    size: float
    ts_ns: int
    recv_ns: int


class Bar(Message, frozen=True):
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    ts_ns: int


class FlushQuotes(Message, frozen=True):
    """The quote streamer's wake-up: deliver conflated quotes (firehose, sampled like quotes)."""


class StreamStatus(Message, frozen=True):
    """Market-data connection state changes (for status and alerts)."""

    connected: bool
    detail: str


# ---- signals -------------------------------------------------------------------


class Vote(Message, frozen=True):
    """One model's opinion on one symbol: direction in [-1, 1], confidence in [0, 1]."""

    symbol: str
    model: str
    direction: float
    confidence: float
    price: float
    quote_ts_ns: int
    quote_recv_ns: int
    bid: float = 0.0
    ask: float = 0.0
    # How many votes this evaluation of this symbol sends (0 = unknown): the
    # voter tallies once all have arrived, whatever models the analyzer loaded.
    batch_size: int = 0
    # The analyzer's volatility regime: the ensemble turns defensive on it.
    high_volatility: bool = False
    # Average true range of the symbol's 1-minute bars (0: not warm), for
    # volatility-scaled sizing.
    atr: float = 0.0


class Votes(Message, frozen=True):
    """Every vote of one evaluation of one symbol (same quote), as one message.

    The analyzer sends its evaluation in one hop to the voter rather than one
    message per member: each hop is a cross-thread hand-off on the quote path.
    """

    symbol: str  # that of every vote (traces show it)
    votes: tuple[Vote, ...]


class Proposal(Message, frozen=True):
    """The ensemble's decision to trade, before risk."""

    proposal_id: str
    symbol: str
    side: Side
    score: float
    confidence: float
    price: float
    bid: float
    ask: float
    quote_ts_ns: int
    quote_recv_ns: int
    models: tuple[str, ...] = ()
    # Risk sizing multiplies by this (below 1 in a defensive regime).
    size_scale: float = 1.0
    defensive: bool = False
    atr: float = 0.0  # from the votes; 0: unknown


class ApproveProposal(Message, frozen=True):
    proposal_id: str


class RejectProposal(Message, frozen=True):
    proposal_id: str
    reason: str = "operator"


class OrderIntent(Message, frozen=True):
    """An order the risk guard has allowed; the order manager journals then sends it."""

    intent_id: str
    symbol: str
    side: Side
    qty: int
    order_type: Literal["market", "limit", "stop"]
    limit_price: float | None
    take_profit: float | None
    stop_loss: float | None
    reason: str
    proposal_id: str
    quote_recv_ns: int
    reduce_only: bool = False
    stop_price: float | None = None  # for order_type "stop" (protective stops)
    extended_hours: bool = False  # a day limit eligible for the pre-market/after-hours sessions


class Rejection(Message, frozen=True):
    """The risk guard said no; `rule` names the rule, `reason` says why."""

    proposal_id: str
    symbol: str
    rule: str
    reason: str


class OrderUpdate(Message, frozen=True):
    """One trade-update event for one of our orders."""

    event: str
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    status: str
    qty: float
    filled_qty: float
    filled_avg_price: float | None
    ts_ns: int
    order_class: str = ""
    position_qty: float | None = None
    price: float | None = None  # price of this fill, for fill events
    fill_qty: float | None = None  # qty of this fill, for fill events
    proposal_id: str = ""  # the proposal behind our order ("" for legs and adopted orders)
    order_type: str = ""  # the broker's order type ("stop", "limit", ...), "" when not told
    stop_price: float | None = None
    # Why the broker rejected it (event "rejected"): wash_trade, buying_power,
    # insufficient_qty or other (stockade.broker.orders.REJECTION_REASONS); "" otherwise.
    reason: str = ""


class Position(msgspec.Struct, frozen=True):
    symbol: str
    qty: float
    avg_entry_price: float
    market_value: float = 0.0
    unrealized_pl: float = 0.0


class AccountSnapshot(Message, frozen=True):
    equity: float
    last_equity: float
    cash: float
    buying_power: float
    # No day-trade count or pattern-day-trader flag: Alpaca removed both from
    # the account on 2026-07-06 (FINRA retired the PDT rule).
    trading_blocked: bool
    ts_ns: int
    # The broker's positions at the same moment, for marking them to newer
    # prices between snapshots.
    positions: tuple[Position, ...] = ()


class ClockSnapshot(Message, frozen=True):
    is_open: bool
    ts_ns: int
    next_close_ns: int = 0  # the broker clock's next close (early closes included); 0: unknown


# ---- control -----------------------------------------------------------------


class Kill(Message, frozen=True):
    """Full liquidation: persist HALTED, cancel everything, close everything."""

    reason: str
    requested_by: str


class Flatten(Message, frozen=True):
    """Close every position (cancel every order) WITHOUT halting: the pre-close flatten."""

    reason: str
    requested_by: str


class Alert(Message, frozen=True):
    level: AlertLevel
    key: str
    text: str
    source: str
    ts_ns: int


class Tick(Message, frozen=True):
    """A timer firing inside an actor (reconcile, flush, ...); `what` says which."""

    what: str


class ListPending(Message, frozen=True):
    """Ask the voter for the proposals parked for approval (control socket)."""


class ReplaceStop(Message, frozen=True):
    """Move a resting stop order to `stop_price` (the local trailing stop); only the OrderManager sends it."""

    client_order_id: str
    stop_price: float
    reason: str


class BrokerOrderSeen(Message, frozen=True):
    """The reconciler's view of a broker order the ledger lacks or is behind on (for the OrderManager)."""

    update: OrderUpdate
    # Its fills are already in positions the reconciler just took from the broker
    # (the first pass after start): record them, do not add them again.
    counted_in_positions: bool = False


# ---- model lifecycle (actors/model_keeper.py) ------------------------------------


class ModelEvaluation(Message, frozen=True):
    """What one analyzer evaluation fed its trained models and what they said.

    For the model keeper: live hit rates, input drift, and the record that
    every evaluation voted with one complete model set (`set_id`, `members`).
    """

    symbol: str
    set_id: str
    members: tuple[str, ...]  # the members that voted, in the set's order
    models: tuple[str, ...]  # each one's file checksum (sha256): which model really voted
    p_up: tuple[float, ...]  # one per member
    x: tuple[float, ...]  # the feature vector (FEATURE_NAMES order)
    price: float
    quote_recv_ns: int


class SwapModels(Message, frozen=True):
    """Vote with this model set from the next evaluation on (all of it, or keep the old one)."""

    set_id: str
    folder: str
    names: tuple[str, ...]


class ModelsCommand(Message, frozen=True):
    """The control socket's `models` command for the model keeper."""

    action: Literal["show", "promote", "rollback", "retrain"]
