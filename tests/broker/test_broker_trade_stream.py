"""TradeUpdatesStream against a scripted Alpaca trading-stream peer."""

from __future__ import annotations

import copy
import json
import random
import threading
import time

import pytest
from broker_peer import KEY, SECRET, ScriptedPeer, hold, recv_msg
from waiting import wait_for

from stockade.broker.backoff import Backoff
from stockade.broker.trade_stream import TradeUpdatesStream

# Shape of Alpaca's documented trade_updates fill message.
FILL = {
    "stream": "trade_updates",
    "data": {
        "event": "fill",
        "execution_id": "2f63ea93-423d-4169-b3f6-3fdafc10c418",
        "order": {
            "asset_class": "us_equity",
            "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
            "cancel_requested_at": None,
            "canceled_at": None,
            "client_order_id": "stk-0001",
            "created_at": "2024-03-01T10:45:04.981350886-05:00",
            "expired_at": None,
            "extended_hours": False,
            "failed_at": None,
            "filled_at": "2024-03-01T15:45:05.024916716Z",
            "filled_avg_price": "180.12",
            "filled_qty": "10",
            "hwm": None,
            "id": "a5be8f5e-fdfa-41f5-a644-7a74fe947a8f",
            "legs": None,
            "limit_price": None,
            "notional": None,
            "order_class": "bracket",
            "order_type": "market",
            "qty": "10",
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "side": "buy",
            "status": "filled",
            "stop_price": None,
            "submitted_at": "2024-03-01T10:45:04.980944666-05:00",
            "symbol": "AAPL",
            "time_in_force": "day",
            "trail_percent": None,
            "trail_price": None,
            "type": "market",
            "updated_at": "2024-03-01T10:45:05.027690731-05:00",
        },
        "position_qty": "10",
        "price": "180.12",
        "qty": "10",
        "timestamp": "2024-03-01T15:45:05.024916716Z",
    },
}


def new_event(coid: str) -> dict:
    msg = copy.deepcopy(FILL)
    data = msg["data"]
    for k in ("execution_id", "position_qty", "price", "qty"):
        data.pop(k)
    data["event"] = "new"
    data["order"].update(client_order_id=coid, status="new", filled_qty="0", filled_avg_price=None, filled_at=None)
    return msg


class Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.updates = []
        self.events = []
        self.resyncs = 0
        self.threads = set()

    def on_update(self, u) -> None:
        with self.lock:
            self.updates.append(u)
            self.threads.add(threading.current_thread().name)

    def on_event(self, e) -> None:
        with self.lock:
            self.events.append(e)

    def on_reconnect(self) -> None:
        with self.lock:
            self.resyncs += 1

    def find(self, kind: str):
        with self.lock:
            return [e for e in self.events if e.kind == kind]


async def trading_handshake(peer, ws, i, *, authorized: bool = True) -> None:
    auth = await recv_msg(peer, ws, i)
    assert auth == {"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}}, auth
    status = "authorized" if authorized else "unauthorized"
    # Alpaca's paper trading stream answers in binary frames holding JSON.
    await ws.send(
        json.dumps({"stream": "authorization", "data": {"status": status, "action": "authenticate"}}).encode()
    )
    if not authorized:
        return
    listen = await recv_msg(peer, ws, i)
    assert listen == {"action": "listen", "data": {"streams": ["trade_updates"]}}, listen
    await ws.send(json.dumps({"stream": "listening", "data": {"streams": ["trade_updates"]}}).encode())


def make_stream(peer, sink, **kw) -> TradeUpdatesStream:
    opts = dict(
        on_reconnect=sink.on_reconnect,
        connect_timeout_s=2.0,
        close_timeout_s=0.3,
        ping_interval_s=5.0,
        ping_timeout_s=5.0,
        backoff=Backoff(0.01, 0.05, stable_after_s=60, rng=random.Random(3)),
        auth_failure_delay_s=0.5,
    )
    opts.update(kw)
    return TradeUpdatesStream(peer.url("/stream"), KEY, SECRET, sink.on_update, sink.on_event, **opts)


def test_updates_delivered_and_resync_called_once():
    sink = Sink()

    async def script(peer, ws, i):
        await trading_handshake(peer, ws, i)
        await ws.send(json.dumps(new_event("stk-0001")).encode())  # binary
        await ws.send(json.dumps(FILL))  # text frames are accepted too
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink)
        stream.start()
        try:
            wait_for(lambda: len(sink.updates) == 2, 5)
            new, fill = sink.updates
            assert (new.event, new.status, new.filled_qty, new.price, new.fill_qty) == ("new", "new", 0.0, None, None)
            assert fill.event == "fill" and fill.client_order_id == "stk-0001"
            assert fill.broker_order_id == "a5be8f5e-fdfa-41f5-a644-7a74fe947a8f"
            assert (fill.symbol, fill.side, fill.status, fill.order_class) == ("AAPL", "buy", "filled", "bracket")
            assert (fill.qty, fill.filled_qty, fill.filled_avg_price) == (10.0, 10.0, 180.12)
            assert (fill.position_qty, fill.price, fill.fill_qty) == (10.0, 180.12, 10.0)
            assert fill.ts_ns == 1709307905024916716
            assert sink.resyncs == 1
            assert sink.threads == {"stockade-trade-updates"}
            kinds = [e.kind for e in sink.events]
            assert kinds.index("connected") < kinds.index("authenticated") < kinds.index("listening")
        finally:
            assert stream.stop(3)


def test_unauthorized_backs_off_long_and_reports_fatal():
    sink = Sink()

    async def script(peer, ws, i):
        await trading_handshake(peer, ws, i, authorized=False)
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink, auth_failure_delay_s=0.6)
        stream.start()
        try:
            wait_for(lambda: peer.connections >= 2, 5)
            assert peer.connect_times[1] - peer.connect_times[0] >= 0.6
            assert sink.find("auth_failed")[0].fatal
            assert sink.resyncs == 0
        finally:
            assert stream.stop(3)


def test_drop_reconnects_and_calls_resync_again():
    sink = Sink()

    async def script(peer, ws, i):
        await trading_handshake(peer, ws, i)
        await ws.send(json.dumps(new_event(f"stk-{i}")).encode())
        if i == 0:
            await ws.close()
            return
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink)
        stream.start()
        try:
            wait_for(lambda: len(sink.updates) == 2, 5)
            assert [u.client_order_id for u in sink.updates] == ["stk-0", "stk-1"]
            assert sink.resyncs == 2
            assert stream.stats()["reconnects"] == 1
        finally:
            assert stream.stop(3)


def test_dead_peer_found_by_keepalive():
    sink = Sink()

    async def script(peer, ws, i):
        await trading_handshake(peer, ws, i)
        if i == 0:
            # Stop reading: our pings go unanswered, like a half-open TCP link.
            ws.transport.pause_reading()
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink, ping_interval_s=0.1, ping_timeout_s=0.2)
        stream.start()
        try:
            wait_for(lambda: sink.resyncs >= 2, 5, what="reconnect after missed pongs")
            assert peer.connections == 2
            assert sink.find("disconnected")
        finally:
            assert stream.stop(3)


def test_malformed_frames_counted_and_trigger_resync():
    sink = Sink()

    async def script(peer, ws, i):
        await trading_handshake(peer, ws, i)
        await ws.send(b"\x00not json")
        bad = copy.deepcopy(FILL)
        bad["data"]["order"]["side"] = None
        await ws.send(json.dumps(bad))
        await ws.send(json.dumps({"stream": "trade_updates", "data": {"event": "fill"}}))
        await ws.send(json.dumps({"stream": "something_new", "data": {}}))
        await ws.send(json.dumps(FILL))
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink)
        stream.start()
        try:
            wait_for(lambda: sink.updates, 5)
            st = stream.stats()
            assert st["malformed_frames"] == 3
            assert sink.resyncs == 1 + 3
            assert st["reconnects"] == 0
        finally:
            assert stream.stop(3)


def test_stop_is_prompt_during_auth_backoff():
    sink = Sink()

    async def script(peer, ws, i):
        await trading_handshake(peer, ws, i, authorized=False)
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink, auth_failure_delay_s=60)
        stream.start()
        wait_for(lambda: sink.find("disconnected"), 5)
        t0 = time.monotonic()
        assert stream.stop(3)
        assert time.monotonic() - t0 < 1.0


def test_keepalive_is_mandatory():
    with pytest.raises(ValueError):
        TradeUpdatesStream("ws://127.0.0.1:1/stream", KEY, SECRET, lambda u: None, ping_interval_s=0)
