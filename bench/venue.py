"""Throughput and latency of the paper venue, measured from the client's side.

Both benches start their own venue (`start_venue`) on a free port, so they can
run beside a live daemon. The client runs in the calling thread of the same
process: figures include its cost and the GIL it shares with the venue, which
is how the daemon uses an embedded venue too.
"""

from __future__ import annotations

import asyncio
import http.client
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import websockets

from stockade.codecs.alpaca_wire import rfc3339_to_ns
from stockade.trading.stats import percentiles
from stockade.venue.config import DEFAULT_SYMBOLS, VenueConfig
from stockade.venue.server import start_venue

_KEY, _SECRET = "bench-key", "bench-secret"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Far above what the simulator can produce: the bench measures the ceiling.
_FLOOD_QUOTES_PER_S = 1_000_000


def _bench_symbols(n: int) -> tuple[str, ...]:
    extra = tuple(f"SYM{i:03d}" for i in range(max(0, n - len(DEFAULT_SYMBOLS))))
    return (DEFAULT_SYMBOLS + extra)[:n]


def bench_quote_publish(seconds: float, symbols: int, encoding: str = "json") -> dict[str, Any]:
    """Quotes per second the venue encodes and publishes to one websocket client.

    The simulator is asked for far more quotes than it can make, the client
    subscribes to every symbol's quotes and counts what arrives for `seconds`
    (after a short warm-up). Latency is quote timestamp to client receipt.
    `encoding` is "json" (our QuoteStreamer) or "msgpack" (alpaca-py).
    """
    if encoding not in ("json", "msgpack"):
        raise ValueError("encoding must be json or msgpack")
    names = _bench_symbols(max(1, symbols))
    config = VenueConfig(
        api_key=_KEY,
        api_secret=_SECRET,
        symbols=names,
        quote_rate_hz=_FLOOD_QUOTES_PER_S / len(names),
        rate_limit_per_min=10**9,
    )
    handle = start_venue(config)
    try:
        result = asyncio.run(_receive_quotes(handle.data_stream_url("iex"), seconds, encoding))
    finally:
        handle.stop()
    result.update({"symbols": len(names), "encoding": encoding})
    return result


async def _receive_quotes(url: str, seconds: float, encoding: str) -> dict[str, Any]:
    headers = {"Content-Type": "application/msgpack"} if encoding == "msgpack" else {}
    decode = msgspec.msgpack.decode if encoding == "msgpack" else msgspec.json.decode
    async with websockets.connect(url, additional_headers=headers, open_timeout=10, max_size=None) as ws:
        await asyncio.wait_for(ws.recv(), 10)  # connected
        auth = {"action": "auth", "key": _KEY, "secret": _SECRET}
        sub = {"action": "subscribe", "quotes": ["*"]}
        encode = msgspec.msgpack.encode if encoding == "msgpack" else (lambda m: msgspec.json.encode(m).decode())
        await ws.send(encode(auth))
        await asyncio.wait_for(ws.recv(), 10)  # authenticated
        await ws.send(encode(sub))
        await asyncio.wait_for(ws.recv(), 10)  # subscription
        warm_until = time.monotonic() + min(1.0, seconds / 4)
        while time.monotonic() < warm_until:
            await asyncio.wait_for(ws.recv(), 10)
        quotes = frames = size = 0
        latencies: list[float] = []
        start = time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            frame = await asyncio.wait_for(ws.recv(decode=False), 10)  # bytes, whichever the encoding
            recv_ns = time.time_ns()
            frames += 1
            size += len(frame)
            batch = decode(frame)
            quotes += sum(1 for m in batch if m.get("T") == "q")
            if frames % 8 == 1 and batch:  # sample: parsing every timestamp would bench the client
                sent_ns = _ts_ns(batch[-1]["t"])
                latencies.append((recv_ns - sent_ns) / 1000.0)
        elapsed = time.monotonic() - start
    return {
        "seconds": round(elapsed, 3),
        "quotes_per_s": round(quotes / elapsed, 1),
        "frames_per_s": round(frames / elapsed, 1),
        "bytes_per_s": round(size / elapsed, 1),
        "quotes_per_frame": round(quotes / frames, 1) if frames else 0.0,
        "latency_us": percentiles(latencies),
    }


def _ts_ns(t: Any) -> int:
    """Epoch ns of a stream timestamp: RFC 3339 text, or the datetime msgspec decodes a msgpack Timestamp to (µs)."""
    if isinstance(t, str):
        return rfc3339_to_ns(t)
    if isinstance(t, datetime):
        delta = t - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    raise TypeError(f"unknown timestamp {t!r}")


def bench_rest_roundtrips(n: int) -> dict[str, Any]:
    """Raw keep-alive HTTP GET /v2/account: round trips per second and latency in µs.

    One persistent connection (stdlib http.client, no alpaca-py), sequential
    requests, after 5% warm-up; the venue's rate limit is lifted for the run.
    """
    config = VenueConfig(api_key=_KEY, api_secret=_SECRET, rate_limit_per_min=10**9)
    handle = start_venue(config)
    try:
        conn = http.client.HTTPConnection(handle.host, handle.port, timeout=10)
        headers = {"APCA-API-KEY-ID": _KEY, "APCA-API-SECRET-KEY": _SECRET, "Connection": "keep-alive"}
        errors = 0

        def get() -> int:
            conn.request("GET", "/v2/account", headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status

        for _ in range(max(1, n // 20)):
            get()
        latencies: list[float] = []
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            if get() != 200:
                errors += 1
            latencies.append((time.perf_counter_ns() - t0) / 1000.0)
        elapsed = time.perf_counter() - start
        conn.close()
    finally:
        handle.stop()
    return {
        "n": n,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_us": percentiles(latencies),
        "errors": errors,
    }
