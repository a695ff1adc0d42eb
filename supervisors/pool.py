"""`ActorPool`: many actors on a bounded set of threads (the analyzers: one per symbol).

A pykka `ThreadingActor` is a thread of its own, plus one per timer: 500
symbols were 1,000 threads, and every quote woke a different one. Here a
`PooledActor` keeps everything that makes it an actor and changes only what
runs it:
- its own inbox (`PooledInbox`), so the router, hold buffers, draining on
  failure and `ctl status` mailbox depths work as before;
- one message at a time, in order: an actor with queued messages is in the
  pool's run queue at most once and only one worker runs it at a time, for a
  slice of at most `slice_messages` messages (then it goes to the back, so
  one busy symbol cannot starve the others);
- its fence token bound to the worker thread while its slice runs, so every
  storage write, tell and REST call is checked against *that* instance;
- supervision unchanged: a failure stops and reports this actor only (the
  base's `_fail`), pings are ordinary asks, a stop is pykka's `_ActorStop`;
- timers on the pool's one timer thread instead of a thread each.

A hung handler holds its worker. The pool's watchdog (on the timer thread)
abandons a worker whose slice has run `hang_after_s` since it started or
since its actor's declared bounded work ended (`supervisors.fence.busy`:
busy is not hung, `health.silent_for`, the rule heartbeats follow), or whose actor has been fenced (replaced as hung by its
supervisor), and starts a replacement, so the pool never loses capacity to it for good; at most
`spare` abandoned workers may be outstanding at once (each ends when its
slice finally returns). Threads: `threads` + 1 (timers) + at most `spare`.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka
from pykka.messages import _ActorStop

from stockade.supervisors import fence
from stockade.supervisors.base import StockadeActor
from stockade.supervisors.clock import TimerEntry, TimerHandle
from stockade.supervisors.health import silent_for

logger = logging.getLogger(__name__)

# `ctx.extras` key under which the tree hands its pool to pooled actors.
POOL_EXTRA = "actor_pool"

WATCHDOG_S = 0.25  # how often the pool looks for stuck workers


def _refuse(envelope: Any, actor: Any) -> None:
    """An ask that will never be handled gets ActorDeadError now, not at its timeout."""
    reply_to = envelope.reply_to
    if reply_to is None:
        return
    try:
        if isinstance(envelope.message, _ActorStop):
            reply_to.set(None)
        else:
            error = pykka.ActorDeadError(f"{actor} stopped before handling the message")
            reply_to.set_exception(exc_info=(pykka.ActorDeadError, error, None))
    except queue.Full:  # already answered
        pass


def _handle(actor: Any, envelope: Any) -> None:
    """One message, as pykka's own loop does it, except that a BaseException stops this actor only."""
    try:
        response = actor._handle_receive(envelope.message)
        if envelope.reply_to is not None:
            envelope.reply_to.set(response)
    except Exception:
        if envelope.reply_to is not None:
            envelope.reply_to.set_exception()
        else:
            actor._handle_failure(*sys.exc_info())
            try:
                actor.on_failure(*sys.exc_info())
            except Exception:
                actor._handle_failure(*sys.exc_info())
    except BaseException:  # pykka would stop every actor (ActorRegistry.stop_all)
        logger.exception("%s: stopped by a BaseException", actor)
        actor._stop()


class PooledInbox:
    """A pooled actor's mailbox: a deque, scheduled on the pool when it has work."""

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._finished = False
        self._started = False
        self._pool: ActorPool | None = None
        self.actor: Any = None

    def attach(self, pool: ActorPool, actor: Any) -> None:
        """Start: the first slice runs the actor's `on_start`, then what was queued meanwhile."""
        with self._lock:
            self._pool, self.actor = pool, actor
            self._scheduled = True
        pool.submit(self)

    def put(self, envelope: Any, block: bool = True, timeout: float | None = None) -> None:
        submit_to = None
        with self._lock:
            finished = self._finished
            if not finished:
                self._items.append(envelope)
                if self._pool is not None and not self._scheduled:
                    self._scheduled = True
                    submit_to = self._pool
        if finished:
            _refuse(envelope, self.actor)
        elif submit_to is not None:
            submit_to.submit(self)

    def get_nowait(self) -> Any:
        with self._lock:
            if not self._items:
                raise queue.Empty
            return self._items.popleft()

    get = get_nowait  # nobody blocks on a pooled inbox

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    @property
    def fenced(self) -> bool:
        actor = self.actor
        return actor is not None and actor.fence.fenced

    def busy_until(self) -> float:
        """The actor's declared bounded work (`supervisors.fence.busy`): its deadline, or when it last ended."""
        actor = self.actor
        return actor.fence.busy_until if actor is not None else 0.0

    def run_slice(self, limit: int) -> None:
        """On a worker: set up if not yet, then handle up to `limit` messages in order."""
        actor = self.actor
        stopped = actor.actor_stopped
        fence.bind(actor.fence)
        try:
            if not self._started:
                self._started = True
                actor._actor_loop_setup()
            for _ in range(limit):
                if stopped.is_set():
                    break
                with self._lock:
                    if not self._items:
                        break
                    envelope = self._items.popleft()
                _handle(actor, envelope)
        finally:
            fence.bind(None)
        leftovers: list[Any] = []
        again = False
        with self._lock:
            if stopped.is_set():
                self._finished = True
                leftovers = list(self._items)
                self._items.clear()
                self._scheduled = False
            elif self._items:
                again = True
            else:
                self._scheduled = False
        for envelope in leftovers:
            _refuse(envelope, actor)
        if again and self._pool is not None:
            self._pool.submit(self)


class _Worker:
    __slots__ = ("thread", "job", "since", "abandoned")

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.job: PooledInbox | None = None
        self.since = 0.0
        self.abandoned = False


class ActorPool:
    """`threads` workers running pooled actors, one timer thread, and a watchdog for stuck workers."""

    def __init__(
        self,
        threads: int,
        name: str = "pool",
        *,
        hang_after_s: float = 2.0,
        spare: int | None = None,
        slice_messages: int = 32,
    ) -> None:
        if threads < 1:
            raise ValueError(f"an actor pool needs at least 1 thread, got {threads!r}")
        if not hang_after_s > 0:
            raise ValueError(f"hang_after_s must be > 0, got {hang_after_s!r}")
        self.threads = threads
        self.name = name
        self.hang_after_s = hang_after_s
        self.spare = max(2, threads) if spare is None else spare
        self.slice_messages = slice_messages
        self._runq: queue.SimpleQueue[PooledInbox | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._abandoned: set[_Worker] = set()
        self._ids = itertools.count()
        self._stopped = False
        self.at_cap = False  # a stuck worker was left unreplaced: `spare` are stuck already
        self.replaced = 0  # workers abandoned (stuck) and replaced so far
        self._timers: list[tuple[float, int, TimerEntry[float]]] = []
        self._timer_seq = itertools.count()
        self._timer_cond = threading.Condition()
        for _ in range(threads):
            self._start_worker()
        self._timer_thread = threading.Thread(target=self._timer_loop, name=f"{name}-timers", daemon=True)
        self._timer_thread.start()

    # ---- running actors -------------------------------------------------------------

    def submit(self, inbox: PooledInbox) -> None:
        self._runq.put(inbox)

    def _start_worker(self) -> None:
        worker = _Worker()
        worker.thread = threading.Thread(
            target=self._work, args=(worker,), name=f"{self.name}-{next(self._ids)}", daemon=True
        )
        self._workers.add(worker)
        worker.thread.start()

    def _work(self, worker: _Worker) -> None:
        slice_messages = self.slice_messages
        while True:
            inbox = self._runq.get()
            if inbox is None:
                return
            worker.since = time.monotonic()
            worker.job = inbox
            try:
                inbox.run_slice(slice_messages)
            except BaseException:  # a worker never dies of an actor's failure
                logger.exception("%s: a pooled actor's slice failed", self.name)
            finally:
                worker.job = None
            if worker.abandoned:
                with self._lock:
                    self._abandoned.discard(worker)
                return

    def _watch(self) -> None:
        """Abandon workers stuck in one slice (hung, or running a fenced actor) and replace them."""
        now = time.monotonic()
        with self._lock:
            if self._stopped:
                return
            for worker in list(self._workers):
                job = worker.job
                if job is None:
                    continue
                fenced = job.fenced
                # Busy is not stuck, and the clock restarts when a busy block ends (health.silent_for).
                if not fenced and silent_for(now, worker.since, job.busy_until()) <= self.hang_after_s:
                    continue
                if len(self._abandoned) >= self.spare:
                    if not self.at_cap:
                        self.at_cap = True
                        logger.error(
                            "%s: %d workers are stuck and %d more may not be added: the pool runs short",
                            self.name,
                            len(self._abandoned),
                            self.spare,
                        )
                    return
                worker.abandoned = True
                self._workers.discard(worker)
                self._abandoned.add(worker)
                self.replaced += 1
                logger.warning(
                    "%s: a worker has run %s for %.1fs%s: replaced by a new worker",
                    self.name,
                    getattr(job.actor, "name", job.actor),
                    now - worker.since,
                    " (fenced)" if fenced else "",
                )
                self._start_worker()
            if len(self._abandoned) < self.spare:
                self.at_cap = False

    # ---- timers -----------------------------------------------------------------------

    def timer(
        self, interval_s: float, fire: Callable[[], None], stopped: threading.Event | None, name: str
    ) -> TimerHandle:
        """Call `fire()` every `interval_s` on the pool's timer thread until cancelled or `stopped` is set."""
        if not interval_s > 0:
            raise ValueError(f"timer interval must be > 0, got {interval_s!r}")
        t = TimerEntry(interval_s, fire, stopped, name)
        with self._timer_cond:
            heapq.heappush(self._timers, (time.monotonic() + interval_s, next(self._timer_seq), t))
            self._timer_cond.notify()
        return t

    def _timer_loop(self) -> None:
        next_watch = time.monotonic() + WATCHDOG_S
        while True:
            due: list[TimerEntry[float]] = []
            with self._timer_cond:
                if self._stopped:
                    return
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    at, _, t = heapq.heappop(self._timers)
                    if t.cancelled or (t.stopped is not None and t.stopped.is_set()):
                        continue
                    due.append(t)
                    # Next due time from now: a late timer thread does not fire a burst.
                    heapq.heappush(self._timers, (max(at + t.interval, now), next(self._timer_seq), t))
                if not due:
                    wake = next_watch if not self._timers else min(next_watch, self._timers[0][0])
                    if wake > now:
                        self._timer_cond.wait(wake - now)
            for t in due:
                try:
                    t.fire()
                except pykka.ActorDeadError:
                    t.cancelled = True
                except Exception:
                    logger.exception("timer %s failed to fire", t.name)
            if time.monotonic() >= next_watch:
                next_watch = time.monotonic() + WATCHDOG_S
                try:
                    self._watch()
                except Exception:
                    logger.exception("%s: watchdog failed", self.name)

    # ---- queries and stop ---------------------------------------------------------------

    def thread_count(self) -> int:
        """Threads this pool runs now: workers (abandoned ones still alive included) and the timer thread."""
        with self._lock:
            workers = list(self._workers) + list(self._abandoned)
        alive = sum(1 for w in workers if w.thread is not None and w.thread.is_alive())
        return alive + (1 if self._timer_thread.is_alive() else 0)

    def stop(self, timeout: float = 5.0) -> bool:
        """End the workers and the timer thread (after the actors have stopped); True if all ended in time."""
        with self._lock:
            if self._stopped:
                return True
            self._stopped = True
            workers = list(self._workers)
        with self._timer_cond:
            self._timer_cond.notify()
        for _ in workers:
            self._runq.put(None)
        deadline = time.monotonic() + timeout
        ok = True
        for w in workers:
            if w.thread is not None:
                w.thread.join(max(0.0, deadline - time.monotonic()))
                ok = ok and not w.thread.is_alive()
        self._timer_thread.join(max(0.0, deadline - time.monotonic()))
        return ok and not self._timer_thread.is_alive()


_default_lock = threading.Lock()
_default: ActorPool | None = None


def default_pool() -> ActorPool:
    """The process's shared pool for pooled actors started without one in `ctx.extras` (tests, tools)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ActorPool(2, name="pool-default")
        return _default


class PooledActor(StockadeActor):
    """A `StockadeActor` run by an `ActorPool` (`ctx.extras["actor_pool"]`) instead of a thread of its own.

    Subclasses are written exactly like any other actor. In a backtest (the
    calling-thread dispatcher) it is never started, so nothing here runs.
    """

    _pool: ActorPool | None = None

    def _create_actor_inbox(self) -> PooledInbox:  # type: ignore[override]
        return PooledInbox()

    def _start_actor_loop(self) -> None:
        pool = self.ctx.extras.get(POOL_EXTRA)
        self._pool = pool if isinstance(pool, ActorPool) else default_pool()
        inbox = self.actor_inbox
        assert isinstance(inbox, PooledInbox)
        inbox.attach(self._pool, self)

    def _new_timer(self, seconds: float, fire: Callable[[], None], name: str) -> TimerHandle:
        if self._pool is None or getattr(self.clock, "simulated", False):
            return super()._new_timer(seconds, fire, name)
        return self._pool.timer(seconds, fire, self.actor_stopped, name)
