"""The one lmdb environment of a data dir: opening, locking, growing, closing.

Layout: `<data dir>/stockade.lmdb/` (lmdb's data.mdb and lock.mdb) and
`<data dir>/stockade.lock`, an fcntl lock file holding the writer's pid.
lmdb itself lets many processes write one environment; two daemons on one
data dir would each think they own the ledger, so the lock file allows one.

Durability (docs/ARCHITECTURE.md, storage, has the figures): two sync modes.
- "safe" (the daemon's default): MDB_NOMETASYNC alone. Every commit flushes
  its data pages; the meta page is left to the next flush. Per lmdb's
  documentation this "maintains database integrity, but a system crash may
  undo the last committed transaction". `write(durable=True)` (the default)
  then syncs once more after its commit, so a durable write (an intent)
  survives a power cut; a `durable=False` commit (decision records, acks,
  fills) may be undone by one but never corrupts what was synced.
- "fast": MDB_NOSYNC and MDB_NOMETASYNC, and durable writes sync
  explicitly. Commits without a sync cost a fraction, but lmdb's
  MDB_NOSYNC documentation keeps integrity only "if the filesystem preserves
  write order" (ext4 and xfs do not promise that): a power cut while
  unsynced commits are in flight can corrupt the whole file, synced intents
  included, since lmdb may already reuse pages of the last synced snapshot.
  For a user who chooses speed (`[storage] sync_mode`), and for stores that
  are rebuilt from their inputs (`sync_durable=False`: a backtest's output),
  where a corrupt file costs a re-run.
A process crash loses nothing in either mode (commits are in the OS page cache).

Growth: lmdb fails a write with MapFullError when the map is full. The map
is grown before a write transaction starts when free room runs low, and on
MapFullError: `transact(fn)` grows and runs `fn` again; the `write()` block
cannot be re-run, so it grows and re-raises (nothing was written).

Threads: lmdb may only change the map size while no transaction of this
process is open, so every transaction passes a gate that a resize closes.
A thread already inside a transaction passes freely (nested read inside a
write), so the gate cannot deadlock on itself.

Fencing: a write from the thread of a replaced (fenced) actor instance is
refused with `Fenced`, as the transaction begins and again just before it
commits (a zombie fenced mid-transaction commits nothing); see
`supervisors.fence`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from stockade.storage.audit_buffer import MAX_DELAY_S, AuditBuffer
from stockade.supervisors import fence

log = logging.getLogger(__name__)

T = TypeVar("T")

ENV_DIRNAME = "stockade.lmdb"
LOCK_FILENAME = "stockade.lock"
MiB = 1 << 20
GiB = 1 << 30
DEFAULT_MAP_SIZE = 256 * MiB
DEFAULT_MAX_MAP_SIZE = 64 * GiB
DEFAULT_MAX_DBS = 32
SYNC_MODES = ("safe", "fast")
# Grow before a write when less than this share of the map is left: a single
# write block cannot be retried, so it should rarely meet a full map.
HEADROOM_FRACTION = 0.25


def _nothing(txn: lmdb.Transaction) -> None:
    """An empty write: the transaction commits only the audit records it folds in."""


class StorageError(Exception):
    """Base of stockade's storage errors."""


class DataDirLocked(StorageError):
    """Another process (or another open in this one) holds the data dir for writing."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"data dir {data_dir} is in use by {who} (lock file {data_dir / LOCK_FILENAME})")
        self.data_dir = data_dir
        self.pid = pid


class StorageFull(StorageError):
    """The map cannot grow any further (max_map_size reached)."""


class StorageClosed(StorageError):
    """The environment was closed."""


class _Gate:
    """Many transactions at once, or one resize/close alone; re-entrant per thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._exclusive = False
        self._waiting = 0
        self._local = threading.local()

    def depth(self) -> int:
        return getattr(self._local, "depth", 0)

    def writing(self) -> bool:
        return getattr(self._local, "writing", False)

    def set_writing(self, value: bool) -> None:
        self._local.writing = value

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        depth = self.depth()
        if depth == 0:
            with self._cond:
                # Writer preference: a waiting resize is not starved by a
                # stream of new transactions.
                while self._exclusive or self._waiting:
                    self._cond.wait()
                self._active += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._cond:
                    self._active -= 1
                    if self._active == 0:
                        self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        if self.depth():
            raise StorageError("cannot resize or close the environment inside one of its transactions")
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._active:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class _LockFile:
    """An exclusive, non-blocking flock on `<data dir>/stockade.lock` holding our pid.

    The kernel drops the lock when the process dies, so a crashed daemon never
    leaves a stale lock; the file itself stays (removing it would race).
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILENAME
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DataDirLocked(data_dir, pid) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


class Environment:
    """One open lmdb environment; use `Environment.open(data_dir)`."""

    def __init__(
        self,
        env: lmdb.Environment,
        data_dir: Path,
        lock: _LockFile | None,
        *,
        readonly: bool,
        max_map_size: int,
        sync_durable: bool = True,
        commits_flush: bool = False,
        audit_max_delay_s: float | None = None,
    ) -> None:
        self._env: lmdb.Environment | None = env
        self.sync_durable = sync_durable
        self.data_dir = data_dir
        self.path = data_dir / ENV_DIRNAME
        self.readonly = readonly
        self.max_map_size = max_map_size
        self._lock = lock
        self._gate = _Gate()
        self._dbs: dict[str, object] = {}
        self._dbs_lock = threading.Lock()
        # `batched()`: the one write transaction every read and write joins, its thread, its open child.
        self._batch: lmdb.Transaction | None = None
        self._batch_thread = 0
        self._batch_child: lmdb.Transaction | None = None
        # Audit records committed in groups (storage/audit_buffer.py): only where
        # every commit flushes ("safe" mode); elsewhere a commit costs no flush.
        self.audit: AuditBuffer | None = None
        if commits_flush and not readonly:
            self.audit = AuditBuffer(
                lambda: self.transact(_nothing, durable=False),
                max_delay_s=MAX_DELAY_S if audit_max_delay_s is None else audit_max_delay_s,
            )

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        max_dbs: int = DEFAULT_MAX_DBS,
        readonly: bool = False,
        sync_durable: bool = True,
        sync_mode: str = "safe",
        audit_max_delay_s: float | None = None,
    ) -> Environment:
        """Open (creating if needed) `<data_dir>/stockade.lmdb`.

        A writer takes the data dir's lock first and raises DataDirLocked when
        another process holds it. `readonly=True` takes no lock (for reports
        beside a running daemon) and needs an existing environment.
        `sync_mode` is "safe" (every commit flushes its data, never a corrupt
        file) or "fast" (no flush but the durable writes'; see the module
        docstring). `sync_durable=False` makes a durable write skip its fsync
        and implies "fast": only for stores that are rebuilt from their inputs
        when the process dies (a backtest), which sync once at `close`.
        `audit_max_delay_s`: how long an audit record may wait for its group
        commit in "safe" mode (storage/audit_buffer.py; default MAX_DELAY_S).
        """
        if sync_mode not in SYNC_MODES:
            raise ValueError(f"sync_mode must be one of {', '.join(SYNC_MODES)}, got {sync_mode!r}")
        nosync = sync_mode == "fast" or not sync_durable
        data_dir = Path(data_dir)
        if map_size <= 0 or max_map_size < map_size:
            raise ValueError(f"need 0 < map_size <= max_map_size, got {map_size} and {max_map_size}")
        lock = None
        if not readonly:
            data_dir.mkdir(parents=True, exist_ok=True)
            lock = _LockFile(data_dir)
        try:
            path = data_dir / ENV_DIRNAME
            if readonly and not (path / "data.mdb").exists():
                raise StorageError(f"no stockade storage at {path}")
            if not readonly:
                path.mkdir(exist_ok=True)
            env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=max_dbs,
                subdir=True,
                readonly=readonly,
                # "safe": each commit flushes its data pages, not its meta
                # page (MDB_NOMETASYNC); "fast": nothing (MDB_NOSYNC). Durable
                # writes sync explicitly in both (see the module docstring).
                sync=not nosync,
                metasync=False,
                # lmdb keeps its reader table in lock.mdb; the default of 126
                # readers is plenty for one daemon's threads.
                max_readers=126,
            )
        except BaseException:
            if lock:
                lock.release()
            raise
        # The file may already be larger than asked (grown in an earlier run):
        # lmdb then adopts the file's size, which is what we want.
        return cls(
            env,
            data_dir,
            lock,
            readonly=readonly,
            max_map_size=max_map_size,
            sync_durable=sync_durable,
            commits_flush=not nosync,
            audit_max_delay_s=audit_max_delay_s,
        )

    # ---- databases ----------------------------------------------------------

    def db(self, name: str) -> Any:
        """The named database handle, created on first use (not in readonly mode).

        Open every table before writing (the Store does, at open): creating one
        inside a write transaction of the same thread would need a second one.
        """
        handle = self._dbs.get(name)
        if handle is not None:
            return handle
        if self._gate.writing() or self._batch is not None:
            raise StorageError(f"table {name!r} must be opened outside a write transaction")
        with self._dbs_lock:
            handle = self._dbs.get(name)
            if handle is None:
                # lmdb: opening a database must not overlap another
                # transaction opening one; the lock above serialises that.
                with self._gate.shared():
                    try:
                        handle = self._lmdb().open_db(name.encode(), create=not self.readonly)
                    except lmdb.NotFoundError:
                        raise StorageError(f"no table {name!r} in {self.path}") from None
                self._dbs[name] = handle
            return handle

    # ---- transactions -------------------------------------------------------

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """One write transaction for the whole block, committed when it ends: for a backtest's replay.

        A single thread's many small writes (a backtest: a record per
        proposal, per refusal, per fill) each paid a transaction begin and
        commit. Inside the block every `write()` is a child transaction of
        one outer transaction (committed into it, or aborted alone, exactly as
        on its own), and every `read()` reads that outer transaction, so the
        thread sees what it wrote as if each write had been committed. Readers
        in other processes see the block's writes when it ends. Only the
        opening thread may use the environment meanwhile (lmdb's writer lock
        is held); a write that fills the map fails the block (the map is
        given its headroom when the block begins).
        """
        if self._batch is not None or self._gate.depth():
            raise StorageError("batched() inside a transaction or another batch")
        fence.check("storage")
        self._ensure_headroom()
        with self._gate.shared():
            txn = self._begin(write=True)
            self._batch, self._batch_thread = txn, threading.get_ident()
            try:
                yield
            except BaseException:
                txn.abort()
                raise
            else:
                txn.commit()
            finally:
                self._batch, self._batch_child = None, None

    def _in_batch(self) -> bool:
        if self._batch is None:
            return False
        if self._batch_thread != threading.get_ident():
            raise StorageError("the environment is batched by another thread")
        return True

    @contextlib.contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A read-only transaction (a consistent snapshot)."""
        if self._in_batch():
            # The outer transaction (or, inside a write, the open child: lmdb
            # lets no other use of a parent while a child is open).
            yield self._batch_child or self._batch  # type: ignore[misc]
            return
        with self._gate.shared():
            txn = self._begin(write=False)
            try:
                yield txn
            finally:
                txn.abort()  # read transactions have nothing to commit

    def batching(self) -> bool:
        """Whether a `batched()` block is open (by any thread)."""
        return self._batch is not None

    def in_transaction(self) -> bool:
        """Whether this thread has a transaction of this environment open (read or write)."""
        return self._gate.depth() > 0 or self._batch is not None

    def writing(self) -> bool:
        """Whether this thread has a write transaction open (one that may still abort)."""
        return self._gate.writing()

    @contextlib.contextmanager
    def write(self, durable: bool = True) -> Iterator[lmdb.Transaction]:
        """A write transaction committed when the block ends, aborted if it raises.

        `durable` (default) means synced to disk before the block returns.
        On MapFullError the map grows and the error propagates: nothing was
        written, and running the block again will fit (see `transact`).
        """
        if self._gate.writing():
            # lmdb's writer lock is not re-entrant: this would deadlock.
            raise StorageError("nested write transaction: pass the open one as txn=")
        fence.check("storage")
        if self._in_batch():
            yield from self._batch_write()
            return
        if self._gate.depth() == 0:
            self._ensure_headroom()
        grow = False
        size_seen: int | None = None
        try:
            with self._gate.shared():
                txn = self._begin(write=True)
                size_seen = self.map_size
                self._gate.set_writing(True)
                # Audit records waiting for a commit go first: this commit carries
                # them, and nothing written after them lands before them.
                folded = self.audit.take() if self.audit is not None else []
                try:
                    for _, put, ts_ns, raw in folded:
                        put(txn, ts_ns, raw)
                    yield txn
                    fence.check("storage")  # fenced while writing: commit nothing
                except BaseException:
                    txn.abort()
                    if self.audit is not None:
                        self.audit.put_back(folded)  # not ours to lose: the next commit carries them
                    raise
                else:
                    try:
                        txn.commit()
                    except BaseException:
                        if self.audit is not None:
                            self.audit.put_back(folded)
                        raise
                finally:
                    self._gate.set_writing(False)
        except lmdb.MapFullError:
            grow = True
            raise
        finally:
            # Growing needs every transaction of this thread closed: after the
            # gate, not inside it.
            if grow and self._gate.depth() == 0:
                self.grow(from_size=size_seen)
        if durable and self.sync_durable:
            self.sync()

    def _batch_write(self) -> Iterator[lmdb.Transaction]:
        """`write()` inside `batched()`: a child of the batch, committed into it (no sync: the batch is one)."""
        child = self._lmdb().begin(write=True, parent=self._batch)
        self._batch_child = child
        self._gate.set_writing(True)
        try:
            yield child
            fence.check("storage")
        except BaseException:
            child.abort()
            raise
        else:
            child.commit()
        finally:
            self._gate.set_writing(False)
            self._batch_child = None

    def transact(self, fn: Callable[[lmdb.Transaction], T], durable: bool = True) -> T:
        """Run `fn(txn)` in a write transaction; on a full map grow and run it again."""
        while True:
            try:
                with self.write(durable=durable) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                if self._gate.depth():
                    raise  # nested in a caller's transaction: only the caller can retry
                log.info("lmdb map grown to %d bytes after MapFullError; retrying the write", self.map_size)

    def _begin(self, write: bool) -> lmdb.Transaction:
        env = self._lmdb()
        try:
            return env.begin(write=write)
        except lmdb.MapResizedError:
            # Another process grew the map: adopt its size and begin again.
            # Only a readonly process sees this (the writer holds the data dir
            # lock and grows the map itself), and such tools are single-threaded.
            env.set_mapsize(0)
            return env.begin(write=write)

    # ---- size ---------------------------------------------------------------

    @property
    def map_size(self) -> int:
        with self._gate.shared():
            return self._lmdb().info()["map_size"]

    def used_bytes(self) -> int:
        """Bytes up to lmdb's highest page in use (freed pages are reused before this grows)."""
        with self._gate.shared():
            env = self._lmdb()
            return (env.info()["last_pgno"] + 1) * env.stat()["psize"]

    def _ensure_headroom(self) -> None:
        if self.readonly:
            return
        with self._gate.shared():
            size = self.map_size
            low = size - self.used_bytes() < size * HEADROOM_FRACTION
        if low and size < self.max_map_size:
            self.grow(from_size=size)

    def grow(self, min_size: int | None = None, *, from_size: int | None = None) -> int:
        """Double the map (at least to `min_size`), up to max_map_size; returns the new size.

        With `from_size`, do nothing if the map is already larger than that
        (another thread grew it meanwhile).
        """
        with self._gate.exclusive():
            env = self._lmdb()
            old = env.info()["map_size"]
            if from_size is not None and old > from_size:
                return old
            if old >= self.max_map_size:
                raise StorageFull(f"{self.path} is full at its maximum map size of {self.max_map_size} bytes")
            new = min(max(old * 2, min_size or 0), self.max_map_size)
            env.set_mapsize(new)
            log.info("lmdb map of %s grown from %d to %d bytes", self.path, old, new)
            return new

    # ---- lifecycle ----------------------------------------------------------

    def sync(self) -> None:
        """Flush committed data to disk now."""
        with self._gate.shared():
            self._lmdb().sync(True)

    def close(self) -> None:
        """Commit waiting audit records, close after open transactions end, release the data dir lock. Idempotent."""
        if self._env is None:
            return
        if self.audit is not None:
            self.audit.close()
        with self._gate.exclusive():
            env, self._env = self._env, None
            if env is not None:
                if not self.readonly:
                    env.sync(True)
                env.close()
        if self._lock:
            self._lock.release()
            self._lock = None

    @property
    def closed(self) -> bool:
        return self._env is None

    def _lmdb(self) -> lmdb.Environment:
        env = self._env
        if env is None:
            raise StorageClosed(f"storage at {self.path} is closed")
        return env

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
