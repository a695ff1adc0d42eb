"""In-process actor tests: recording actors and the wiring of one real actor.

The actor under test runs as in the daemon (a real pykka actor behind a real
router, real lmdb); its peers are `Recorder`s that put every message they get
on a queue for the test to read.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
from waiting import wait_for

from stockade.actors.services import BrokerAccess, Services
from stockade.broker.rest import BrokerEndpoints
from stockade.codecs.messages import Envelope
from stockade.config.settings import Settings
from stockade.storage.store import Store
from stockade.supervisors.clock import WALL_CLOCK, Clock
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


@contextlib.contextmanager
def venue_services(
    data_dir: Path, settings: Settings, *, seed: int, faults: Any = None, clock: str = "always_open"
) -> Iterator[Services]:
    """Services whose broker is a real in-process venue (AAPL, SPY) with fresh
    random keys and a lmdb store in `data_dir`; both closed afterwards.
    `faults`: the venue's fault knobs (`stockade.venue.faults.Faults`) from the start;
    `clock`: the venue's market clock and calendar ("nyse": closed on weekends and holidays)."""
    from stockade.venue.config import VenueConfig
    from stockade.venue.server import start_venue

    key, secret = "PK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    venue = start_venue(
        VenueConfig(
            port=0,
            seed=seed,
            api_key=key,
            api_secret=secret,
            symbols=("AAPL", "SPY"),
            quote_rate_hz=4.0,
            rate_limit_per_min=100_000,
            clock=clock,
        ),
        faults,
    )
    store = Store.open(data_dir)
    url = venue.base_url
    access = BrokerAccess("embedded", BrokerEndpoints(url, url, url + "/v2/iex", url + "/stream"), key, secret)
    try:
        yield Services(settings=settings, store=store, broker=access, faults=FaultInjector())
    finally:
        store.close()
        venue.stop(timeout=10)


def hold(client: Any, symbol: str, qty: int) -> None:
    """Buy `qty` of `symbol` at market through `client` and wait for the position."""
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest

    client.submit_order(MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    wait_for(lambda: any(p.symbol == symbol for p in client.get_all_positions()), 10, 0.05, f"{symbol} held")


def add_recorder(router: Router, name: str, got: queue.Queue | None = None) -> tuple[pykka.ActorRef, queue.Queue]:
    """Start a Recorder and register it as `name`; returns its ref and its queue."""
    got = queue.Queue() if got is None else got
    ref = Recorder.start(got)
    router.register(name, ref, router.next_generation(name))
    return ref, got


def start_actor(
    router: Router, actor_cls: type, name: str, extras: dict[str, Any], clock: Clock = WALL_CLOCK
) -> pykka.ActorRef:
    """Start `actor_cls` as `name` (a new generation) and register it with the router.

    `clock`: a `SimClock` lets a test move the actor's time (and fire its timers) itself.
    """
    gen = router.next_generation(name)
    ctx = ActorContext(name=name, generation=gen, router=router, notify=lambda _m: None, extras=extras, clock=clock)
    ref = actor_cls.start(ctx)
    router.register(name, ref, gen)
    return ref
