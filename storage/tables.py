"""Typed tables: msgspec Structs stored by key in one named lmdb database.

Every method takes an optional `txn`: pass the transaction of a
`with env.write() as txn:` block to make several writes (a journal append and
a table update) commit or vanish together. Without one, a write runs in its
own durable transaction and a read in its own snapshot.

Iteration without a `txn` reads in chunks, each in a fresh snapshot, so a
slow consumer never pins an old snapshot (which would stop lmdb reusing
pages) nor blocks a map resize.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar, cast

import lmdb
import msgspec

from stockade.storage.environment import Environment, StorageError

R = TypeVar("R")

SCAN_CHUNK = 512
_encoder = msgspec.msgpack.Encoder()


class RecordDecodeError(StorageError):
    """A stored value does not decode as the table's record type."""

    def __init__(self, table: str, key: Any, record_type: Any, detail: str) -> None:
        name = getattr(record_type, "__name__", None) or repr(record_type)
        super().__init__(f"table {table!r} key {key!r}: stored value is not a valid {name}: {detail}")
        self.table = table
        self.key = key


# ---- scanning ----------------------------------------------------------------


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with `prefix` (None: no bound)."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return None
    end[-1] += 1
    return bytes(end)


def _walk(
    cursor: lmdb.Cursor, lo: bytes, hi: bytes | None, after: bytes | None, reverse: bool, n: int | None
) -> Iterator[tuple[bytes, bytes]]:
    """Keys in [lo, hi), strictly past `after` in the walking direction, at most n."""
    if not reverse:
        ok = cursor.set_range(after or lo)
        if ok and after is not None and cursor.key() == after:
            ok = cursor.next()
    else:
        upper = after if after is not None else hi
        if upper is None:
            ok = cursor.last()
        else:
            ok = cursor.prev() if cursor.set_range(upper) else cursor.last()
    count = 0
    while ok and (n is None or count < n):
        key = cast(bytes, cursor.key())  # bytes: the environment never opens with buffers=True
        if (hi is not None and key >= hi) or key < lo:
            break
        yield key, cast(bytes, cursor.value())
        count += 1
        ok = cursor.prev() if reverse else cursor.next()


def scan(
    env: Environment,
    db: Any,
    *,
    prefix: bytes = b"",
    start: bytes | None = None,
    reverse: bool = False,
    limit: int | None = None,
    txn: lmdb.Transaction | None = None,
    chunk: int = SCAN_CHUNK,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) bytes in key order (or reverse) under `prefix`.

    `start` is inclusive: forward, from the first key >= start; reverse, from
    the last key <= start.
    """
    lo, hi = prefix, prefix_end(prefix)
    if start is not None:
        if not reverse:
            lo = max(lo, start)
        else:
            bound = start + b"\x00"  # keys <= start are the keys < start + b"\0"
            hi = bound if hi is None else min(hi, bound)
    if txn is not None:
        yield from _walk(txn.cursor(db), lo, hi, None, reverse, limit)
        return
    after: bytes | None = None
    left = limit
    while left is None or left > 0:
        want = chunk if left is None else min(chunk, left)
        with env.read() as rtxn:
            rows = list(_walk(rtxn.cursor(db), lo, hi, after, reverse, want))
        yield from rows
        if len(rows) < want:
            return
        after = rows[-1][0]
        if left is not None:
            left -= len(rows)


# ---- tables ------------------------------------------------------------------


class Table(Generic[R]):
    """Records of one msgspec Struct type by key (`str`, UTF-8 encoded; or raw `bytes`)."""

    def __init__(self, env: Environment, name: str, record_type: type[R], *, key_type: type = str) -> None:
        if key_type not in (str, bytes):
            raise TypeError("key_type must be str or bytes")
        self.env = env
        self.name = name
        self.record_type = record_type
        self.key_type = key_type
        self._db = env.db(name)
        self._decoder = msgspec.msgpack.Decoder(record_type)
        # A union (the journal) cannot be checked with isinstance.
        self._check = record_type if isinstance(record_type, type) else None

    # ---- codec --------------------------------------------------------------

    def _key(self, key: Any) -> bytes:
        if self.key_type is str:
            if not isinstance(key, str):
                raise TypeError(f"table {self.name!r} keys are str, got {type(key).__name__}")
            raw = key.encode()
        else:
            if not isinstance(key, (bytes, bytearray, memoryview)):
                raise TypeError(f"table {self.name!r} keys are bytes, got {type(key).__name__}")
            raw = bytes(key)
        if not raw or len(raw) > 511:  # lmdb's default maximum key size
            raise ValueError(f"table {self.name!r}: key must be 1..511 bytes, got {len(raw)}")
        return raw

    def _unkey(self, raw: bytes) -> Any:
        return raw.decode() if self.key_type is str else raw

    def encode(self, record: R) -> bytes:
        if self._check is not None and not isinstance(record, self._check):
            raise TypeError(f"table {self.name!r} stores {self._check.__name__}, got {type(record).__name__}")
        return _encoder.encode(record)

    def decode(self, key: Any, raw: bytes | memoryview) -> R:
        try:
            return self._decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RecordDecodeError(self.name, key, self.record_type, str(exc)) from exc

    # ---- reads --------------------------------------------------------------

    def get(self, key: Any, default: R | None = None, *, txn: lmdb.Transaction | None = None) -> R | None:
        """The record at `key`, or `default`."""
        raw_key = self._key(key)
        if txn is not None:
            raw = txn.get(raw_key, db=self._db)
        else:
            with self.env.read() as rtxn:
                raw = rtxn.get(raw_key, db=self._db)
        return default if raw is None else self.decode(key, raw)

    def has(self, key: Any, *, txn: lmdb.Transaction | None = None) -> bool:
        """Whether `key` is stored (no decode)."""
        if txn is not None:
            return txn.get(self._key(key), db=self._db) is not None
        with self.env.read() as rtxn:
            return rtxn.get(self._key(key), db=self._db) is not None

    def __contains__(self, key: Any) -> bool:
        return self.has(key)

    def items(
        self,
        prefix: Any = None,
        *,
        start: Any = None,
        reverse: bool = False,
        limit: int | None = None,
        txn: lmdb.Transaction | None = None,
    ) -> Iterator[tuple[Any, R]]:
        """(key, record) in key order (or reverse), under `prefix`, from `start` (inclusive)."""
        raw_prefix = b"" if prefix in (None, "", b"") else self._key(prefix)
        raw_start = None if start is None else self._key(start)
        if txn is not None and not raw_prefix and raw_start is None and not reverse and limit is None:
            yield from self._all_items(txn)
            return
        for raw_key, raw in scan(
            self.env, self._db, prefix=raw_prefix, start=raw_start, reverse=reverse, limit=limit, txn=txn
        ):
            key = self._unkey(raw_key)
            yield key, self.decode(key, raw)

    def _all_items(self, txn: lmdb.Transaction) -> Iterator[tuple[Any, R]]:
        """Every record of `txn`'s snapshot, walked by lmdb's own iterator: a whole-table
        read (positions, open orders) is on the risk guard's per-proposal path."""
        decode, as_str = self._decoder.decode, self.key_type is str
        # bytes, not memoryviews: the environment never opens with buffers=True.
        for raw_key, raw in cast(Iterator[tuple[bytes, bytes]], txn.cursor(self._db).iternext()):
            key = raw_key.decode() if as_str else raw_key
            try:
                record = decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise RecordDecodeError(self.name, key, self.record_type, str(exc)) from exc
            yield key, record

    def values_reusing(
        self, txn: lmdb.Transaction, memo: dict[bytes, tuple[bytes, R]]
    ) -> tuple[tuple[R, ...], dict[bytes, tuple[bytes, R]]]:
        """Every record of `txn`'s snapshot, reusing the decoded record from `memo` (raw key ->
        (raw value, record), as returned by the previous call) wherever the stored bytes are
        unchanged: the same bytes decode to the same frozen record. Returns the records and
        the memo for the next call."""
        decode = self._decoder.decode
        records: list[R] = []
        fresh: dict[bytes, tuple[bytes, R]] = {}
        for raw_key, raw in cast(Iterator[tuple[bytes, bytes]], txn.cursor(self._db).iternext()):
            seen = memo.get(raw_key)
            if seen is not None and seen[0] == raw:
                record = seen[1]
            else:
                try:
                    record = decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise RecordDecodeError(self.name, self._unkey(raw_key), self.record_type, str(exc)) from exc
            fresh[raw_key] = (raw, record)
            records.append(record)
        return tuple(records), fresh

    def keys(self, prefix: Any = None, *, txn: lmdb.Transaction | None = None) -> Iterator[Any]:
        raw_prefix = b"" if prefix in (None, "", b"") else self._key(prefix)
        for raw_key, _ in scan(self.env, self._db, prefix=raw_prefix, txn=txn):
            yield self._unkey(raw_key)

    def values(self, prefix: Any = None, *, txn: lmdb.Transaction | None = None) -> Iterator[R]:
        if txn is not None and prefix in (None, "", b""):
            for _, record in self._all_items(txn):
                yield record
            return
        for _, record in self.items(prefix, txn=txn):
            yield record

    def count(self, *, txn: lmdb.Transaction | None = None) -> int:
        """Number of records (from lmdb's own statistics, no scan)."""
        if txn is not None:
            return txn.stat(self._db)["entries"]
        with self.env.read() as rtxn:
            return rtxn.stat(self._db)["entries"]

    def __len__(self) -> int:
        return self.count()

    # ---- writes -------------------------------------------------------------

    def put(self, key: Any, record: R, *, txn: lmdb.Transaction | None = None) -> None:
        """Insert or replace the record at `key`."""
        raw_key, raw = self._key(key), self.encode(record)
        if txn is not None:
            txn.put(raw_key, raw, db=self._db)
        else:
            self.env.transact(lambda t: t.put(raw_key, raw, db=self._db))

    def put_many(
        self, records: Mapping[Any, R] | Iterable[tuple[Any, R]], *, txn: lmdb.Transaction | None = None
    ) -> int:
        """Insert or replace many records in one transaction; returns how many."""
        pairs = records.items() if isinstance(records, Mapping) else records
        encoded = [(self._key(k), self.encode(r)) for k, r in pairs]

        def write(t: lmdb.Transaction) -> int:
            cursor = t.cursor(self._db)
            for raw_key, raw in encoded:
                cursor.put(raw_key, raw)
            return len(encoded)

        return write(txn) if txn is not None else self.env.transact(write)

    def delete(self, key: Any, *, txn: lmdb.Transaction | None = None) -> bool:
        """Remove `key`; False if it was not there."""
        raw_key = self._key(key)
        if txn is not None:
            return txn.delete(raw_key, db=self._db)
        return self.env.transact(lambda t: t.delete(raw_key, db=self._db))

    def clear(self, *, txn: lmdb.Transaction | None = None) -> None:
        """Remove every record (the table itself stays)."""
        if txn is not None:
            txn.drop(self._db, delete=False)
        else:
            self.env.transact(lambda t: t.drop(self._db, delete=False))


# ---- time-ordered tables -----------------------------------------------------

_TIME_KEY = struct.Struct(">QI")


def time_key(ts_ns: int, counter: int = 0) -> bytes:
    """12 bytes that sort by time then counter: big-endian u64 ns + u32 counter."""
    return _TIME_KEY.pack(ts_ns, counter)


def parse_time_key(key: bytes | memoryview) -> tuple[int, int]:
    """(ts_ns, counter) of a `time_key`."""
    return _TIME_KEY.unpack(key)


class TimeSeries(Generic[R]):
    """Records kept in time order (alerts, decisions, equity), with retention.

    Keys come from the record's `ts_ns` (or now). The counter part keeps keys
    unique and in insertion order: a key is never below the last one, so two
    records in the same nanosecond, or a clock stepping back, still append.
    """

    def __init__(self, env: Environment, name: str, record_type: type[R]) -> None:
        self.table: Table[R] = Table(env, name, record_type, key_type=bytes)
        self.env = env
        self.name = name

    def _next_key(self, txn: lmdb.Transaction, ts_ns: int) -> bytes:
        cursor = txn.cursor(self.table._db)
        if cursor.last():
            last_ns, last_counter = parse_time_key(cursor.key())
            if ts_ns <= last_ns:
                return time_key(last_ns, last_counter + 1)
        return time_key(ts_ns, 0)

    def add(
        self, record: R, *, ts_ns: int | None = None, txn: lmdb.Transaction | None = None, durable: bool = True
    ) -> bytes:
        """Append `record`; returns its key. `durable=False` skips the sync (high-rate data)."""
        return self.add_many([record], ts_ns=ts_ns, txn=txn, durable=durable)[0]

    def add_many(
        self,
        records: Iterable[R],
        *,
        ts_ns: int | None = None,
        txn: lmdb.Transaction | None = None,
        durable: bool = True,
    ) -> list[bytes]:
        """Append many records in one transaction; returns their keys."""
        encoded = [
            (ts_ns if ts_ns is not None else getattr(r, "ts_ns", None) or time.time_ns(), self.table.encode(r))
            for r in records
        ]

        def write(t: lmdb.Transaction) -> list[bytes]:
            return [self._put_encoded(t, when, raw) for when, raw in encoded]

        return write(txn) if txn is not None else self.env.transact(write, durable=durable)

    def _put_encoded(self, t: lmdb.Transaction, when: int, raw: bytes) -> bytes:
        key = self._next_key(t, when)
        if not t.put(key, raw, db=self.table._db, append=True):
            raise StorageError(f"table {self.name!r}: time key {parse_time_key(key)} out of order")
        return key

    def add_later(self, record: R, *, ts_ns: int | None = None) -> None:
        """Append an audit record (non-durable by design) with the next group commit.

        In "safe" mode it waits in the environment's audit buffer
        (storage/audit_buffer.py: committed with the next write transaction, or
        within its max delay, or before this series is read); elsewhere it is
        written at once, as `add(record, durable=False)`.
        """
        audit = self.env.audit
        if audit is None or self.env.batching():
            self.add(record, ts_ns=ts_ns, durable=False)
            return
        when = ts_ns if ts_ns is not None else getattr(record, "ts_ns", None) or time.time_ns()
        if not audit.add((self.name, self._put_encoded, when, self.table.encode(record))):
            self.add(record, ts_ns=ts_ns, durable=False)  # the buffer is closed: as before (raises if closed)

    def _settle(self, txn: lmdb.Transaction | None) -> None:
        """Commit this series' waiting audit records before reading it (read what was added)."""
        audit = self.env.audit
        if txn is None and audit is not None and audit.holds(self.name) and not self.env.in_transaction():
            audit.flush()

    def latest(self, n: int, *, txn: lmdb.Transaction | None = None) -> list[R]:
        """The newest `n` records, newest first."""
        self._settle(txn)
        return [r for _, r in self.table.items(reverse=True, limit=n, txn=txn)]

    def since(self, ts_ns: int, *, txn: lmdb.Transaction | None = None) -> Iterator[tuple[bytes, R]]:
        """(key, record) from `ts_ns` on, oldest first."""
        self._settle(txn)
        return self.table.items(start=time_key(ts_ns), txn=txn)

    def items(self, **kwargs: Any) -> Iterator[tuple[bytes, R]]:
        self._settle(kwargs.get("txn"))
        return self.table.items(**kwargs)

    def count(self, *, txn: lmdb.Transaction | None = None) -> int:
        self._settle(txn)
        return self.table.count(txn=txn)

    def __len__(self) -> int:
        return self.count()

    def trim(
        self,
        *,
        older_than_ns: int | None = None,
        keep_last: int | None = None,
        batch: int = 10_000,
    ) -> int:
        """Delete records before `older_than_ns` and beyond the newest `keep_last`; returns how many.

        Deletes in batches of `batch` per transaction so trimming a large
        backlog never holds the writer lock for long.
        """
        deleted = 0
        while True:

            def one_batch(t: lmdb.Transaction) -> int:
                excess = t.stat(self.table._db)["entries"] - keep_last if keep_last is not None else 0
                cursor = t.cursor(self.table._db)
                n = 0
                ok = cursor.first()
                while ok and n < batch:
                    too_old = older_than_ns is not None and parse_time_key(cursor.key())[0] < older_than_ns
                    if not (too_old or n < excess):
                        break
                    cursor.delete()  # moves to the next record
                    n += 1
                    ok = cursor.key() != b""  # empty once the last record went
                return n

            n = self.env.transact(one_batch)
            deleted += n
            if n < batch:
                return deleted
