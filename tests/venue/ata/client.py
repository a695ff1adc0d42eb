"""alpaca-trade-api 3.2.0 against the venue; run by the venue tests inside its own virtual environment.

Pointed at the venue the way that SDK is: REST(base_url=...) for trading,
APCA_API_DATA_URL (read from the environment, set before this process
starts) for market data, TradingStream(base_url) for trade updates (it
connects to BASE/stream/) and DataStream(data_stream_url). Prints one JSON
report on stdout. Imports nothing of stockade.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback

from alpaca_trade_api.rest import REST, APIError
from alpaca_trade_api.stream import DataStream, TradingStream

URL, KEY, SECRET = os.environ["VENUE_URL"], os.environ["VENUE_KEY"], os.environ["VENUE_SECRET"]
DEADLINE_S = 20.0
START, END = "2025-03-04T15:00:00Z", "2025-03-04T15:10:00Z"

api = REST(KEY, SECRET, base_url=URL, api_version="v2")
api._retry = 0  # a refusal is a result under test here


def wait_for(what, check, timeout=DEADLINE_S):
    until = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > until:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def refused(fn):
    try:
        fn()
    except APIError as err:
        return {"status": err.status_code, "code": err.code, "message": str(err)}
    raise AssertionError("expected the venue to refuse")


async def streams(report):
    """Trade updates at /stream/ and quotes on the data stream, on one event loop."""
    trading = TradingStream(KEY, SECRET, URL)
    listening, updates = asyncio.Event(), []
    dispatch = trading._dispatch

    async def watch(msg):  # the SDK ignores the "listening" reply; the test needs to know it came
        if msg.get("stream") == "listening":
            listening.set()
        await dispatch(msg)

    trading._dispatch = watch

    async def on_update(update):
        updates.append(update)

    trading.subscribe_trade_updates(on_update)
    trading_task = asyncio.create_task(trading._run_forever())
    await asyncio.wait_for(listening.wait(), DEADLINE_S)
    order = await asyncio.to_thread(api.submit_order, "AAPL", qty=2, side="buy", type="market",
                                    time_in_force="day", client_order_id="ata-buy")
    until = time.monotonic() + DEADLINE_S
    while not any(u.event == "fill" and u.order["id"] == order.id for u in updates):
        if time.monotonic() > until:
            raise TimeoutError("no fill on the trade stream")
        await asyncio.sleep(0.05)
    fill = next(u for u in updates if u.event == "fill")
    report["trade_stream"] = {"ok": True, "value": {"events": [u.event for u in updates], "fill_qty": fill.qty,
                                                    "client_order_id": fill.order["client_order_id"]}}

    data = DataStream(KEY, SECRET, URL, raw_data=False, feed="iex")
    quotes = []

    async def on_quote(q):
        quotes.append(q)

    data.subscribe_quotes(on_quote, "AAPL")
    data_task = asyncio.create_task(data._run_forever())
    until = time.monotonic() + DEADLINE_S
    while not quotes:
        if time.monotonic() > until:
            raise TimeoutError("no quote on the data stream")
        await asyncio.sleep(0.05)
    report["data_stream"] = {"ok": True, "value": {"symbol": quotes[0].symbol, "bid": quotes[0].bid_price,
                                                   "ask": quotes[0].ask_price}}
    await trading.stop_ws()
    await data.stop_ws()
    for task in (trading_task, data_task):
        task.cancel()
    await asyncio.gather(trading_task, data_task, return_exceptions=True)


def main() -> int:
    report: dict = {}
    steps = {
        "account": lambda: {"cash": api.get_account().cash, "status": api.get_account().status},
        "clock": lambda: {k: str(v) for k, v in api.get_clock()._raw.items()},
        "streams": lambda: asyncio.run(asyncio.wait_for(streams(report), 2 * DEADLINE_S)),
        "position": lambda: {"qty": api.get_position("AAPL").qty},
        "trailing_stop": lambda: trailing(),
        "oco": lambda: oco(),
        "notional": lambda: notional(),
        "errors": lambda: {
            "get_position": refused(lambda: api.get_position("SPY")),
            "close_position": refused(lambda: api.close_position("SPY")),
            "notional_and_qty": refused(lambda: api.post("/orders", {
                "symbol": "AAPL", "qty": "1", "notional": "10", "side": "buy", "type": "market",
                "time_in_force": "day"})),
            "oto_both_legs": refused(lambda: api.submit_order(
                "AAPL", qty=1, side="buy", type="market", time_in_force="day", order_class="oto",
                take_profit={"limit_price": "100000"}, stop_loss={"stop_price": "1"})),
        },
        "historical": lambda: {
            "quotes": len(api.get_quotes("AAPL", START, END)),
            "trades": len(api.get_trades("AAPL", START, END, limit=13)),
            "multi_quotes": {s: len(v) for s, v in _group(api.get_quotes_iter(["AAPL", "MSFT"], START, END, raw=True))},
            "first_trade": api.get_trades("AAPL", START, END, limit=1)[0]._raw,
        },
        "close": lambda: {"side": api.close_position("AAPL").side},
    }
    for name, fn in steps.items():
        try:
            report[name] = {"ok": True, "value": fn()}
        except Exception:
            report[name] = {"ok": False, "error": traceback.format_exc()}
    print(json.dumps(report, default=str))
    return 0


def _group(items):
    out: dict = {}
    for item in items:
        out.setdefault(item["S"], []).append(item)
    return out.items()


def trailing():
    o = api.submit_order("AAPL", qty=2, side="sell", type="trailing_stop", time_in_force="gtc", trail_price="50")
    new = api.replace_order(o.id, trail="60")
    api.cancel_order(new.id)
    return {"type": o.type, "trail_price": o.trail_price, "hwm": o.hwm, "stop_price": o.stop_price,
            "replaced_trail_price": new.trail_price, "replaced_stop_price": new.stop_price}


def oco():
    bid = api.get_latest_quote("AAPL").bp
    o = api.submit_order("AAPL", qty=2, side="sell", type="limit", time_in_force="gtc", order_class="oco",
                         take_profit={"limit_price": f"{bid * 1.5:.2f}"}, stop_loss={"stop_price": f"{bid * 0.5:.2f}"})
    api.cancel_order(o.id)
    return {"order_class": o.order_class, "legs": len(o.legs), "leg_after": api.get_order(o.legs[0].id).status}


def notional():
    o = api.submit_order("MSFT", notional=250, side="buy", type="market", time_in_force="day")
    done = wait_for("notional fill", lambda: (x := api.get_order(o.id)).status == "filled" and x)
    return {"qty": o.qty, "notional": o.notional, "filled_qty": done.filled_qty,
            "position_qty": api.get_position("MSFT").qty}


if __name__ == "__main__":
    sys.exit(main())
