"""Decode throughput of the market-data codec, beside a json.loads peer.

The peer does the same job the obvious way (``json.loads`` / ``msgpack.unpackb``
into dicts, then dict access, the same validation and the same timestamp
parse into the same `Quote`), so the ratio isolates what the typed msgspec
decoding buys.
"""

from __future__ import annotations

import json
import math
import random
import time

import msgpack

from stockade.codecs.alpaca_wire import MarketDecoder, rfc3339_to_ns
from stockade.codecs.messages import Quote

_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "SPY")


def _quote_dicts(n: int, rng: random.Random, msgpack_ts: bool) -> list[dict]:
    out = []
    base = 1_709_307_000
    for i in range(n):
        bid = round(100 + rng.random() * 100, 2)
        secs, nanos = base + i // 1000, (i % 1000) * 997_001 + 123
        t = (
            msgpack.Timestamp(secs, nanos)
            if msgpack_ts
            else f"2024-03-01T15:{30 + (i // 1000) // 60 % 30:02d}:{(i // 1000) % 60:02d}.{nanos:09d}Z"
        )
        out.append(
            {
                "T": "q",
                "S": _SYMBOLS[i % len(_SYMBOLS)],
                "bx": "V",
                "bp": bid,
                "bs": rng.randint(1, 9),
                "ax": "V",
                "ap": round(bid + 0.01 * rng.randint(1, 5), 2),
                "as": rng.randint(1, 9),
                "t": t,
                "c": ["R"],
                "z": "C",
            }
        )
    return out


def _frames(items: list[dict], per_frame: int) -> list[list[dict]]:
    return [items[i : i + per_frame] for i in range(0, len(items), per_frame)]


def _peer_quote(d: dict, recv_ns: int, ts_ns: int) -> Quote | None:
    bp, ap, bs, az = float(d["bp"]), float(d["ap"]), float(d["bs"]), float(d["as"])
    if not (math.isfinite(bp) and math.isfinite(ap) and math.isfinite(bs) and math.isfinite(az)):
        return None
    if bp <= 0 or ap <= 0 or bs <= 0 or az <= 0 or bp > ap:
        return None
    return Quote(d["S"], bp, ap, bs, az, ts_ns, recv_ns)


def _run(frames: list, decode_one) -> tuple[float, int]:
    t0 = time.perf_counter()
    count = 0
    for f in frames:
        count += decode_one(f)
    return time.perf_counter() - t0, count


def bench_decode(n: int = 200_000, per_frame: int = 10, seed: int = 1) -> dict:
    """Decode `n` quotes in frames of `per_frame`; returns rates and µs per frame.

    Keys: ``json``/``msgpack`` (stockade's codec) and ``json_peer``/
    ``msgpack_peer`` (dict-based decoding), each with ``quotes_per_s``,
    ``us_per_frame`` and ``us_per_quote``; ``speedup_*`` are codec/peer ratios.
    """
    rng = random.Random(seed)
    json_frames = [json.dumps(f) for f in _frames(_quote_dicts(n, rng, False), per_frame)]
    rng = random.Random(seed)
    mp_frames = [msgpack.packb(f) for f in _frames(_quote_dicts(n, rng, True), per_frame)]

    jdec, mdec = MarketDecoder("json"), MarketDecoder("msgpack")

    def codec_json(frame) -> int:
        return len(jdec.decode(frame).quotes)

    def codec_msgpack(frame) -> int:
        return len(mdec.decode(frame).quotes)

    def peer_json(frame) -> int:
        recv_ns = time.time_ns()
        k = 0
        for d in json.loads(frame):
            if d.get("T") == "q" and _peer_quote(d, recv_ns, rfc3339_to_ns(d["t"])) is not None:
                k += 1
        return k

    def peer_msgpack(frame) -> int:
        recv_ns = time.time_ns()
        k = 0
        for d in msgpack.unpackb(frame, timestamp=0):
            if d.get("T") == "q":
                t = d["t"]
                if _peer_quote(d, recv_ns, t.seconds * 1_000_000_000 + t.nanoseconds) is not None:
                    k += 1
        return k

    results: dict = {"n_quotes": n, "quotes_per_frame": per_frame}
    for name, frames, fn in (
        ("json", json_frames, codec_json),
        ("json_peer", json_frames, peer_json),
        ("msgpack", mp_frames, codec_msgpack),
        ("msgpack_peer", mp_frames, peer_msgpack),
    ):
        _run(frames[: max(1, len(frames) // 20)], fn)  # warm caches and allocators
        # best of three: the least disturbed run
        elapsed, count = min((_run(frames, fn) for _ in range(3)), key=lambda run: run[0])
        if count != n:
            raise AssertionError(f"{name} decoded {count} of {n} quotes")
        results[name] = {
            "quotes_per_s": round(count / elapsed),
            "us_per_frame": round(elapsed / len(frames) * 1e6, 3),
            "us_per_quote": round(elapsed / count * 1e6, 3),
        }
    results["speedup_json"] = round(results["json_peer"]["us_per_quote"] / results["json"]["us_per_quote"], 2)
    results["speedup_msgpack"] = round(results["msgpack_peer"]["us_per_quote"] / results["msgpack"]["us_per_quote"], 2)
    return results


def bench_order_roundtrip(n: int = 200) -> dict:
    """Order submit round-trip time against the venue, through stockade's own path.

    A real alpaca-py `TradingClient` from `broker.rest.make_trading_client`
    (timeouts, the shared REST budget wrapper) against a venue started on a
    free port; each sample is one `submit_order` of a far-from-market limit
    order (it rests, nothing fills; cancelled after, untimed) built by
    `broker.orders.build_request`, from call to parsed reply. Beside it, `get_account` through the same
    client: the cost of the order path over a plain authenticated read.
    """
    from stockade.broker.orders import build_request, client_order_id
    from stockade.broker.rest import make_trading_client
    from stockade.broker.token_bucket import TokenBucket, limit_client
    from stockade.codecs.messages import OrderIntent
    from stockade.trading.stats import percentiles
    from stockade.venue.config import VenueConfig
    from stockade.venue.server import start_venue

    key, secret = "bench-key", "bench-secret"
    handle = start_venue(VenueConfig(api_key=key, api_secret=secret, rate_limit_per_min=10**9))
    try:
        client = make_trading_client(key, secret, handle.base_url, timeout_s=10)
        limit_client(client, TokenBucket(10**9), max_wait_s=0.0)  # the wrapper's cost, never its waits
        requests = [
            build_request(
                OrderIntent(
                    intent_id=f"bench-{i}",
                    symbol="AAPL",
                    side="buy",
                    qty=1,
                    order_type="limit",
                    limit_price=1.0,
                    take_profit=None,
                    stop_loss=None,
                    reason="bench",
                    proposal_id="",
                    quote_recv_ns=0,
                ),
                client_order_id(f"bench-{i}"),
            )
            for i in range(n + max(1, n // 10))
        ]
        warm, timed = requests[n:], requests[:n]
        for request in warm:
            client.cancel_order_by_id(client.submit_order(request).id)
        submit: list[float] = []
        for request in timed:
            t0 = time.perf_counter_ns()
            order = client.submit_order(request)
            submit.append((time.perf_counter_ns() - t0) / 1000.0)
            client.cancel_order_by_id(order.id)  # untimed: keeps the book as small as a live one
        read: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            client.get_account()
            read.append((time.perf_counter_ns() - t0) / 1000.0)
    finally:
        handle.stop()
    return {
        "n": n,
        "submit_us": percentiles(submit),
        "get_account_us": percentiles(read),
        "what": "alpaca-py submit_order (limit, resting) against the loopback venue, call to parsed reply",
    }


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(bench_decode(), indent=2))
