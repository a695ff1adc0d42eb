"""Durable storage of the paper venue's account: cash, positions, orders, fills, day trades.

One lmdb environment in the venue's data dir, with named tables. Each batch of
changes from the Exchange is one write transaction, committed with lmdb's
default durable sync, so a venue killed at any point restarts with the account
as of its last answered request.
"""

from __future__ import annotations

import os
import struct

import lmdb
import msgspec

from stockade.venue.exchange import AccountState, Changes, Fill, LedgerSnapshot, Order, Position

_ACCOUNT_KEY = b"account"
_MAP_SIZE = 256 * 1024 * 1024  # address space only; the file grows as used


class LedgerStore:
    """The venue's account in lmdb. Used only from the venue's event-loop thread."""

    def __init__(self, data_dir: str) -> None:
        path = os.path.join(data_dir, "venue-ledger")
        os.makedirs(path, exist_ok=True)
        # sync/metasync on: a commit returns only once it is on disk.
        self._env = lmdb.open(path, map_size=_MAP_SIZE, max_dbs=8, sync=True, metasync=True)
        self._meta = self._env.open_db(b"meta")
        self._orders = self._env.open_db(b"orders")
        self._positions = self._env.open_db(b"positions")
        self._fills = self._env.open_db(b"fills")  # u64 big-endian sequence -> fill
        self._enc = msgspec.msgpack.Encoder()
        self._next_fill_seq = self._last_fill_seq() + 1

    def _last_fill_seq(self) -> int:
        with self._env.begin(db=self._fills) as txn:
            cur = txn.cursor()
            return struct.unpack(">Q", cur.key())[0] if cur.last() else 0

    def load(self) -> LedgerSnapshot | None:
        """The stored account, or None when this data dir has none yet."""
        with self._env.begin() as txn:
            raw = txn.get(_ACCOUNT_KEY, db=self._meta)
            if raw is None:
                return None
            account = msgspec.msgpack.decode(raw, type=AccountState)
            orders = [msgspec.msgpack.decode(v, type=Order) for _, v in txn.cursor(db=self._orders)]
            positions = [msgspec.msgpack.decode(v, type=Position) for _, v in txn.cursor(db=self._positions)]
            fills = [msgspec.msgpack.decode(v, type=Fill) for _, v in txn.cursor(db=self._fills)]
        return LedgerSnapshot(account=account, orders=orders, positions=positions, fills=fills)

    def save_snapshot(self, snap: LedgerSnapshot) -> None:
        """Write a whole account (a fresh data dir's initial state)."""
        self.apply(
            Changes(
                account=snap.account,
                orders={o.id: o for o in snap.orders},
                positions={p.symbol: p for p in snap.positions},
                fills=list(snap.fills),
            )
        )

    def apply(self, changes: Changes) -> None:
        """Write one batch of changes in one durable transaction."""
        if changes.empty():
            return
        with self._env.begin(write=True) as txn:
            if changes.account is not None:
                txn.put(_ACCOUNT_KEY, self._enc.encode(changes.account), db=self._meta)
            for order in changes.orders.values():
                txn.put(order.id.encode(), self._enc.encode(order), db=self._orders)
            for symbol, pos in changes.positions.items():
                if pos is None:
                    txn.delete(symbol.encode(), db=self._positions)
                else:
                    txn.put(symbol.encode(), self._enc.encode(pos), db=self._positions)
            for fill in changes.fills:
                txn.put(struct.pack(">Q", self._next_fill_seq), self._enc.encode(fill), db=self._fills)
                self._next_fill_seq += 1

    def close(self) -> None:
        """Flush and close the environment."""
        self._env.sync(True)
        self._env.close()
