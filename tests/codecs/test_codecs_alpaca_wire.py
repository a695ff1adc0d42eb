"""codecs/alpaca_wire.py: market-data frames, validation, trade updates, requests."""

from __future__ import annotations

import copy
import json
import math

import msgpack
import msgspec
import pytest

from stockade.codecs.alpaca_wire import (
    AuthReply,
    ErrorFrame,
    ListeningReply,
    MarketDecoder,
    OtherStreamMessage,
    Subscription,
    Success,
    WireError,
    decode_trade_stream,
    encode_auth,
    encode_listen,
    encode_subscribe,
    encode_trade_auth,
    encode_unsubscribe,
    rfc3339_to_ns,
)
from stockade.codecs.messages import Bar, OrderUpdate, Quote, Trade

# Frames as Alpaca documents them (market data v2).
QUOTE = {
    "T": "q",
    "S": "AMD",
    "bx": "U",
    "bp": 87.66,
    "bs": 1,
    "ax": "Q",
    "ap": 87.68,
    "as": 4,
    "t": "2021-02-22T15:51:45.335689322Z",
    "c": ["R"],
    "z": "C",
}
TRADE = {
    "T": "t",
    "i": 96921,
    "S": "AAPL",
    "x": "D",
    "p": 126.55,
    "s": 1,
    "t": "2021-02-22T15:51:44.208Z",
    "c": ["@", "I"],
    "z": "C",
}
BAR = {
    "T": "b",
    "S": "SPY",
    "o": 388.985,
    "h": 389.13,
    "l": 388.975,
    "c": 389.12,
    "v": 49378,
    "t": "2021-02-22T19:15:00Z",
    "n": 461,
    "vw": 389.062639,
}
SUBSCRIPTION = {
    "T": "subscription",
    "trades": ["AAPL"],
    "quotes": ["AMD", "CLDR"],
    "bars": ["*"],
    "updatedBars": [],
    "dailyBars": ["VOO"],
    "statuses": ["*"],
    "lulds": [],
    "corrections": ["AAPL"],
    "cancelErrors": ["AAPL"],
}
QUOTE_TS = 1614009105335689322


def q(**over) -> dict:
    d = dict(QUOTE)
    d.update(over)
    return d


# ---- market data: JSON --------------------------------------------------------------


def test_json_frame_with_every_kind():
    dec = MarketDecoder("json")
    f = dec.decode(json.dumps([QUOTE, TRADE, BAR, dict(BAR, T="u"), dict(BAR, T="d")]), recv_ns=42)
    assert f.quotes == [Quote("AMD", 87.66, 87.68, 1.0, 4.0, QUOTE_TS, 42)]
    assert f.trades == [Trade("AAPL", 126.55, 1.0, 1614009104208000000, 42)]
    assert len(f.bars) == 3 and f.bars[0] == Bar("SPY", 388.985, 389.13, 388.975, 389.12, 49378.0, 1614021300000000000)
    assert f.has_data and f.controls == []


def test_json_bytes_and_text_decode_alike():
    dec = MarketDecoder("json")
    text = json.dumps([QUOTE])
    assert dec.decode(text, 1).quotes == dec.decode(text.encode(), 1).quotes


def test_recv_ns_is_stamped_once_per_frame():
    f = MarketDecoder().decode(json.dumps([QUOTE, q(S="X")]))
    assert f.quotes[0].recv_ns == f.quotes[1].recv_ns > 0


def test_control_frames():
    dec = MarketDecoder()
    assert dec.decode('[{"T":"success","msg":"connected"}]').controls == [Success("connected")]
    assert dec.decode('[{"T":"success","msg":"authenticated"}]').controls == [Success("authenticated")]
    err = dec.decode('[{"T":"error","code":406,"msg":"connection limit exceeded"}]')
    assert err.controls == [ErrorFrame(406, "connection limit exceeded")] and not err.has_data
    sub = dec.decode(json.dumps([SUBSCRIPTION])).controls[0]
    assert isinstance(sub, Subscription)
    assert sub.quotes == ("AMD", "CLDR") and sub.bars == ("*",) and sub.daily_bars == ("VOO",)


# ---- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,reason",
    [
        (q(bp=87.70, ap=87.68), "crossed"),
        (q(bp=0.0), "non_positive"),
        (q(ap=-1.0), "non_positive"),
        (q(bs=0), "non_positive"),
        (q(**{"as": 0}), "non_positive"),
    ],
)
def test_json_drops_are_counted_by_reason(bad, reason):
    dec = MarketDecoder()
    f = dec.decode(json.dumps([bad, QUOTE]))
    assert [x.symbol for x in f.quotes] == ["AMD"]
    assert f.has_data
    assert dec.dropped[reason] == 1 and sum(dec.dropped.values()) == 1


def test_locked_quote_is_kept():
    assert MarketDecoder().decode(json.dumps([q(bp=87.68, ap=87.68)])).quotes


@pytest.mark.parametrize("field", ["bp", "ap", "bs", "as"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_msgpack_non_finite_dropped(field, value):
    dec = MarketDecoder("msgpack")
    f = dec.decode(msgpack.packb([q(**{field: value})]))
    assert f.quotes == [] and dec.dropped["non_finite"] == 1


def test_trade_and_bar_validation():
    dec = MarketDecoder("msgpack")
    frame = msgpack.packb([dict(TRADE, p=0), dict(TRADE, s=math.nan), dict(BAR, l=-1.0), dict(BAR, v=0), TRADE])
    f = dec.decode(frame)
    assert len(f.trades) == 1 and len(f.bars) == 1 and f.bars[0].volume == 0.0
    assert dec.dropped == {"crossed": 0, "non_finite": 1, "non_positive": 2}


# ---- msgpack ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts,expected",
    [
        (msgpack.Timestamp(1614009105, 0), 1614009105_000000000),  # timestamp 32
        (msgpack.Timestamp(1614009105, 335689322), QUOTE_TS),  # timestamp 64
        (msgpack.Timestamp(2**34 + 5, 7), (2**34 + 5) * 10**9 + 7),  # timestamp 96
        (msgpack.Timestamp(-1, 500), -(10**9) + 500),  # before the epoch (timestamp 96)
    ],
)
def test_msgpack_timestamp_ext_exact_to_the_nanosecond(ts, expected):
    f = MarketDecoder("msgpack").decode(msgpack.packb([q(t=ts)]), recv_ns=1)
    assert f.quotes[0].ts_ns == expected


def test_msgpack_string_timestamp_and_integer_prices():
    f = MarketDecoder("msgpack").decode(msgpack.packb([q(bp=87, ap=88)]))
    assert f.quotes[0].bid == 87.0 and f.quotes[0].ts_ns == QUOTE_TS


def test_msgpack_controls_and_text_frames_on_a_msgpack_stream():
    dec = MarketDecoder("msgpack")
    assert dec.decode(msgpack.packb([{"T": "error", "code": 402, "msg": "auth failed"}])).controls == [
        ErrorFrame(402, "auth failed")
    ]
    # a text frame is JSON whatever the negotiated encoding
    assert dec.decode(json.dumps([QUOTE])).quotes[0].ts_ns == QUOTE_TS


# ---- malformed and unknown ------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame", ["", "not json", "[", '{"T":"q"}', "42", b"\xff\xfe", '[{"T":"q","S":"X"}]', "[1, 2]"]
)
def test_malformed_json_frames_raise_wire_error(frame):
    with pytest.raises(WireError):
        MarketDecoder().decode(frame)


@pytest.mark.parametrize("frame", [b"", b"\xc1", msgpack.packb({"T": "q"}), msgpack.packb([{"T": "q", "S": 1}])])
def test_malformed_msgpack_frames_raise_wire_error(frame):
    with pytest.raises(WireError):
        MarketDecoder("msgpack").decode(frame)


def test_wire_error_is_a_value_error_not_a_msgspec_error():
    with pytest.raises(ValueError) as info:
        MarketDecoder().decode("nope")
    assert not isinstance(info.value, msgspec.DecodeError)


def test_one_bad_object_does_not_cost_the_frame():
    dec = MarketDecoder()
    frame = json.dumps([{"T": "q", "S": "BAD"}, QUOTE, {"T": "s", "S": "AMD", "sc": "H"}, {"T": "l", "S": "AMD"}, 7])
    f = dec.decode(frame)
    assert [x.symbol for x in f.quotes] == ["AMD"]
    assert dec.malformed_items == 2  # the price-less quote and the bare number
    assert dec.ignored_items == 2  # status and LULD: valid, unused


def test_bad_timestamp_skips_only_that_quote():
    dec = MarketDecoder()
    f = dec.decode(json.dumps([q(t="yesterday"), q(t="2021-02-22T15:51:45"), QUOTE]))
    assert len(f.quotes) == 1 and dec.malformed_items == 2


def test_empty_frame_is_fine():
    f = MarketDecoder().decode("[]")
    assert f.quotes == [] and not f.has_data


# ---- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2021-02-22T15:51:45Z", 1614009105_000000000),
        ("2021-02-22T15:51:45.3Z", 1614009105_300000000),
        ("2021-02-22T15:51:45.335689322Z", QUOTE_TS),
        ("2021-02-22T15:51:45.3356893229999Z", QUOTE_TS),  # sub-ns digits truncated
        ("2021-02-22T10:51:45.335689322-05:00", QUOTE_TS),
        ("2021-02-22T16:51:45.335689322+01:00", QUOTE_TS),
        ("2021-02-22T15:51:45.335689322+00:00", QUOTE_TS),
    ],
)
def test_rfc3339(text, expected):
    assert rfc3339_to_ns(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2021-02-22T15:51:45",
        "2021-02-22 15:51",
        "2021-02-22T15:51:45.Z",
        "2021-02-22T15:51:45.1_2Z",
        "2021-22-02T15:51:45Z",
        "2021-02-22T15:51:45+0100",
        "abcd-ef-ghTij:kl:mnZ",
    ],
)
def test_rfc3339_rejects(text):
    with pytest.raises(ValueError):
        rfc3339_to_ns(text)


# ---- requests ---------------------------------------------------------------------------


def test_request_encoding():
    assert json.loads(encode_auth("k", "s")) == {"action": "auth", "key": "k", "secret": "s"}
    assert msgpack.unpackb(encode_auth("k", "s", "msgpack")) == {"action": "auth", "key": "k", "secret": "s"}
    assert json.loads(encode_subscribe(quotes=["AAPL"], trades=["AAPL"])) == {
        "action": "subscribe",
        "trades": ["AAPL"],
        "quotes": ["AAPL"],
    }
    assert msgpack.unpackb(encode_unsubscribe(quotes=("A", "B"), encoding="msgpack")) == {
        "action": "unsubscribe",
        "quotes": ["A", "B"],
    }
    assert isinstance(encode_subscribe(quotes=["A"]), str)  # text frame
    assert json.loads(encode_trade_auth("k", "s")) == {
        "action": "authenticate",
        "data": {"key_id": "k", "secret_key": "s"},
    }
    assert json.loads(encode_listen()) == {"action": "listen", "data": {"streams": ["trade_updates"]}}


# ---- trade updates ------------------------------------------------------------------------

# Alpaca's documented trade_updates fill (values from its docs example, equity-shaped).
FILL = {
    "stream": "trade_updates",
    "data": {
        "event": "partial_fill",
        "execution_id": "2f63ea93-423d-4169-b3f6-3fdafc10c418",
        "order": {
            "asset_class": "us_equity",
            "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
            "canceled_at": None,
            "client_order_id": "stk-42",
            "created_at": "2022-04-19T13:45:04.981350886-04:00",
            "expired_at": None,
            "extended_hours": False,
            "failed_at": None,
            "filled_at": None,
            "filled_avg_price": "105.8988475",
            "filled_qty": "3",
            "hwm": None,
            "id": "a5be8f5e-fdfa-41f5-a644-7a74fe947a8f",
            "legs": None,
            "limit_price": "106",
            "notional": None,
            "order_class": "",
            "order_type": "limit",
            "qty": "5",
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "side": "sell",
            "status": "partially_filled",
            "stop_price": None,
            "submitted_at": "2022-04-19T13:45:04.980944666-04:00",
            "symbol": "TSLA",
            "time_in_force": "day",
            "trail_percent": None,
            "trail_price": None,
            "type": "limit",
            "updated_at": "2022-04-19T13:45:05.027690731-04:00",
        },
        "position_qty": "-3",
        "price": "105.8988475",
        "qty": "3",
        "timestamp": "2022-04-19T17:45:05.024916716Z",
    },
}


def test_trade_update_fill_text_and_binary():
    for frame in (json.dumps(FILL), json.dumps(FILL).encode()):
        u = decode_trade_stream(frame)
        assert u == OrderUpdate(
            event="partial_fill",
            client_order_id="stk-42",
            broker_order_id="a5be8f5e-fdfa-41f5-a644-7a74fe947a8f",
            symbol="TSLA",
            side="sell",
            status="partially_filled",
            qty=5.0,
            filled_qty=3.0,
            filled_avg_price=105.8988475,
            ts_ns=1650390305024916716,
            order_class="",
            position_qty=-3.0,
            price=105.8988475,
            fill_qty=3.0,
            order_type="limit",
        )


def test_trade_update_matches_alpaca_py_model():
    from alpaca.trading.models import TradeUpdate

    model = TradeUpdate(**FILL["data"])
    u = decode_trade_stream(json.dumps(FILL))
    assert u.client_order_id == model.order.client_order_id
    assert u.broker_order_id == str(model.order.id)
    assert u.event == getattr(model.event, "value", model.event) and u.side == model.order.side.value
    assert u.price == model.price and u.fill_qty == model.qty and u.position_qty == model.position_qty
    assert u.ts_ns // 1000 == int(model.timestamp.timestamp() * 1e6)


def test_trade_update_new_event_and_numeric_values():
    msg = copy.deepcopy(FILL)
    d = msg["data"]
    d["event"] = "new"
    for k in ("execution_id", "price", "qty", "position_qty"):
        del d[k]
    d["order"].update(status="new", filled_qty=0, filled_avg_price=None, qty=5, order_class="bracket")
    u = decode_trade_stream(json.dumps(msg))
    assert (u.event, u.filled_qty, u.filled_avg_price, u.price, u.fill_qty, u.position_qty) == (
        "new",
        0.0,
        None,
        None,
        None,
        None,
    )
    assert u.qty == 5.0 and u.order_class == "bracket"


def test_trade_update_falls_back_to_order_updated_at():
    msg = copy.deepcopy(FILL)
    del msg["data"]["timestamp"]
    assert decode_trade_stream(json.dumps(msg)).ts_ns == 1650390305027690731


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["order"].update(side=None),
        lambda d: d["order"].update(symbol=None),
        lambda d: d["order"].update(qty="five"),
        lambda d: d.update(price="NaN"),
        lambda d: d.update(timestamp="soon"),
        lambda d: d.pop("order"),
        lambda d: d["order"].pop("client_order_id"),
    ],
)
def test_malformed_trade_updates_raise(mutate):
    msg = copy.deepcopy(FILL)
    mutate(msg["data"])
    with pytest.raises(WireError):
        decode_trade_stream(json.dumps(msg))


@pytest.mark.parametrize("frame", ["", "[]", "{}", '{"stream": 3}', b"\x81\xa6stream", "not json"])
def test_malformed_trade_frames_raise(frame):
    with pytest.raises(WireError):
        decode_trade_stream(frame)


def test_trade_stream_control_messages():
    ok = decode_trade_stream(b'{"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}')
    assert ok == AuthReply(True, "authorized", "authenticate")
    bad = decode_trade_stream(
        '{"stream":"authorization","data":{"action":"authenticate","message":"access key verification failed","status":"unauthorized"}}'
    )
    assert not bad.authorized and bad.message == "access key verification failed"
    assert decode_trade_stream('{"stream":"listening","data":{"streams":["trade_updates"]}}') == ListeningReply(
        ("trade_updates",)
    )
    assert decode_trade_stream('{"stream":"account_updates","data":{}}') == OtherStreamMessage("account_updates")
