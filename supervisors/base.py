"""`StockadeActor`: the base of every stockade actor (and of the supervisor).

What the base does so concrete actors do not have to:
- unwraps the `Envelope`, opens a span parented by its traceparent, and
  dispatches the body to `handle(body, envelope)` (or to the methods marked
  `@handles(SomeMessage)`);
- answers heartbeat pings itself;
- applies fault injection (a `CrashNow` fault message; crash/hang armed for
  the next message; a crash drill's crash as a new instance comes up);
- turns *any* failure (an exception in a handler or in `setup()`, even a
  `BaseException` such as `SystemExit`) into a failure of this actor only:
  stops it, moves its unhandled mailbox to the router's hold buffer for the
  next instance, runs `teardown()`, and reports to its supervisor. Pykka on
  its own would stop *every* actor on a BaseException
  (`ActorRegistry.stop_all()`), would not report anything, and would leave a
  thread-less "alive" actor when `on_start` raises a BaseException;
- fences a replaced instance at the root: it binds the instance's
  `FenceToken` to its thread, so once the supervisor has replaced it (a
  hang) every storage write, journal entry, tell and REST call from that
  thread is refused with `Fenced` (counted, logged once), which unwinds a
  handler that was already running; queued messages are not handled at all.
  Bounded I/O declares itself busy on the same token, so a slow broker is
  not a hang (see `supervisors.fence`);
- timers (`every`) that deliver `Tick(what)` and stop with the actor.

Subclasses implement `setup()`, `teardown()` and handlers, never pykka's
`on_start`/`on_receive`/`on_stop`/`on_failure` (enforced at class creation).

    class Echo(StockadeActor):
        def setup(self) -> None:
            self.every(1.0, "flush")

        @handles(Quote)
        def on_quote(self, quote: Quote) -> None:
            self.tell("analyzer.AAPL", quote)

        @handles(Tick)
        def on_tick(self, tick: Tick, envelope: Envelope) -> None:
            ...

    ChildSpec(name="echo", start=Echo.start)   # Echo.start(ctx) -> ActorRef
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import pykka

from stockade.codecs.messages import Envelope, Message, Tick
from stockade.supervisors import fence, handling, hooks
from stockade.supervisors.clock import TimerHandle
from stockade.supervisors.context import ActorContext
from stockade.supervisors.events import ChildExit, ChildReady, Ping, Request
from stockade.supervisors.faults import CrashNow, InjectedCrash
from stockade.supervisors.fence import Fenced

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_PYKKA_HOOKS = ("on_start", "on_receive", "on_stop", "on_failure")
_HOOK_INSTEAD = {
    "on_start": "setup()",
    "on_receive": "handle() or @handles",
    "on_stop": "teardown()",
    "on_failure": "teardown()",
}


class ActorCrashed(Exception):
    """A BaseException (e.g. SystemExit) in a handler, turned into an ordinary failure."""


def handles(*message_types: type) -> Callable[[F], F]:
    """Mark a method as the handler of `message_types` (and their subclasses).

    The method takes `(self, msg)` or `(self, msg, envelope)`; `envelope` is
    None for messages that did not come through the router (supervision).
    """
    if not message_types:
        raise TypeError("@handles needs at least one message type")

    def mark(fn: F) -> F:
        # Kept in the function's own namespace (functools.wraps carries it); read back per class below.
        fn.__dict__["_stockade_handles"] = tuple(getattr(fn, "_stockade_handles", ())) + message_types
        return fn

    return mark


class StockadeActor(pykka.ThreadingActor):
    """Supervised actor: constructed with an `ActorContext` (`MyActor.start(ctx)`)."""

    # Daemon threads: a thread stuck in a hung call must not keep the process
    # alive after the tree has been stopped (every stop is bounded anyway).
    use_daemon_thread: ClassVar[bool] = True
    # Timers per actor; more is a bug (a timer started per message).
    max_timers: ClassVar[int] = 16

    _dispatch: ClassVar[dict[type, tuple[str, bool]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for hook in _PYKKA_HOOKS:
            if hook in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} overrides pykka's {hook}; implement {_HOOK_INSTEAD[hook]} instead "
                    "(the base turns failures there into supervised failures)"
                )
        dispatch: dict[type, tuple[str, bool]] = {}
        for klass in reversed(cls.__mro__):
            for attr, fn in vars(klass).items():
                if not inspect.isfunction(fn):
                    continue
                for message_type in getattr(fn, "_stockade_handles", ()):
                    params = len(inspect.signature(fn).parameters)
                    dispatch[message_type] = (attr, params >= 3)
        cls._dispatch = dispatch

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.name = ctx.name
        self.generation = ctx.generation
        self.router = ctx.router
        self.fence = ctx.fence if ctx.fence is not None else ctx.router.token(ctx.name, ctx.generation)
        self.clock = ctx.clock  # read the time through this, never `time` (a backtest drives it)
        self._timers: dict[str, TimerHandle] = {}
        self._tick_pending: dict[str, bool] = {}
        self._raw_timer_keys: dict[type, str] = {}
        self._ended = False
        self._reported = False
        self._log_slot = handling.Handling(ctx.name)

    # ---- hooks for subclasses ---------------------------------------------------

    def setup(self) -> None:
        """Runs in the actor's thread before the first message (rebuild state here)."""

    def teardown(self) -> None:
        """Runs once in the actor's thread when it stops, normally or by failure."""

    def handle(self, msg: Any, envelope: Envelope | None) -> Any:
        """Handle one message; the default dispatches on `@handles` marks."""
        for klass in type(msg).__mro__:
            entry = self._dispatch.get(klass)
            if entry is not None:
                attr, wants_envelope = entry
                method = getattr(self, attr)
                return method(msg, envelope) if wants_envelope else method(msg)
        return self.unhandled(msg, envelope)

    def unhandled(self, msg: Any, envelope: Envelope | None) -> Any:
        """A message nobody handles: logged, not a failure."""
        logger.warning("%s: no handler for %s", self.name, type(msg).__name__)
        return None

    # ---- services ----------------------------------------------------------------

    def tell(self, name: str, msg: Message) -> bool:
        """Send `msg` to the actor named `name` (fenced if this instance was replaced)."""
        return self.router.tell(name, msg, self.name, self.generation)

    def is_current(self) -> bool:
        """False once this instance has been replaced or fenced (its side effects are refused anyway)."""
        return not self.fence.fenced

    def every(self, seconds: float, what: str, message: Any = None) -> TimerHandle:
        """Deliver `Tick(what)` to this actor every `seconds` until it stops.

        A tick is skipped while the previous one is still queued, so a slow
        actor never builds a backlog of ticks. Calling again with the same
        `what` replaces that timer. `message` (supervision only) sends that
        raw message instead of an enveloped Tick.
        """
        self.cancel_timer(what)
        if len(self._timers) >= self.max_timers:
            raise RuntimeError(f"{self.name}: more than {self.max_timers} timers")
        if message is None:

            def make() -> Any:
                return Envelope.wrap(Tick(what), self.name)
        else:
            self._raw_timer_keys[type(message)] = what

            def make() -> Any:
                return message

        ref = self.actor_ref

        def fire() -> None:
            if self._tick_pending.get(what):
                return
            self._tick_pending[what] = True
            ref.tell(make())

        timer = self._new_timer(seconds, fire, f"{self.name}-{what}")
        self._timers[what] = timer
        return timer

    def _new_timer(self, seconds: float, fire: Callable[[], None], name: str) -> TimerHandle:
        """A repeating timer that stops with this actor (a pooled actor uses its pool's timer thread)."""
        return self.clock.timer(seconds, fire, self.actor_stopped, name=name)

    def cancel_timer(self, what: str) -> None:
        timer = self._timers.pop(what, None)
        if timer is not None:
            timer.cancel()
        self._tick_pending.pop(what, None)

    def _cancel_timers(self) -> None:
        for what in list(self._timers):
            self.cancel_timer(what)

    # ---- pykka hooks (final) --------------------------------------------------------

    def on_start(self) -> None:
        # This thread is this instance for its whole life: what it does is
        # checked against its token (storage, journal, tells, REST).
        fence.bind(self.fence)
        try:
            self.setup()
        except BaseException as exc:  # see module docstring
            self._fail(exc, "setup")
            return
        try:
            self.ctx.notify(ChildReady(self.name, self.generation))
        except Exception:
            logger.exception("%s: could not report it is ready", self.name)
        if self.ctx.faults.take_start_crash(self.name):  # a crash drill (`ctl crash NAME --times N`)
            self.actor_ref.tell(CrashNow())

    def on_receive(self, message: Any) -> Any:
        asked = False
        envelope: Envelope | None = None
        if isinstance(message, Envelope):
            envelope = message
        elif isinstance(message, Request):
            envelope, asked = message.envelope, True
        elif isinstance(message, Ping):
            asked = True
        if self.fence.fenced:
            # Fenced: this instance has been replaced; act on nothing.
            if asked:
                raise Fenced(f"{self.name} gen {self.generation} has been replaced")
            return None
        body = envelope.body if envelope is not None else message
        # A tick being handled is no longer queued: the timer may queue the next.
        if type(body) is Tick:
            self._tick_pending.pop(body.what, None)
        elif envelope is None and self._raw_timer_keys:
            key = self._raw_timer_keys.get(type(message))
            if key is not None:
                self._tick_pending.pop(key, None)
        span = None
        # Log lines written while handling carry this actor, the message's
        # symbol and client_order_id and the span's ids (read only when a line is written).
        slot = self._log_slot
        log_token = handling.enter(slot, body)
        try:
            self.ctx.faults.apply(self.name)
            if type(message) is CrashNow:
                raise InjectedCrash(f"injected crash in {self.name} (gen {self.generation})")
            if isinstance(message, Ping):
                return True
            if envelope is None:
                return self.handle(message, None)
            tracer = hooks.tracing.ACTIVE
            if tracer is None:  # tracing off: no span objects at all
                return self.handle(body, envelope)
            with tracer.message_span(self.name, body, envelope.traceparent, envelope.sender, envelope.id) as span:
                slot.span = span
                return self.handle(body, envelope)
        except BaseException as exc:  # see module docstring
            if isinstance(exc, Fenced) and self.fence.fenced:
                # A zombie's handler unwound at its first side effect (already
                # counted and logged); its supervisor has stopped it already.
                logger.info(
                    "%s (gen %d): handler of %s unwound: %s", self.name, self.generation, type(body).__name__, exc
                )
                if asked:
                    raise
                return None
            # The supervisor's span for this failure is a child of the span that failed.
            self._fail(exc, f"handling {type(body).__name__}", hooks.tracing.traceparent_of(span))
            if not asked:
                return None  # already logged, reported and stopped
            if isinstance(exc, Exception):
                raise
            raise ActorCrashed(repr(exc)) from exc
        finally:
            handling.leave(log_token)

    def on_stop(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._cancel_timers()
        self._teardown()
        self._report("normal", abnormal=False)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # Not reached in practice (on_receive never lets an exception out to
        # pykka); kept so a failure on some other path is still reported.
        if not self._ended:
            self._fail(exception_value or Exception("unknown failure"), "pykka")

    # ---- failure path -----------------------------------------------------------------

    def _fail(self, exc: BaseException, phase: str, traceparent: str | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        if isinstance(exc, Fenced) and self.fence.fenced:
            # Replaced while still in setup (or the like): not a failure of
            # anyone; the refusal was counted and logged by the token.
            logger.info("%s (gen %d) unwound in %s: %s", self.name, self.generation, phase, exc)
        else:
            logger.error("%s (gen %d) failed in %s: %r", self.name, self.generation, phase, exc, exc_info=exc)
        self._cancel_timers()

        def stop_self() -> None:
            # Same as pykka's own failure handling, but done here, inside the
            # router lock, so no delivery lands in the inbox after the drain.
            self.actor_stopped.set()
            pykka.ActorRegistry.unregister(self.actor_ref)

        try:
            self.router.mark_down(self.name, self.generation, drain=True, under_lock=stop_self)
        except Exception:
            logger.exception("%s: could not hand its mailbox back to the router", self.name)
            stop_self()
        self._teardown()
        self._report(f"{phase}: {exc!r}", abnormal=True, traceparent=traceparent)

    def _teardown(self) -> None:
        try:
            self.teardown()
        except Fenced as exc:  # a zombie's teardown may not write either (counted, logged once)
            logger.info("%s (gen %d): teardown cut short: %s", self.name, self.generation, exc)
        except BaseException:  # a failing teardown must not take others down
            logger.exception("%s: teardown failed", self.name)

    def _report(self, reason: str, abnormal: bool, traceparent: str | None = None) -> None:
        """Tell the supervisor this instance ended (once per instance)."""
        if self._reported:
            return
        self._reported = True
        try:
            self.ctx.notify(ChildExit(self.name, self.generation, reason, abnormal, traceparent))
        except Exception:
            logger.exception("%s: could not report its exit to its supervisor", self.name)
