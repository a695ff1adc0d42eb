"""Both stream clients and the REST factory against the embedded venue."""

from __future__ import annotations

import random
import threading

import pytest
from waiting import wait_for

from stockade.broker.backoff import Backoff
from stockade.broker.market_stream import MarketDataStream
from stockade.broker.rest import make_trading_client
from stockade.broker.trade_stream import TradeUpdatesStream
from stockade.venue.config import VenueConfig

venue_server = pytest.importorskip("stockade.venue.server")

KEY, SECRET = "PKVENUEINTEG01", "venue-integration-secret"


class Box:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items = []
        self.events = []
        self.resyncs = 0

    def add(self, x) -> None:
        with self.lock:
            self.items.append(x)

    def event(self, e) -> None:
        with self.lock:
            self.events.append(e)

    def resync(self) -> None:
        with self.lock:
            self.resyncs += 1

    def count(self) -> int:
        with self.lock:
            return len(self.items)

    def kinds(self) -> list[str]:
        with self.lock:
            return [e.kind for e in self.events]


@pytest.fixture
def venue(tmp_path):
    handle = venue_server.start_venue(
        VenueConfig(
            api_key=KEY, api_secret=SECRET, data_dir=str(tmp_path), symbols=("AAPL", "MSFT"), quote_rate_hz=50.0
        )
    )
    try:
        yield handle
    finally:
        handle.stop(10)


def _backoff(seed: int) -> Backoff:
    return Backoff(0.02, 0.2, stable_after_s=60, rng=random.Random(seed))


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_market_stream_against_venue_with_faults(venue, encoding):
    box = Box()
    stream = MarketDataStream(
        venue.data_stream_url("iex"),
        KEY,
        SECRET,
        ["AAPL", "MSFT"],
        box.add,
        box.event,
        encoding=encoding,
        silence_timeout_s=0.5,
        connect_timeout_s=5,
        close_timeout_s=0.5,
        backoff=_backoff(1),
        limit_delay_s=0.2,
    )
    stream.start()
    try:
        wait_for(lambda: box.count() >= 20, 10, what="quotes from the venue")
        with box.lock:
            quotes = list(box.items)
        assert {q.symbol for q in quotes} <= {"AAPL", "MSFT"}
        assert all(0 < q.bid <= q.ask for q in quotes)
        assert all(abs(q.recv_ns - q.ts_ns) < 5e9 for q in quotes)  # venue time, nanosecond epoch
        assert stream.stats()["malformed_frames"] == 0

        # A feed that stalls behind a live session: silence detection reconnects.
        venue.set_faults(stream_silent=True)
        wait_for(lambda: any("silent" in e.detail for e in box.events if e.kind == "disconnected"), 10)
        venue.set_faults(stream_silent=False)
        seen = box.count()
        wait_for(lambda: box.count() > seen + 5, 10, what="quotes after silence")

        # The venue cuts every socket: reconnect (406 while the old slot is reaped is fine).
        before = stream.stats()["connects"]
        venue.set_faults(drop_streams="market")
        wait_for(lambda: stream.stats()["connects"] > before, 10, what="reconnect after drop")
        seen = box.count()
        wait_for(lambda: box.count() > seen + 5, 10, what="quotes after drop")
    finally:
        assert stream.stop(5)


def test_trade_stream_and_rest_against_venue(venue):
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest

    box = Box()
    stream = TradeUpdatesStream(
        venue.trading_stream_url,
        KEY,
        SECRET,
        box.add,
        box.event,
        on_reconnect=box.resync,
        connect_timeout_s=5,
        close_timeout_s=0.5,
        ping_interval_s=1,
        ping_timeout_s=2,
        backoff=_backoff(2),
    )
    stream.start()
    try:
        wait_for(lambda: box.resyncs == 1, 10, what="listening")
        client = make_trading_client(KEY, SECRET, venue.base_url, timeout_s=5)
        wait_for(lambda: client.get_clock().is_open, 10)
        order = client.submit_order(
            MarketOrderRequest(
                symbol="AAPL", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, client_order_id="stk-venue-1"
            )
        )

        def filled():
            with box.lock:
                return [u for u in box.items if u.client_order_id == "stk-venue-1" and u.event == "fill"]

        fill = wait_for(filled, 10, what="fill update")[0]
        assert fill.broker_order_id == str(order.id)
        assert (fill.symbol, fill.side, fill.status, fill.filled_qty) == ("AAPL", "buy", "filled", 3.0)
        assert fill.price and fill.price > 0 and fill.position_qty == 3.0

        venue.set_faults(drop_streams="trading")
        wait_for(lambda: box.resyncs == 2, 10, what="resync after drop")
        assert stream.stats()["malformed_frames"] == 0
    finally:
        assert stream.stop(5)
