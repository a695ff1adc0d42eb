"""In-process actor tests: recording actors and the wiring of one real actor.

The actor under test runs as in the daemon (a real pykka actor behind a real
router, real lmdb); its peers are `Recorder`s that put every message they get
on a queue for the test to read.
"""

from __future__ import annotations

import queue
from typing import Any

import pykka

from stockade.actors.services import Services
from stockade.codecs.messages import Envelope
from stockade.ops.settings import Settings
from stockade.storage.store import Store
from stockade.supervisors.context import ActorContext
from stockade.supervisors.faults import FaultInjector
from stockade.supervisors.router import Router


class Recorder(pykka.ThreadingActor):
    """A peer that records what it is sent (the message body, unwrapped from its envelope)."""

    def __init__(self, got: queue.Queue) -> None:
        super().__init__()
        self.got = got

    def on_receive(self, message):
        self.got.put(message.body if isinstance(message, Envelope) else message)


def services(settings: Settings, store: Store) -> Services:
    """Services without a broker (nothing in these tests talks to one)."""
    return Services(settings=settings, store=store, broker=None, faults=FaultInjector())


def add_recorder(router: Router, name: str, got: queue.Queue | None = None) -> tuple[pykka.ActorRef, queue.Queue]:
    """Start a Recorder and register it as `name`; returns its ref and its queue."""
    got = queue.Queue() if got is None else got
    ref = Recorder.start(got)
    router.register(name, ref, router.next_generation(name))
    return ref, got


def start_actor(router: Router, actor_cls: type, name: str, extras: dict[str, Any]) -> pykka.ActorRef:
    """Start `actor_cls` as `name` (a new generation) and register it with the router."""
    gen = router.next_generation(name)
    ctx = ActorContext(name=name, generation=gen, router=router, notify=lambda _m: None, extras=extras)
    ref = actor_cls.start(ctx)
    router.register(name, ref, gen)
    return ref
