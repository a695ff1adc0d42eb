"""MarketDataStream against a scripted Alpaca-speaking peer."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time

import msgpack
import pytest
from broker_peer import KEY, SECRET, ScriptedPeer, hold, market_handshake, pack, quote, recv_msg
from waiting import wait_for

from stockade.broker.backoff import Backoff
from stockade.broker.market_stream import MarketDataStream


class Sink:
    """Collects callbacks from the stream thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.quotes = []
        self.trades = []
        self.events = []
        self.threads = set()

    def on_quote(self, q) -> None:
        with self.lock:
            self.quotes.append(q)
            self.threads.add(threading.current_thread().name)

    def on_trade(self, t) -> None:
        with self.lock:
            self.trades.append(t)

    def on_event(self, e) -> None:
        with self.lock:
            self.events.append(e)

    def kinds(self) -> list[str]:
        with self.lock:
            return [e.kind for e in self.events]

    def find(self, kind: str, code: int | None = None):
        with self.lock:
            return [e for e in self.events if e.kind == kind and (code is None or e.code == code)]


def make_stream(peer: ScriptedPeer, sink: Sink, symbols=("AAPL", "MSFT"), **kw) -> MarketDataStream:
    opts = dict(
        silence_timeout_s=None,
        connect_timeout_s=2.0,
        close_timeout_s=0.5,
        backoff=Backoff(0.01, 0.05, stable_after_s=60, rng=random.Random(7)),
        auth_failure_delay_s=0.5,
        limit_delay_s=0.3,
    )
    opts.update(kw)
    return MarketDataStream(peer.url(), KEY, SECRET, symbols, sink.on_quote, sink.on_event, **opts)


@pytest.fixture
def sink():
    return Sink()


def test_auth_subscribe_and_quotes(sink, caplog):
    caplog.set_level(logging.DEBUG)

    async def script(peer, ws, i):
        sub = await market_handshake(peer, ws, i)
        assert sub == {"action": "subscribe", "quotes": ["AAPL", "MSFT"]}
        await ws.send(pack([quote("AAPL", 180.10, 180.12), quote("MSFT", 410.0, 410.05)]))
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink)
        stream.start()
        try:
            wait_for(lambda: len(sink.quotes) == 2, 5, what="two quotes")
            assert sink.quotes[0].symbol == "AAPL" and sink.quotes[0].bid == 180.10
            assert sink.quotes[0].ts_ns == 1709307000123456789
            assert sink.quotes[0].recv_ns == sink.quotes[1].recv_ns  # one clock read per frame
            assert sink.threads == {"stockade-market-data"}
            wait_for(lambda: "subscribed" in sink.kinds(), 5)
            kinds = sink.kinds()
            assert kinds.index("connected") < kinds.index("authenticated") < kinds.index("subscribed")
            assert stream.subscription.quotes == ("AAPL", "MSFT")
            st = stream.stats()
            assert st["quotes"] == 2 and st["connects"] == 1 and st["reconnects"] == 0
            assert st["last_message_ns"] > 0
        finally:
            assert stream.stop(3)
    assert sink.kinds()[-1] == "stopped"
    assert SECRET not in caplog.text


def test_auth_failure_402_does_not_retry_fast(sink):
    async def script(peer, ws, i):
        await ws.send(pack([{"T": "success", "msg": "connected"}]))
        await recv_msg(peer, ws, i)
        await ws.send(pack([{"T": "error", "code": 402, "msg": "auth failed"}]))
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink, auth_failure_delay_s=0.6)
        stream.start()
        try:
            wait_for(lambda: peer.connections >= 2, 5, what="second attempt")
            gap = peer.connect_times[1] - peer.connect_times[0]
            assert gap >= 0.6, f"retried after {gap:.3f}s despite 402"
            failed = sink.find("auth_failed", 402)
            assert failed and failed[0].fatal
            disc = sink.find("disconnected", 402)
            assert disc and disc[0].fatal
            assert failed[0].to_status().connected is False
            assert not sink.find("subscribed")
        finally:
            assert stream.stop(3)


def test_connection_limit_406_then_success_after_backoff(sink):
    async def script(peer, ws, i):
        if i == 0:
            await ws.send(pack([{"T": "error", "code": 406, "msg": "connection limit exceeded"}]))
            await ws.close()
            return
        await market_handshake(peer, ws, i)
        await ws.send(pack([quote("AAPL", 1.0, 1.01)]))
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink, limit_delay_s=0.3)
        stream.start()
        try:
            wait_for(lambda: sink.quotes, 5, what="quote after 406")
            assert peer.connections == 2
            assert peer.connect_times[1] - peer.connect_times[0] >= 0.3
            disc = sink.find("disconnected", 406)
            assert disc and not disc[0].fatal
            assert stream.stats()["last_error_code"] == 406
        finally:
            assert stream.stop(3)


def test_server_drop_reconnects_and_resubscribes(sink):
    async def script(peer, ws, i):
        await market_handshake(peer, ws, i)
        await ws.send(pack([quote("AAPL", 10.0 + i, 10.5 + i)]))
        if i == 0:
            await ws.close(1011, "going away")
            return
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink)
        stream.start()
        try:
            wait_for(lambda: len(sink.quotes) >= 2, 5, what="quote from second connection")
            assert [q.bid for q in sink.quotes[:2]] == [10.0, 11.0]
            subs = [m for m in peer.messages(1) if m.get("action") == "subscribe"]
            assert subs == [{"action": "subscribe", "quotes": ["AAPL", "MSFT"]}]
            assert stream.stats()["reconnects"] == 1
            assert "1011" in sink.find("disconnected")[0].detail
        finally:
            assert stream.stop(3)


def test_silent_socket_detected_and_reconnected(sink):
    async def script(peer, ws, i):
        await market_handshake(peer, ws, i)
        await ws.send(pack([quote("AAPL", 1.0, 1.01)]))
        await hold(peer)  # then nothing at all: connected but mute

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink, silence_timeout_s=0.3)
        stream.start()
        try:
            wait_for(lambda: peer.connections >= 2, 5, what="reconnect after silence")
            disc = sink.find("disconnected")
            assert disc and "silent" in disc[0].detail
            wait_for(lambda: len(sink.quotes) >= 2, 5)
        finally:
            assert stream.stop(3)


def test_silence_detection_can_be_disabled_then_enabled(sink):
    async def script(peer, ws, i):
        await market_handshake(peer, ws, i)
        peer.event("subscribed").set()
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink, silence_timeout_s=None)
        stream.start()
        try:
            assert peer.event("subscribed").wait(5)
            # Disabled: the loop wakes once a second; nothing must happen.
            # Enabling it starts a fresh quiet period that then expires.
            stream.set_silence_timeout(0.2)
            wait_for(lambda: peer.connections >= 2, 5, what="reconnect once enabled")
            assert "silent" in sink.find("disconnected")[0].detail
        finally:
            assert stream.stop(3)


def test_garbage_frames_counted_and_ignored(sink):
    async def script(peer, ws, i):
        await market_handshake(peer, ws, i)
        await ws.send("this is not json")
        await ws.send(b"\xc1\xff\x00garbage")
        await ws.send('{"T":"q"}')  # an object, not an array
        await ws.send(pack([{"T": "q", "S": "AAPL"}]))  # quote without prices
        await ws.send(pack([{"T": "q", "S": "AAPL"}, quote("MSFT", 5.0, 5.1), {"T": "s", "S": "MSFT", "sc": "H"}]))
        await ws.send(pack([quote("AAPL", 2.0, 1.0), quote("AAPL", 0.0, 1.0), quote("AAPL", 1.0, 1.01)]))
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink)
        stream.start()
        try:
            wait_for(lambda: len(sink.quotes) >= 2, 5, what="good quotes after garbage")
            st = stream.stats()
            assert [q.symbol for q in sink.quotes] == ["MSFT", "AAPL"]
            assert st["malformed_frames"] == 4
            assert st["malformed_items"] == 2  # the two price-less quotes
            assert st["ignored_items"] == 1  # the status message
            assert st["dropped"] == {"crossed": 1, "non_finite": 0, "non_positive": 1}
            assert st["reconnects"] == 0  # garbage never costs the connection
        finally:
            assert stream.stop(3)


def test_callback_exception_does_not_kill_stream(sink):
    calls = []

    def bad(q):
        calls.append(q)
        raise RuntimeError("boom")

    async def script(peer, ws, i):
        await market_handshake(peer, ws, i)
        await ws.send(pack([quote("AAPL", 1.0, 1.01), quote("AAPL", 1.0, 1.02)]))
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = MarketDataStream(peer.url(), KEY, SECRET, ["AAPL"], bad, sink.on_event, silence_timeout_s=None)
        stream.start()
        try:
            wait_for(lambda: len(calls) == 2, 5)
            assert stream.stats()["callback_errors"] == 2
            assert stream.running
        finally:
            assert stream.stop(3)


def test_msgpack_encoding_end_to_end(sink):
    async def script(peer, ws, i):
        assert ws.request.headers.get("Content-Type") == "application/msgpack"
        await market_handshake(peer, ws, i, encoding="msgpack")
        t = msgpack.Timestamp(1709307000, 987654321)
        await ws.send(msgpack.packb([{"T": "q", "S": "AAPL", "bp": 9.5, "bs": 1, "ap": 9.6, "as": 1, "t": t}]))
        await ws.send(msgpack.packb([{"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 9.55, "s": 10, "t": t}]))
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink, symbols=["AAPL"], encoding="msgpack", on_trade=sink.on_trade)
        stream.start()
        try:
            wait_for(lambda: sink.quotes and sink.trades, 5)
            assert sink.quotes[0].ts_ns == 1709307000987654321
            assert sink.trades[0].price == 9.55 and sink.trades[0].size == 10
            sub = [m for m in peer.messages(0) if m.get("action") == "subscribe"][0]
            assert sub == {"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL"]}
        finally:
            assert stream.stop(3)


def test_set_symbols_resubscribes_live(sink):
    async def script(peer, ws, i):
        await market_handshake(peer, ws, i)
        peer.event("subscribed").set()
        while True:
            msg = await recv_msg(peer, ws, i)
            if msg.get("action") == "subscribe":
                await ws.send(pack([{"T": "subscription", "quotes": ["MSFT", "TSLA"]}]))

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink)
        stream.start()
        try:
            assert peer.event("subscribed").wait(5)
            wait_for(lambda: "subscribed" in sink.kinds(), 5)
            stream.set_symbols(["msft", "tsla"])
            wait_for(lambda: len(peer.messages(0)) >= 4, 5, what="unsubscribe + subscribe")
            assert peer.messages(0)[2:4] == [
                {"action": "unsubscribe", "quotes": ["AAPL"]},
                {"action": "subscribe", "quotes": ["TSLA"]},
            ]
            wait_for(lambda: stream.subscription.quotes == ("MSFT", "TSLA"), 5)
        finally:
            assert stream.stop(3)


@pytest.mark.parametrize("code,fatal", [(405, True), (409, True), (500, False), (401, False)])
def test_error_codes_end_session_with_the_right_severity(sink, code, fatal):
    async def script(peer, ws, i):
        await ws.send(pack([{"T": "success", "msg": "connected"}]))
        await recv_msg(peer, ws, i)
        await ws.send(pack([{"T": "success", "msg": "authenticated"}]))
        await recv_msg(peer, ws, i)
        await ws.send(pack([{"T": "error", "code": code, "msg": "x"}]))
        await hold(peer)

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink, auth_failure_delay_s=30)
        stream.start()
        try:
            wait_for(lambda: sink.find("disconnected", code), 5)
            assert sink.find("disconnected", code)[0].fatal is fatal
        finally:
            t0 = time.monotonic()
            assert stream.stop(3)
            assert time.monotonic() - t0 < 2  # even in a 30 s fatal backoff


def test_stop_is_prompt_while_backing_off(sink):
    async def script(peer, ws, i):
        await ws.send(pack([{"T": "error", "code": 406, "msg": "connection limit exceeded"}]))
        await ws.close()

    with ScriptedPeer(script) as peer:
        stream = make_stream(peer, sink, limit_delay_s=60)
        stream.start()
        wait_for(lambda: sink.find("disconnected"), 5)
        t0 = time.monotonic()
        assert stream.stop(3)
        assert time.monotonic() - t0 < 1.0
        assert peer.connections == 1


def test_stop_is_prompt_while_connecting(sink):
    # A listening socket that never accepts: the TCP handshake completes in
    # the kernel, the websocket upgrade never does.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    try:
        port = lsock.getsockname()[1]
        stream = MarketDataStream(
            f"ws://127.0.0.1:{port}/v2/iex",
            KEY,
            SECRET,
            ["AAPL"],
            sink.on_quote,
            sink.on_event,
            connect_timeout_s=60,
            close_timeout_s=0.5,
        )
        stream.start()
        wait_for(lambda: sink.find("connecting"), 5)
        t0 = time.monotonic()
        assert stream.stop(3)
        assert time.monotonic() - t0 < 1.0
    finally:
        lsock.close()


def test_stop_before_start_and_unreachable_server(sink):
    assert MarketDataStream("ws://127.0.0.1:1/v2/iex", KEY, SECRET, ["A"], sink.on_quote).stop(1)
    stream = MarketDataStream(
        "ws://127.0.0.1:1/v2/iex",
        KEY,
        SECRET,
        ["A"],
        sink.on_quote,
        sink.on_event,
        backoff=Backoff(0.01, 0.02, rng=random.Random(1)),
    )
    stream.start()
    try:
        wait_for(lambda: stream.stats()["reconnects"] >= 3, 5, what="repeated connect failures")
        assert "connect failed" in sink.find("disconnected")[0].detail
    finally:
        assert stream.stop(3)
