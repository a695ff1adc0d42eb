"""The append-only journal: u64 big-endian sequence -> msgpack event.

The next sequence number is read from the last key inside the writing
transaction, not kept in memory: it survives restarts, an aborted
transaction gives its numbers back, and lmdb's single writer makes it race
free across threads. Numbers start at 1, so `last_seq() == 0` means empty.
An append from a replaced (fenced) actor instance is refused
(`supervisors.fence`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

import lmdb
import msgspec

from stockade.codecs.records import AnyJournalEvent, JournalEvent
from stockade.storage.environment import Environment, StorageError
from stockade.storage.tables import RecordDecodeError, scan
from stockade.supervisors import fence

_SEQ = struct.Struct(">Q")
_encoder = msgspec.msgpack.Encoder()


def seq_key(seq: int) -> bytes:
    return _SEQ.pack(seq)


class Journal:
    """Append-only log of events (a tagged union of msgspec Structs)."""

    def __init__(self, env: Environment, name: str = "journal", event_type: Any = AnyJournalEvent) -> None:
        self.env = env
        self.name = name
        self.event_type = event_type
        self._db = env.db(name)
        self._decoder = msgspec.msgpack.Decoder(event_type)

    def _last(self, txn: lmdb.Transaction) -> int:
        cursor = txn.cursor(self._db)
        return _SEQ.unpack(cursor.key())[0] if cursor.last() else 0

    def _append_all(self, txn: lmdb.Transaction, encoded: list[bytes]) -> range:
        first = self._last(txn) + 1
        cursor = txn.cursor(self._db)
        for i, raw in enumerate(encoded):
            # MDB_APPEND: cheaper than a search, and lmdb refuses a key out of order.
            if not cursor.put(_SEQ.pack(first + i), raw, append=True):
                raise StorageError(f"journal {self.name!r}: sequence {first + i} out of order")
        return range(first, first + len(encoded))

    def append(self, event: JournalEvent, *, durable: bool = True, txn: lmdb.Transaction | None = None) -> int:
        """Append one event; returns its sequence number.

        Without `txn`, commits before returning; `durable` (default) also
        means synced to disk (order intents need this). With `txn`, the event
        commits with the caller's transaction.
        """
        fence.check("journal", type(event).__name__)  # a replaced actor journals nothing
        raw = _encoder.encode(event)
        if txn is not None:
            return self._append_all(txn, [raw])[0]
        return self.env.transact(lambda t: self._append_all(t, [raw])[0], durable=durable)

    def append_many(
        self, events: Iterable[JournalEvent], *, durable: bool = True, txn: lmdb.Transaction | None = None
    ) -> range:
        """Append many events in one transaction (one sync for all); returns their sequence numbers."""
        fence.check("journal")
        encoded = [_encoder.encode(e) for e in events]
        if not encoded:
            return range(0)
        if txn is not None:
            return self._append_all(txn, encoded)
        return self.env.transact(lambda t: self._append_all(t, encoded), durable=durable)

    def read(
        self, from_seq: int = 0, limit: int | None = None, *, txn: lmdb.Transaction | None = None
    ) -> Iterator[tuple[int, JournalEvent]]:
        """(seq, event) in order, from `from_seq` (inclusive) on, at most `limit`."""
        start = _SEQ.pack(max(from_seq, 0))
        for raw_key, raw in scan(self.env, self._db, start=start, limit=limit, txn=txn):
            seq = _SEQ.unpack(raw_key)[0]
            try:
                event = self._decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise RecordDecodeError(self.name, seq, JournalEvent, str(exc)) from exc
            yield seq, event

    def get(self, seq: int) -> JournalEvent | None:
        """The event at `seq`, or None."""
        for found, event in self.read(seq, limit=1):
            return event if found == seq else None
        return None

    def last_seq(self, *, txn: lmdb.Transaction | None = None) -> int:
        """The newest sequence number (0 when empty)."""
        if txn is not None:
            return self._last(txn)
        with self.env.read() as rtxn:
            return self._last(rtxn)

    def count(self) -> int:
        with self.env.read() as rtxn:
            return rtxn.stat(self._db)["entries"]
