"""Alpaca's stream wire formats, decoded straight into stockade's messages.

Two streams:

* market data v2 (``wss://stream.data.alpaca.markets/v2/{feed}``): every frame
  is a JSON array (text) or a msgpack array (binary) of objects tagged by
  ``"T"``: ``q`` quote, ``t`` trade, ``b``/``u``/``d`` bars, and the control
  objects ``success``, ``subscription``, ``error``.
* trading stream (``/stream``): one JSON object per frame
  ``{"stream": ..., "data": {...}}``; Alpaca sends it in *binary* frames that
  hold JSON, so both frame kinds are accepted.

Decoding goes through msgspec typed decoders (no intermediate dicts). Quotes,
trades and bars that are crossed, non-finite or non-positive are dropped and
counted per reason; a frame that cannot be decoded at all raises `WireError`.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable
from typing import Any, Literal, cast, get_args

import msgspec

from stockade.codecs.messages import Bar, OrderUpdate, Quote, Side, Trade

Encoding = Literal["json", "msgpack"]

__all__ = [
    "WireError",
    "Success",
    "Subscription",
    "ErrorFrame",
    "DecodedFrame",
    "MarketDecoder",
    "AuthReply",
    "ListeningReply",
    "OtherStreamMessage",
    "decode_trade_stream",
    "encode_auth",
    "encode_subscribe",
    "encode_unsubscribe",
    "encode_trade_auth",
    "encode_listen",
    "rfc3339_to_ns",
    "DROP_REASONS",
    "ERROR_CODES",
]

# Market-data stream error codes, as documented by Alpaca.
ERROR_CODES: dict[int, str] = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    500: "internal error",
}

DROP_REASONS = ("crossed", "non_finite", "non_positive")


class WireError(ValueError):
    """A frame (or a required part of it) could not be decoded."""


# ---- control objects (identical in JSON and msgpack) --------------------------


class Success(msgspec.Struct, tag_field="T", tag="success", frozen=True):
    """``connected`` greeting or ``authenticated`` reply."""

    msg: str = ""


class Subscription(msgspec.Struct, tag_field="T", tag="subscription", frozen=True, rename="camel"):
    """The server's view of everything this connection is subscribed to."""

    trades: tuple[str, ...] = ()
    quotes: tuple[str, ...] = ()
    bars: tuple[str, ...] = ()
    updated_bars: tuple[str, ...] = ()
    daily_bars: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()


class ErrorFrame(msgspec.Struct, tag_field="T", tag="error", frozen=True):
    """``{"T":"error","code":406,"msg":"connection limit exceeded"}``."""

    code: int = 0
    msg: str = ""


Control = Success | Subscription | ErrorFrame

# ---- market data objects ------------------------------------------------------
# Only the fields stockade uses are declared: msgspec skips the rest (exchange
# codes, conditions, tape) without building Python objects for them.

# msgpack sends times as the Timestamp extension (some servers as RFC 3339
# text); JSON only ever yields the str arm, so one set of Structs serves both
# decoders.
_WireTime = msgspec.msgpack.Ext | str


class _WQuote(msgspec.Struct, tag_field="T", tag="q"):
    S: str
    bp: float
    bs: float
    ap: float
    as_: float = msgspec.field(name="as")
    t: _WireTime = ""


class _WTrade(msgspec.Struct, tag_field="T", tag="t"):
    S: str
    p: float
    s: float
    t: _WireTime = ""


class _WBar(msgspec.Struct, tag_field="T", tag="b"):
    S: str
    o: float
    h: float
    l: float  # Alpaca's field name
    c: float
    v: float
    t: _WireTime = ""


class _WUpdatedBar(_WBar, tag="u"):
    pass


class _WDailyBar(_WBar, tag="d"):
    pass


class _TagOnly(msgspec.Struct):
    T: object = None


_WIRE_ITEM = _WQuote | _WTrade | _WBar | _WUpdatedBar | _WDailyBar | Success | Subscription | ErrorFrame
_KNOWN_TAGS = frozenset(c.__struct_config__.tag for c in get_args(_WIRE_ITEM))

# ---- timestamps ---------------------------------------------------------------

_SECOND_CACHE: dict[str, int] = {}
_SECOND_CACHE_MAX = 4096
_FRAC_SCALE = (0, 100_000_000, 10_000_000, 1_000_000, 100_000, 10_000, 1_000, 100, 10, 1)


def _bad_time(text: str) -> ValueError:
    return ValueError(f"not an RFC 3339 timestamp with offset: {text[:40]!r}")


def _whole_seconds(text: str) -> int:
    """Epoch seconds of the 'YYYY-MM-DDTHH:MM:SS' prefix, validated and cached."""
    head = text[:19]
    if text[4] != "-" or text[7] != "-" or text[10] not in "Tt " or text[13] != ":" or text[16] != ":":
        raise _bad_time(text)
    fields = (head[0:4], head[5:7], head[8:10], head[11:13], head[14:16], head[17:19])
    if not all(f.isascii() and f.isdigit() for f in fields):
        raise _bad_time(text)
    y, mo, d, h, mi, s = map(int, fields)
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 60):
        raise _bad_time(text)
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    if len(_SECOND_CACHE) >= _SECOND_CACHE_MAX:
        _SECOND_CACHE.clear()
    _SECOND_CACHE[head] = secs
    return secs


def rfc3339_to_ns(text: str) -> int:
    """Parse an RFC 3339 timestamp with up to nanosecond precision to epoch ns.

    datetime keeps only microseconds and Alpaca sends nanoseconds, hence a
    parser of our own. The whole-second prefix is cached because a burst of
    quotes shares it; the rest is a few C-level string operations.
    """
    n = len(text)
    if n < 20:
        raise _bad_time(text)
    secs = _SECOND_CACHE.get(text[:19])
    if secs is None:
        secs = _whole_seconds(text)
    last = text[-1]
    if last == "Z" or last == "z":
        offset = 0
        end = n - 1
    else:
        # A zone-less time is ambiguous: refuse rather than guess UTC.
        tz = text[-6:]
        if n < 25 or tz[0] not in "+-" or tz[3] != ":" or not (tz[1:3] + tz[4:6]).isdigit():
            raise _bad_time(text)
        offset = (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60) * (1 if tz[0] == "+" else -1)
        end = n - 6
    if end == 19:
        frac_ns = 0
    else:
        digits = text[20:end][:9]  # beyond nanoseconds is truncated
        if text[19] != "." or not digits or not (digits.isascii() and digits.isdigit()):
            raise _bad_time(text)
        if end - 20 > 9 and not (text[29:end].isascii() and text[29:end].isdigit()):
            raise _bad_time(text)
        frac_ns = int(digits) * _FRAC_SCALE[len(digits)]
    return (secs - offset) * 1_000_000_000 + frac_ns


def _msgpack_ts_to_ns(ext: msgspec.msgpack.Ext) -> int:
    """Decode msgpack's Timestamp extension (type -1) exactly, to epoch ns."""
    if ext.code != -1:
        raise ValueError(f"unexpected msgpack ext type {ext.code} for a timestamp")
    data = cast(bytes, ext.data)  # a decoded Ext holds bytes
    size = len(data)
    if size == 4:
        return int.from_bytes(data, "big") * 1_000_000_000
    if size == 8:
        word = int.from_bytes(data, "big")
        return (word & 0x3_FFFF_FFFF) * 1_000_000_000 + (word >> 34)
    if size == 12:
        nanos = int.from_bytes(data[:4], "big")
        secs = int.from_bytes(data[4:], "big", signed=True)
        return secs * 1_000_000_000 + nanos
    raise ValueError(f"bad msgpack timestamp length {size}")


def _ts_ns(value: object) -> int:
    if type(value) is str:
        return rfc3339_to_ns(value)
    if isinstance(value, msgspec.msgpack.Ext):
        return _msgpack_ts_to_ns(value)
    raise ValueError(f"unsupported timestamp {value!r}")


# ---- market data decoding -----------------------------------------------------


class DecodedFrame:
    """What one market-data frame held, after validation."""

    __slots__ = ("quotes", "trades", "bars", "controls", "has_data")

    def __init__(self) -> None:
        self.quotes: list[Quote] = []
        self.trades: list[Trade] = []
        self.bars: list[Bar] = []
        self.controls: list[Control] = []
        # True when the frame carried any market data, valid or dropped: the
        # silence detector cares that the feed is alive, not that it is clean.
        self.has_data = False


class MarketDecoder:
    """Decodes market-data frames for one connection and counts what it drops.

    Not thread-safe: one decoder per stream, used from the stream's thread.
    """

    def __init__(self, encoding: Encoding = "json") -> None:
        if encoding not in ("json", "msgpack"):
            raise ValueError(f"encoding must be 'json' or 'msgpack', not {encoding!r}")
        self.encoding: Encoding = encoding
        # (frame, item, raw array, tag-only) decoders per format. Text frames
        # are JSON whatever the encoding; binary frames follow `encoding`,
        # which is fixed per decoder, so that choice is made once here.
        self._json_decs = (
            msgspec.json.Decoder(list[_WIRE_ITEM]),
            msgspec.json.Decoder(_WIRE_ITEM),
            msgspec.json.Decoder(list[msgspec.Raw]),
            msgspec.json.Decoder(_TagOnly),
        )
        if encoding == "json":
            self._binary_decs: tuple[Any, ...] = self._json_decs
        else:
            self._binary_decs = (
                msgspec.msgpack.Decoder(list[_WIRE_ITEM]),
                msgspec.msgpack.Decoder(_WIRE_ITEM),
                msgspec.msgpack.Decoder(list[msgspec.Raw]),
                msgspec.msgpack.Decoder(_TagOnly),
            )
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.malformed_items = 0  # objects with a known tag but bad fields
        self.ignored_items = 0  # objects of a type stockade does not use (statuses, lulds, ...)

    def decode(self, frame: str | bytes | bytearray | memoryview, recv_ns: int | None = None) -> DecodedFrame:
        """Decode one frame; text frames are JSON, binary frames follow `encoding`.

        Raises `WireError` when nothing in the frame can be decoded.
        """
        if recv_ns is None:
            recv_ns = time.time_ns()  # one clock read per frame, shared by its quotes
        frame_dec, item_dec, raw_dec, tag_dec = self._json_decs if isinstance(frame, str) else self._binary_decs
        try:
            items = frame_dec.decode(frame)
        except msgspec.ValidationError:
            # One unknown or broken object must not cost the whole frame:
            # decode object by object and keep what is good.
            items = self._salvage(frame, item_dec, raw_dec, tag_dec)
        except msgspec.DecodeError as exc:
            raise WireError(f"undecodable {self.encoding} frame: {exc}") from None
        return self._build(items, recv_ns)

    def _salvage(
        self, frame: bytes | bytearray | memoryview | str, item_dec: Any, raw_dec: Any, tag_dec: Any
    ) -> list[Any]:
        try:
            raws = raw_dec.decode(frame)
        except msgspec.DecodeError as exc:
            raise WireError(f"frame is not an array of objects: {exc}") from None
        good: list[Any] = []
        bad = 0
        for raw in raws:
            try:
                good.append(item_dec.decode(raw))
                continue
            except msgspec.DecodeError:
                pass
            try:
                tag = tag_dec.decode(raw).T
            except msgspec.DecodeError:
                bad += 1
                continue
            if isinstance(tag, str) and tag not in _KNOWN_TAGS:
                self.ignored_items += 1
            else:
                bad += 1
        self.malformed_items += bad
        if bad and not good:
            raise WireError(f"{bad} malformed object(s) and nothing usable in frame")
        return good

    def _build(self, items: list[Any], recv_ns: int) -> DecodedFrame:  # dispatched on type(item) below, for speed
        out = DecodedFrame()
        dropped = self.dropped
        for it in items:
            cls = type(it)
            if cls is _WQuote:
                out.has_data = True
                bp, ap, bs, az = it.bp, it.ap, it.bs, it.as_
                # x - x is 0.0 for every finite x and NaN for NaN/inf, so one
                # comparison screens all four numbers.
                if (bp - bp) + (ap - ap) + (bs - bs) + (az - az) != 0.0:
                    dropped["non_finite"] += 1
                elif bp <= 0.0 or ap <= 0.0 or bs <= 0.0 or az <= 0.0:
                    dropped["non_positive"] += 1
                elif bp > ap:
                    dropped["crossed"] += 1
                else:
                    try:
                        ts = _ts_ns(it.t)
                    except ValueError:
                        self.malformed_items += 1
                        continue
                    out.quotes.append(Quote(it.S, bp, ap, bs, az, ts, recv_ns))
            elif cls is _WTrade:
                out.has_data = True
                p, s = it.p, it.s
                if (p - p) + (s - s) != 0.0:
                    dropped["non_finite"] += 1
                elif p <= 0.0 or s <= 0.0:
                    dropped["non_positive"] += 1
                else:
                    try:
                        ts = _ts_ns(it.t)
                    except ValueError:
                        self.malformed_items += 1
                        continue
                    out.trades.append(Trade(it.S, p, s, ts, recv_ns))
            elif isinstance(it, _WBar):
                out.has_data = True
                o, h, lo, c, v = it.o, it.h, it.l, it.c, it.v
                if (o - o) + (h - h) + (lo - lo) + (c - c) + (v - v) != 0.0:
                    dropped["non_finite"] += 1
                elif o <= 0.0 or h <= 0.0 or lo <= 0.0 or c <= 0.0 or v < 0.0:
                    # volume 0 is a real (quiet) bar; a zero price is not
                    dropped["non_positive"] += 1
                else:
                    try:
                        ts = _ts_ns(it.t)
                    except ValueError:
                        self.malformed_items += 1
                        continue
                    out.bars.append(Bar(it.S, o, h, lo, c, v, ts))
            else:
                out.controls.append(it)
        return out


# ---- market data requests -----------------------------------------------------


def _encode(obj: dict[str, object], encoding: Encoding) -> str | bytes:
    if encoding == "msgpack":
        return msgspec.msgpack.encode(obj)
    return msgspec.json.encode(obj).decode()


def encode_auth(key: str, secret: str, encoding: Encoding = "json") -> str | bytes:
    """The ``auth`` action. Holds the secret: never log the result."""
    return _encode({"action": "auth", "key": key, "secret": secret}, encoding)


def _sub_body(action: str, quotes: Iterable[str], trades: Iterable[str], bars: Iterable[str]) -> dict[str, object]:
    body: dict[str, object] = {"action": action}
    for name, syms in (("trades", trades), ("quotes", quotes), ("bars", bars)):
        syms = list(syms)
        if syms:
            body[name] = syms
    return body


def encode_subscribe(
    *, quotes: Iterable[str] = (), trades: Iterable[str] = (), bars: Iterable[str] = (), encoding: Encoding = "json"
) -> str | bytes:
    """The ``subscribe`` action; channels with no symbols are left out."""
    return _encode(_sub_body("subscribe", quotes, trades, bars), encoding)


def encode_unsubscribe(
    *, quotes: Iterable[str] = (), trades: Iterable[str] = (), bars: Iterable[str] = (), encoding: Encoding = "json"
) -> str | bytes:
    """The ``unsubscribe`` action."""
    return _encode(_sub_body("unsubscribe", quotes, trades, bars), encoding)


# ---- trading stream (trade_updates) --------------------------------------------


def encode_trade_auth(key: str, secret: str) -> str:
    """The trading stream's ``authenticate`` action. Holds the secret: never log it."""
    return msgspec.json.encode({"action": "authenticate", "data": {"key_id": key, "secret_key": secret}}).decode()


def encode_listen(streams: Iterable[str] = ("trade_updates",)) -> str:
    """The ``listen`` action (an empty list stops all streams)."""
    return msgspec.json.encode({"action": "listen", "data": {"streams": list(streams)}}).decode()


class AuthReply(msgspec.Struct, frozen=True):
    """``{"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}``."""

    authorized: bool
    status: str
    action: str
    message: str = ""


class ListeningReply(msgspec.Struct, frozen=True):
    """``{"stream":"listening","data":{"streams":["trade_updates"]}}``."""

    streams: tuple[str, ...]
    error: str = ""  # Alpaca answers a bad request on this stream


class OtherStreamMessage(msgspec.Struct, frozen=True):
    """A well-formed message on a stream stockade does not handle."""

    stream: str


_Number = float | str | None


class _WireEnvelope(msgspec.Struct):
    stream: str
    data: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))


class _WireAuthData(msgspec.Struct):
    status: str = ""
    action: str = ""
    message: str = ""


class _WireListenData(msgspec.Struct):
    streams: list[str] = []
    error: str = ""


class _WireOrder(msgspec.Struct):
    id: str
    client_order_id: str
    status: str
    symbol: str | None = None
    side: str | None = None
    qty: _Number = None
    filled_qty: _Number = None
    filled_avg_price: _Number = None
    order_class: str | None = ""
    updated_at: str | None = None
    type: str | None = None
    order_type: str | None = None
    stop_price: _Number = None


class _WireTradeUpdate(msgspec.Struct):
    event: str
    order: _WireOrder
    timestamp: str | None = None
    position_qty: _Number = None
    price: _Number = None
    qty: _Number = None


_envelope_dec = msgspec.json.Decoder(_WireEnvelope)
_update_dec = msgspec.json.Decoder(_WireTradeUpdate)
_auth_dec = msgspec.json.Decoder(_WireAuthData)
_listen_dec = msgspec.json.Decoder(_WireListenData)


def _num(value: _Number, what: str) -> float | None:
    """Alpaca sends decimals as strings ("100", "179.08"); tolerate plain numbers too."""
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except ValueError:
        raise WireError(f"{what} is not a number: {str(value)[:40]!r}") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise WireError(f"{what} is not finite: {value!r}")
    return out


_SIDES: dict[str | None, Side] = {"buy": "buy", "sell": "sell"}


def _order_update(data: msgspec.Raw) -> OrderUpdate:
    try:
        w = _update_dec.decode(data)
    except msgspec.DecodeError as exc:
        raise WireError(f"bad trade_updates payload: {exc}") from None
    o = w.order
    side = _SIDES.get(o.side)
    if side is None:
        raise WireError(f"order {o.id} has side {o.side!r}")
    if not o.symbol:
        raise WireError(f"order {o.id} has no symbol")
    stamp = w.timestamp or o.updated_at
    if not stamp:
        raise WireError(f"trade update for order {o.id} has no timestamp")
    try:
        ts_ns = rfc3339_to_ns(stamp)
    except ValueError as exc:
        raise WireError(str(exc)) from None
    return OrderUpdate(
        event=w.event,
        client_order_id=o.client_order_id,
        broker_order_id=o.id,
        symbol=o.symbol,
        side=side,
        status=o.status,
        qty=_num(o.qty, "qty") or 0.0,
        filled_qty=_num(o.filled_qty, "filled_qty") or 0.0,
        filled_avg_price=_num(o.filled_avg_price, "filled_avg_price"),
        ts_ns=ts_ns,
        order_class=o.order_class or "",
        position_qty=_num(w.position_qty, "position_qty"),
        price=_num(w.price, "price"),
        fill_qty=_num(w.qty, "fill qty"),
        order_type=o.type or o.order_type or "",
        stop_price=_num(o.stop_price, "stop_price"),
    )


def decode_trade_stream(
    frame: str | bytes | bytearray | memoryview,
) -> OrderUpdate | AuthReply | ListeningReply | OtherStreamMessage:
    """Decode one trading-stream frame (text or binary, both JSON).

    Raises `WireError` for anything that is not a well-formed message.
    """
    try:
        env = _envelope_dec.decode(frame)
    except msgspec.DecodeError as exc:
        raise WireError(f"undecodable trading stream frame: {exc}") from None
    stream = env.stream
    if stream == "trade_updates":
        return _order_update(env.data)
    if stream == "authorization":
        try:
            a = _auth_dec.decode(env.data)
        except msgspec.DecodeError as exc:
            raise WireError(f"bad authorization payload: {exc}") from None
        return AuthReply(a.status == "authorized", a.status, a.action, a.message)
    if stream == "listening":
        try:
            li = _listen_dec.decode(env.data)
        except msgspec.DecodeError as exc:
            raise WireError(f"bad listening payload: {exc}") from None
        return ListeningReply(tuple(li.streams), li.error)
    return OtherStreamMessage(stream)
