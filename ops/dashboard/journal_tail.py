"""Follows the order journal from the dashboard's side: what the ledger does
not index, learned by reading the journal's new events at each update.

The journal is append-only with a sequence number, so the tail is a cursor:
each `poll()` reads the events after the last one seen (at most `batch` of
them), in a read transaction of the storage, never touching the actors. From
them it keeps, bounded:

- which orders each proposal led to, and each order's fills (the decisions
  page: proposal -> risk verdict -> order -> fills);
- the tick-to-order latencies (a quote off the socket to the first submit,
  for orders of a proposal; that `OrderSubmitted` is journaled with the intent,
  so the figure stops before the intent's durable commit and the POST),
  handed to the metrics' histogram;
- broker rejections by reason.

At start it reads back at most `history` events, to know the orders of recent
proposals, without counting them as new latencies or rejections.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from stockade.broker.orders import REJECTION_REASONS
from stockade.codecs.records import FillRecorded, IntentJournaled, OrderStateChanged, OrderSubmitted


def rejection_label(event: str, reason: str) -> str:
    """A bounded label for a rejection: our reason code, or "broker" for one the broker streamed."""
    if event != "submit_rejected":
        return "broker"
    code = reason.split(":", 1)[0].strip()
    return code if code in REJECTION_REASONS else "other"


class _Bounded(OrderedDict):
    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def add(self, key: str, value: Any) -> None:
        self.setdefault(key, []).append(value)
        self.move_to_end(key)
        while len(self) > self.cap:
            self.popitem(last=False)


class JournalTail:
    """Reads the journal forward; `poll()` from one thread, the getters from any."""

    def __init__(
        self,
        store: Any,
        *,
        cap: int = 20_000,
        batch: int = 5_000,
        history: int = 50_000,
        on_latency: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.batch = batch
        self._lock = threading.Lock()
        self._orders_by_proposal = _Bounded(cap)
        self._fills_by_order = _Bounded(cap)
        self._awaiting_submit: OrderedDict[str, int] = OrderedDict()  # coid -> quote_recv_ns
        self._cap = cap
        self.rejections: Counter[str] = Counter()
        self.latencies = 0
        self._on_latency = on_latency
        last = store.journal.last_seq()
        self._next = max(1, last - history + 1)
        self._counting_from = last + 1  # events before this were there at start: history, not news

    def poll(self) -> int:
        """Read the events appended since the last call (at most `batch`); returns how many."""
        n = 0
        with self.store.read() as txn:
            events = list(self.store.journal.read(self._next, self.batch, txn=txn))
        with self._lock:
            for seq, event in events:
                self._apply(event, news=seq >= self._counting_from)
                self._next = seq + 1
                n += 1
        return n

    def _apply(self, event: Any, news: bool) -> None:
        kind = type(event)
        if kind is IntentJournaled:
            order = event.order
            if order.proposal_id:
                self._orders_by_proposal.add(order.proposal_id, order.client_order_id)
            # Only a strategy's order answers a quote: a protective stop (the
            # order path's or the reconciler's) stamps its own creation time,
            # and counting it would pull the tick-to-order figure down.
            if news and order.quote_recv_ns and order.proposal_id:
                self._awaiting_submit[order.client_order_id] = order.quote_recv_ns
                while len(self._awaiting_submit) > self._cap:
                    self._awaiting_submit.popitem(last=False)
        elif kind is OrderSubmitted:
            recv_ns = self._awaiting_submit.pop(event.client_order_id, None)
            if recv_ns is not None and event.attempt == 1 and event.ts_ns >= recv_ns:
                self.latencies += 1
                if self._on_latency is not None:
                    self._on_latency((event.ts_ns - recv_ns) / 1e9)
        elif kind is FillRecorded:
            f = event.fill
            self._fills_by_order.add(f.client_order_id, {"qty": f.qty, "price": f.price, "ts_ns": f.ts_ns})
        elif kind is OrderStateChanged and event.new == "rejected" and news:
            self.rejections[rejection_label(event.event, event.reason)] += 1

    def orders_of(self, proposal_id: str) -> list[str]:
        with self._lock:
            return list(self._orders_by_proposal.get(proposal_id, ()))

    def fills_of(self, client_order_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._fills_by_order.get(client_order_id, ()))

    def rejection_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.rejections)
