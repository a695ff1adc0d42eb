"""`AuditBuffer`: audit records (non-durable by design) committed in groups, off the actors' way.

In the "safe" sync mode every lmdb commit flushes its data pages (0.2 ms
quiet, several ms on a busy disk) and holds lmdb's one writer lock while it
does. The voter's and the risk guard's audit records (a proposal, a risk
verdict) were a commit each: a burst of quotes paid a flush per proposal on
the actors' own threads, ahead of the order they led to.

`TimeSeries.add_later` queues an encoded record here instead. The buffer
belongs to the environment (the Store), not to an actor: an actor that
crashes or is restarted loses nothing it queued. Queued records are committed
- in the next write transaction of any thread, before what that transaction
  writes (`Environment.write` folds them in): an intent's durable commit
  carries the proposal and the verdict that led to it, at no extra flush, and
  storage stays in causal order (nothing written after a record lands before it);
- by the buffer's own thread at most `max_delay_s` after the oldest was queued;
- by the queuing thread itself once `max_records` wait (a bounded buffer);
- before a reader of their series reads it (`TimeSeries` settles first), and
  when the environment closes (a clean stop).
So a `kill -9` loses at most the records queued in the last `max_delay_s`
(and never more than `max_records`); a process that keeps running loses none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import lmdb

from stockade.supervisors import fence

log = logging.getLogger(__name__)

MAX_DELAY_S = 0.010  # the oldest record waits at most this long (the kill -9 loss window)
MAX_RECORDS = 512  # the queuing thread commits itself when this many wait

# (the series' name, its writer, the record's time key, the encoded record)
Item = tuple[str, Callable[[lmdb.Transaction, int, bytes], bytes], int, bytes]


class AuditBuffer:
    """Encoded records waiting for a commit; see the module docstring."""

    def __init__(
        self,
        commit: Callable[[], None],
        *,
        max_delay_s: float = MAX_DELAY_S,
        max_records: int = MAX_RECORDS,
    ) -> None:
        if max_delay_s <= 0 or max_records < 1:
            raise ValueError(f"need max_delay_s > 0 and max_records >= 1, got {max_delay_s} and {max_records}")
        self._commit = commit  # an (empty) write transaction of the environment: it folds the records in
        self.max_delay_s = max_delay_s
        self.max_records = max_records
        self._cond = threading.Condition()
        self._items: list[Item] = []
        self._oldest = 0.0  # monotonic time the oldest waiting record was queued
        self._by_series: Counter[str] = Counter()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.commits = 0  # group commits made by the buffer's own thread or a full buffer (tests, bench)

    # ---- queuing ------------------------------------------------------------

    def add(self, item: Item) -> bool:
        """Queue one record (False if closed); commits at once (on this thread) if `max_records` now wait."""
        fence.check("storage")  # a replaced instance's records are refused, as its writes are
        with self._cond:
            if self._closed:
                return False
            if not self._items:
                self._oldest = time.monotonic()
                self._cond.notify()
            self._items.append(item)
            self._by_series[item[0]] += 1
            full = len(self._items) >= self.max_records
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-buffer", daemon=True)
                self._thread.start()
        if full:
            self.flush()
        return True

    def holds(self, series: str) -> bool:
        """Whether records of `series` wait for a commit."""
        return self._by_series[series] > 0

    @property
    def pending(self) -> int:
        return len(self._items)

    # ---- committing ---------------------------------------------------------

    def take(self) -> list[Item]:
        """Every waiting record, oldest first, for the caller's transaction to write."""
        with self._cond:
            items, self._items = self._items, []
            self._by_series.clear()
            return items

    def put_back(self, items: list[Item]) -> None:
        """Records a transaction took but did not commit (it aborted): first in line again."""
        if not items:
            return
        with self._cond:
            if not self._items:
                self._oldest = time.monotonic()
            self._items[:0] = items
            self._by_series.update(name for name, *_ in items)
            self._cond.notify()

    def flush(self) -> None:
        """Commit whatever waits now (one non-durable write transaction, which folds them in)."""
        if self._items:
            self._commit()
            self.commits += 1

    def _run(self) -> None:
        """The buffer's thread: commit each group at most `max_delay_s` after its oldest record."""
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                wait = self._oldest + self.max_delay_s - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue  # re-check: a transaction may have taken them meanwhile
            try:
                self.flush()
            except Exception:  # a failed commit keeps the records (put back); the next attempt retries
                log.exception("audit records could not be committed; retrying")
                with self._cond:
                    self._cond.wait(self.max_delay_s)

    def close(self) -> None:
        """Stop the thread, then commit what waits (a clean stop loses nothing). Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        self.flush()

    def describe(self) -> dict[str, Any]:
        return {"pending": self.pending, "commits": self.commits}
