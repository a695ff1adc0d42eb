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
        t = msgpack.Timestamp(secs, nanos) if msgpack_ts else f"2024-03-01T15:{30 + (i // 1000) // 60 % 30:02d}:{(i // 1000) % 60:02d}.{nanos:09d}Z"
        out.append(
            {"T": "q", "S": _SYMBOLS[i % len(_SYMBOLS)], "bx": "V", "bp": bid, "bs": rng.randint(1, 9),
             "ax": "V", "ap": round(bid + 0.01 * rng.randint(1, 5), 2), "as": rng.randint(1, 9),
             "t": t, "c": ["R"], "z": "C"}
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
        best = None
        for _ in range(3):  # best of three: the least disturbed run
            elapsed, count = _run(frames, fn)
            if best is None or elapsed < best[0]:
                best = (elapsed, count)
        elapsed, count = best
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


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(bench_decode(), indent=2))
