"""A scripted websocket peer for the broker client tests.

It runs `websockets.asyncio.server.serve` on 127.0.0.1, port 0, in a thread of
its own, and hands each connection to a test-supplied coroutine that speaks
Alpaca's protocol and injects faults. Everything the clients send is recorded.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable

import msgpack
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

Handler = Callable[["ScriptedPeer", ServerConnection, int], Awaitable[None]]

KEY = "PKTESTKEY0001"
SECRET = "s3cr3t-value-never-logged"


class ScriptedPeer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.lock = threading.Lock()
        self.connections = 0
        self.received: list[tuple[int, object]] = []  # (connection index, decoded message)
        self.connect_times: list[float] = []
        self.events: dict[str, threading.Event] = {}
        self.release = None  # asyncio.Event in the server loop: lets scripts hold until the test says so
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread = threading.Thread(target=self._run, name="scripted-peer", daemon=True)
        self.port = 0

    # ---- lifecycle --------------------------------------------------------------

    def __enter__(self) -> ScriptedPeer:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("scripted peer did not start")
        return self

    def __exit__(self, *exc) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(5)

    def _shutdown(self) -> None:
        if self.release is not None:
            self.release.set()
        if self._server is not None:
            self._server.close()
        self._stop.set()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import time

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.release = asyncio.Event()

        async def on_conn(ws: ServerConnection) -> None:
            with self.lock:
                index = self.connections
                self.connections += 1
                self.connect_times.append(time.monotonic())
            try:
                await self.handler(self, ws, index)
            except ConnectionClosed:
                pass

        async with serve(on_conn, "127.0.0.1", 0, close_timeout=1, ping_interval=None) as server:
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    # ---- helpers for tests --------------------------------------------------------

    def url(self, path: str = "/v2/iex") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def event(self, name: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(name, threading.Event())

    def messages(self, index: int | None = None) -> list:
        with self.lock:
            return [m for i, m in self.received if index is None or i == index]

    def record(self, index: int, msg: object) -> None:
        with self.lock:
            self.received.append((index, msg))

    def let_go(self) -> None:
        """Release scripts waiting on `peer.release`."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.release.set)


# ---- Alpaca protocol pieces ----------------------------------------------------------


def pack(objs, encoding: str = "json"):
    return msgpack.packb(objs) if encoding == "msgpack" else json.dumps(objs)


def unpack(frame):
    if isinstance(frame, bytes):
        try:
            return msgpack.unpackb(frame)
        except Exception:
            return json.loads(frame)
    return json.loads(frame)


async def recv_msg(peer: ScriptedPeer, ws: ServerConnection, index: int):
    msg = unpack(await ws.recv())
    peer.record(index, msg)
    return msg


async def market_handshake(peer: ScriptedPeer, ws: ServerConnection, index: int, encoding: str = "json") -> dict:
    """Greeting, auth (checking the keys), subscribe -> ack. Returns the subscribe request."""
    await ws.send(pack([{"T": "success", "msg": "connected"}], encoding))
    auth = await recv_msg(peer, ws, index)
    assert auth == {"action": "auth", "key": KEY, "secret": SECRET}, auth
    await ws.send(pack([{"T": "success", "msg": "authenticated"}], encoding))
    sub = await recv_msg(peer, ws, index)
    assert sub["action"] == "subscribe", sub
    await ws.send(
        pack(
            [
                {
                    "T": "subscription",
                    "trades": sub.get("trades", []),
                    "quotes": sub.get("quotes", []),
                    "bars": sub.get("bars", []),
                    "updatedBars": [],
                    "dailyBars": [],
                    "statuses": [],
                    "lulds": [],
                    "corrections": sub.get("trades", []),
                    "cancelErrors": sub.get("trades", []),
                }
            ],
            encoding,
        )
    )
    return sub


def quote(symbol: str, bid: float, ask: float, t: str = "2024-03-01T15:30:00.123456789Z", **extra) -> dict:
    q = {
        "T": "q",
        "S": symbol,
        "bx": "V",
        "bp": bid,
        "bs": 2,
        "ax": "V",
        "ap": ask,
        "as": 3,
        "t": t,
        "c": ["R"],
        "z": "C",
    }
    q.update(extra)
    return q


async def hold(peer: ScriptedPeer) -> None:
    """Keep a connection open until the test ends (or releases it)."""
    await peer.release.wait()
