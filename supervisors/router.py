"""Name registry and router: actors address each other by name, never by ref.

A name outlives its instances. Each (re)start of a name gets a new
generation. While a name is between instances (crashed, restart pending in
backoff) messages for it wait in a bounded per-name buffer and are delivered,
in order, to the next instance when it registers; a name stopped for good
drops and counts. Fencing: once an instance is replaced (or fenced as hung),
what it sends is refused (`Fenced`, counted), so a zombie thread that wakes
up cannot act; the router also makes each instance's `FenceToken`, which
storage and the REST session check the same way (see `supervisors.fence`).

One lock guards everything: a delivery is a dict lookup and a `queue.put`
(pykka inboxes are unbounded), so the critical section stays short, and a
single lock makes "mark down + drain the inbox" atomic against deliveries.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import msgspec
import pykka
from pykka.messages import _ActorStop

from stockade.codecs.messages import Envelope, Message
from stockade.supervisors import fence, hooks
from stockade.supervisors.events import Request
from stockade.supervisors.fence import Fenced, FenceToken

__all__ = ["ActorStatus", "Fenced", "NotRunning", "Router"]

logger = logging.getLogger(__name__)

UP = "up"  # an instance is registered and takes messages
DOWN = "down"  # between instances: buffer
RETIRED = "retired"  # stopped for good: drop and count


class NotRunning(pykka.ActorDeadError):
    """`ask` to a name that has no running instance right now."""


class ActorStatus(msgspec.Struct, frozen=True):
    """One name in `Router.snapshot()`."""

    name: str
    state: str
    alive: bool
    generation: int
    restarts: int
    mailbox: int
    buffered: int
    parent: str | None
    refused: int = 0  # side effects refused to fenced (replaced) instances of this name


class _Entry:
    __slots__ = ("name", "ref", "generation", "fenced_upto", "state", "buffer", "restarts", "parent")

    def __init__(self, name: str, buffer_size: int) -> None:
        self.name = name
        self.ref: pykka.ActorRef[Any] | None = None
        self.generation = 0
        self.fenced_upto = 0  # generations <= this are fenced
        self.state = DOWN
        self.buffer: collections.deque[Envelope] = collections.deque(maxlen=buffer_size)
        self.restarts = 0
        self.parent: str | None = None

    def current(self, generation: int) -> bool:
        return generation == self.generation and generation > self.fenced_upto


class Router:
    """Thread-safe name -> current instance, with per-name hold buffers and fencing."""

    def __init__(self, buffer_size: int = 1000) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be >= 1")
        self._buffer_size = buffer_size
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._dead: collections.Counter[str] = collections.Counter()
        # name -> kind -> side effects refused to its fenced instances
        self._refused: dict[str, collections.Counter[str]] = {}

    # ---- sending ---------------------------------------------------------------

    def tell(self, name: str, msg: Message, sender: str, sender_generation: int | None = None) -> bool:
        """Send `msg` to the current instance of `name` (buffered while it restarts).

        `sender_generation` is the sending instance's generation; a sender that
        has been replaced or fenced (so is an actor's thread whose `FenceToken`
        is revoked) is refused: `Fenced` is raised and the refusal counted.
        Returns whether the message was delivered or buffered.
        """
        return self.deliver(name, Envelope.wrap(msg, sender, hooks.tracing.current_traceparent()), sender_generation)

    def deliver(self, name: str, envelope: Envelope, sender_generation: int | None = None) -> bool:
        """Route an already wrapped envelope (see `tell`)."""
        fence.check("tell", type(envelope.body).__name__)  # the calling actor thread's own token
        with self._lock:
            if sender_generation is not None:
                sender = self._entries.get(envelope.sender)
                if sender is not None and not sender.current(sender_generation):
                    self.refused(envelope.sender, "tell")
                    raise Fenced(f"{envelope.sender} gen {sender_generation} has been replaced: tell refused")
            entry = self._entries.get(name)
            if entry is None:
                self._dead["unknown"] += 1
                logger.debug("dead letter: no actor named %r", name)
                return False
            if entry.state == RETIRED:
                self._dead["retired"] += 1
                return False
            ref = entry.ref
            if entry.state == UP and ref is not None:
                try:
                    ref.tell(envelope)
                    return True
                except pykka.ActorDeadError:
                    pass  # crashed, its supervisor has not caught up yet: hold it
            self._hold(entry, envelope)
            return True

    def _hold(self, entry: _Entry, envelope: Envelope) -> None:
        if len(entry.buffer) == entry.buffer.maxlen:
            self._dead["overflow"] += 1  # the deque drops the oldest
        entry.buffer.append(envelope)

    def ask(self, name: str, msg: Message, timeout: float, sender: str = "control") -> Any:
        """Ask the current instance of `name` and wait up to `timeout` s (supervisors/control only)."""
        if timeout is None or not timeout > 0:
            raise ValueError(f"ask needs a timeout > 0, got {timeout!r}")  # never wait forever
        envelope = Envelope.wrap(msg, sender, hooks.tracing.current_traceparent())
        with self._lock:
            entry = self._entries.get(name)
            ref = entry.ref if entry is not None and entry.state == UP else None
        if ref is None or not ref.is_alive():
            raise NotRunning(f"{name} is not running")
        return ref.ask(Request(envelope), timeout=timeout)

    # ---- fencing ---------------------------------------------------------------------

    def token(self, name: str, generation: int) -> FenceToken:
        """The `FenceToken` of `name` gen `generation`: holds while it is the current instance."""
        # A partial, not a lambda: it is asked twice per message (on receipt and on each tell).
        return FenceToken(name, generation, functools.partial(self.is_current, name, generation), self.refused)

    def refused(self, name: str, kind: str) -> None:
        """Count a side effect refused to a fenced instance of `name` (`kind`: storage, journal, tell, rest)."""
        with self._lock:
            self._refused.setdefault(name, collections.Counter())[kind] += 1
            if kind == "tell":
                self._dead["fenced"] += 1  # a refused tell is also a dropped message

    def refusal_counts(self) -> dict[str, dict[str, int]]:
        """Refusals to fenced instances, by name and kind (for `status`)."""
        with self._lock:
            return {name: dict(kinds) for name, kinds in self._refused.items()}

    # ---- lifecycle (supervisors) ---------------------------------------------------

    def _check_owner(self, owner: tuple[str, int] | None) -> None:
        if owner is None:
            return
        entry = self._entries.get(owner[0])
        if entry is not None and not entry.current(owner[1]):
            raise Fenced(f"{owner[0]} gen {owner[1]} has been replaced")

    def next_generation(self, name: str, owner: tuple[str, int] | None = None) -> int:
        """Reserve the next generation of `name` (fencing older ones); buffer until `register`.

        `owner` is the supervisor (name, generation) doing it: a fenced
        supervisor that wakes up cannot take the name back.
        """
        with self._lock:
            self._check_owner(owner)
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = _Entry(name, self._buffer_size)
            entry.generation += 1
            entry.state = DOWN
            entry.ref = None
            return entry.generation

    def register(
        self,
        name: str,
        ref: pykka.ActorRef[Any],
        generation: int,
        parent: str | None = None,
        restart: bool = False,
        owner: tuple[str, int] | None = None,
    ) -> bool:
        """Make `ref` the instance of `name` for `generation` and flush what was held for it.

        Returns False (and changes nothing) if `generation` is no longer current.
        """
        with self._lock:
            self._check_owner(owner)
            entry = self._entries.get(name)
            if entry is None or not entry.current(generation):
                return False
            entry.ref = ref
            entry.parent = parent
            entry.state = UP
            if restart:
                entry.restarts += 1
            while entry.buffer:
                envelope = entry.buffer.popleft()
                try:
                    ref.tell(envelope)
                except pykka.ActorDeadError:
                    # Died during start: keep the rest for the next instance.
                    entry.buffer.appendleft(envelope)
                    break
            return True

    def mark_down(
        self,
        name: str,
        generation: int,
        drain: bool = False,
        under_lock: Callable[[], None] | None = None,
    ) -> None:
        """`name` gen `generation` is gone or going: hold its messages from now on.

        With `drain`, told messages still in the old instance's inbox move to
        the hold buffer (ahead of anything held since), so the next instance
        gets them; asks in it fail at once. `under_lock` runs first, inside
        the lock (the base actor marks itself stopped there so no delivery
        can slip into the inbox after the drain).
        """
        with self._lock:
            if under_lock is not None:
                under_lock()
            entry = self._entries.get(name)
            if entry is None or entry.generation != generation or entry.state == RETIRED:
                return
            entry.state = DOWN
            if drain and entry.ref is not None:
                drained = _drain(entry.ref)
                if drained:
                    held = list(entry.buffer)
                    entry.buffer.clear()
                    for envelope in drained + held:
                        self._hold(entry, envelope)

    def fence(self, name: str, generation: int) -> list[pykka.ActorRef[Any]]:
        """Fence `name` gen `generation` (hung) and its whole subtree.

        From now on what they send is dropped and nothing reaches them; their
        queued messages move to the hold buffers. Returns their refs so the
        caller can stop them without waiting.
        """
        refs: list[pykka.ActorRef[Any]] = []
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.generation != generation:
                return refs
            for victim in [entry] + [self._entries[n] for n in self._descendants(name)]:
                victim.fenced_upto = max(victim.fenced_upto, victim.generation)
                if victim.state != RETIRED:
                    victim.state = DOWN
                if victim.ref is not None:
                    drained = _drain(victim.ref)
                    held = list(victim.buffer)
                    victim.buffer.clear()
                    for envelope in drained + held:
                        self._hold(victim, envelope)
                    refs.append(victim.ref)
        return refs

    def retire(self, name: str, generation: int | None = None) -> None:
        """`name` is stopped for good: drop (and count) what it is sent."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or (generation is not None and entry.generation != generation):
                return
            entry.state = RETIRED
            self._dead["retired"] += len(entry.buffer)
            entry.buffer.clear()

    def retire_all(self) -> None:
        """Every name is stopped for good (tree stopped or exhausted)."""
        with self._lock:
            for name in list(self._entries):
                self.retire(name)

    # ---- queries -------------------------------------------------------------------

    def lookup(self, name: str) -> pykka.ActorRef[Any] | None:
        """The current instance's ref, or None while `name` is between instances."""
        with self._lock:
            entry = self._entries.get(name)
            return entry.ref if entry is not None and entry.state == UP else None

    def generation(self, name: str) -> int:
        """Current generation of `name` (0 if never started)."""
        entry = self._entries.get(name)
        return entry.generation if entry is not None else 0

    def is_current(self, name: str, generation: int) -> bool:
        """Whether `name` gen `generation` is the live, unfenced instance (lock-free: hot path)."""
        entry = self._entries.get(name)
        return entry is None or entry.current(generation)

    def _descendants(self, name: str) -> list[str]:
        out: list[str] = []
        frontier = [name]
        while frontier:
            parent = frontier.pop()
            kids = [n for n, e in self._entries.items() if e.parent == parent and n not in out]
            out.extend(kids)
            frontier.extend(kids)
        return out

    def descendants(self, name: str) -> list[str]:
        """Names registered under `name`, transitively (its supervision subtree)."""
        with self._lock:
            return self._descendants(name)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def snapshot(self) -> list[ActorStatus]:
        """Status of every name, for `status` and the tree handle."""
        with self._lock:
            out = []
            for entry in self._entries.values():
                ref = entry.ref
                alive = ref is not None and ref.is_alive()
                mailbox = mailbox_size(ref) if ref is not None else 0
                out.append(
                    ActorStatus(
                        name=entry.name,
                        state=entry.state,
                        alive=alive and entry.state == UP,
                        generation=entry.generation,
                        restarts=entry.restarts,
                        mailbox=mailbox,
                        buffered=len(entry.buffer),
                        parent=entry.parent,
                        refused=sum(self._refused.get(entry.name, {}).values()),
                    )
                )
            return out

    def status(self, name: str) -> ActorStatus | None:
        return next((s for s in self.snapshot() if s.name == name), None)

    @property
    def dead_letters(self) -> int:
        """Messages dropped so far, all reasons."""
        with self._lock:
            return sum(self._dead.values())

    def dead_letter_counts(self) -> dict[str, int]:
        """Dropped messages by reason: unknown, retired, overflow, fenced."""
        with self._lock:
            return dict(self._dead)


def mailbox_size(ref: pykka.ActorRef[Any]) -> int:
    """Messages waiting in `ref`'s inbox (0 for an inbox that cannot tell)."""
    qsize = getattr(ref.actor_inbox, "qsize", None)
    return qsize() if qsize is not None else 0


def _drain(ref: pykka.ActorRef[Any]) -> list[Envelope]:
    """Take every queued message out of a dead or fenced instance's inbox.

    Told envelopes are returned for redelivery; anyone waiting on an ask gets
    ActorDeadError now rather than at a timeout; supervision traffic (pings,
    ticks) is dropped, it means nothing to the next instance.
    """
    get_nowait = getattr(ref.actor_inbox, "get_nowait", None)
    out: list[Envelope] = []
    if get_nowait is None:
        return out
    while True:
        try:
            item = get_nowait()
        except queue.Empty:
            return out
        message, reply_to = item.message, item.reply_to
        if reply_to is not None:
            try:
                if isinstance(message, _ActorStop):
                    reply_to.set(None)
                else:
                    reply_to.set_exception(
                        exc_info=(
                            pykka.ActorDeadError,
                            pykka.ActorDeadError(f"{ref} stopped before handling the message"),
                            None,
                        )
                    )
            except queue.Full:  # already answered
                pass
        elif isinstance(message, Envelope):
            out.append(message)
