"""The venue without a server: its own REST handlers called in-process, for backtests.

A backtest must go through the same broker code as live trading (alpaca-py's
`TradingClient` and `StockHistoricalDataClient`, the order manager's request
building and response parsing) but cannot afford an HTTP round trip, a
websocket and an event loop per order, nor their scheduling noise.
`InProcessVenue.session()` is a stand-in for the clients' `requests.Session`:
each request is routed to the very handler the HTTP venue would run
(`TradingApi`, `MarketDataApi`), with the same query and JSON body, and
answered with a real `requests.Response` carrying the same status and JSON.
Only the socket is gone. Trade updates are the frames the `/stream`
websocket would send, handed to subscribers as text.

Fill timing: an order accepted while handling a quote is not matched against
that quote (the one the decision saw); it is routed on its symbol's *next*
quote, as an order sent to a real market arrives after the price it reacted
to. Everything else (brackets and OCO legs, stops, day orders, buying power)
is the exchange's own matching, unchanged.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Iterable
from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from aiohttp import web

from stockade.venue.alpaca_json import trade_update_json
from stockade.venue.clock import NEW_YORK, NS_PER_S, ClockMode, MarketClock, ns_to_new_york
from stockade.venue.config import VenueConfig
from stockade.venue.context import VenueContext
from stockade.venue.exchange import _WORKING, Exchange, QuoteLike, TradeEvent, VenueError
from stockade.venue.market_data_api import ApiError, MarketDataApi, rfc3339_ns
from stockade.venue.trading_api import TradingApi

# (method, path pattern, api, handler name): the routes the product's clients use.
_ROUTES: tuple[tuple[str, str, str, str], ...] = (
    ("GET", r"/v2/account", "trading", "get_account"),
    ("GET", r"/v2/positions", "trading", "list_positions"),
    ("DELETE", r"/v2/positions", "trading", "close_all_positions"),
    ("GET", r"/v2/positions/(?P<symbol>[^/]+)", "trading", "get_position"),
    ("DELETE", r"/v2/positions/(?P<symbol>[^/]+)", "trading", "close_position"),
    ("POST", r"/v2/orders", "trading", "submit_order"),
    ("GET", r"/v2/orders", "trading", "list_orders"),
    ("DELETE", r"/v2/orders", "trading", "cancel_all_orders"),
    ("GET", r"/v2/orders:by_client_order_id", "trading", "get_order_by_client_id"),
    ("GET", r"/v2/orders/(?P<order_id>[^/]+)", "trading", "get_order"),
    ("PATCH", r"/v2/orders/(?P<order_id>[^/]+)", "trading", "replace_order"),
    ("DELETE", r"/v2/orders/(?P<order_id>[^/]+)", "trading", "cancel_order"),
    ("GET", r"/v2/clock", "data", "get_clock"),
    ("GET", r"/v2/calendar", "data", "get_calendar"),
    ("GET", r"/v2/stocks/bars", "data", "get_bars"),
    ("GET", r"/v2/stocks/(?P<symbol>[^/]+)/bars", "data", "get_symbol_bars"),
    ("GET", r"/v2/stocks/snapshots", "sessions", "get_snapshots"),
)
_MINUTE_NS = 60 * NS_PER_S
_COMPILED = tuple((m, re.compile(p + r"\Z"), api, h) for m, p, api, h in _ROUTES)


def _may_execute(order: Any, q: QuoteLike) -> bool:
    """False only where the exchange's match would find no price at this quote: a resting
    stop its touch has not reached, a limit its touch does not meet (`_executable_price`'s
    own tests). Most resting bracket legs are that on most quotes; anything else is matched."""
    kind = order.type
    if kind == "stop" and not order.stop_triggered and order.stop_price is not None:
        return q.ask >= order.stop_price if order.side == "buy" else q.bid <= order.stop_price
    if kind == "limit" and order.limit_price is not None:
        return q.ask <= order.limit_price + 1e-9 if order.side == "buy" else q.bid >= order.limit_price - 1e-9
    return True


_INF = float("inf")


def _reach(book: Iterable[Any]) -> tuple[float, float, float, float] | None:
    """The prices at which some order of `book` could execute, as `_may_execute` judges:
    (highest sell stop, lowest buy stop, highest buy limit, lowest sell limit); None when
    some order may execute at any quote (market, triggered or trailing stops, stop limits).

    Open orders, not only working ones: an order that starts working without an event
    of its own is already counted."""
    sell_stop, buy_stop, buy_limit, sell_limit = -_INF, _INF, -_INF, _INF
    for order in book:
        kind = order.type
        if kind == "stop" and not order.stop_triggered and order.stop_price is not None:
            if order.side == "buy":
                buy_stop = min(buy_stop, order.stop_price)
            else:
                sell_stop = max(sell_stop, order.stop_price)
        elif kind == "limit" and order.limit_price is not None:
            if order.side == "buy":
                buy_limit = max(buy_limit, order.limit_price)
            else:
                sell_limit = min(sell_limit, order.limit_price)
        else:
            return None
    return sell_stop, buy_stop, buy_limit, sell_limit


def _within_reach(reach: tuple[float, float, float, float], q: QuoteLike) -> bool:
    """Whether `_may_execute` could be true at `q` for some order `reach` describes (same comparisons)."""
    sell_stop, buy_stop, buy_limit, sell_limit = reach
    return q.bid <= sell_stop or q.ask >= buy_stop or q.ask <= buy_limit + 1e-9 or q.bid >= sell_limit - 1e-9


class _Request:
    """The little of `aiohttp.web.Request` the venue's handlers read."""

    def __init__(self, method: str, path: str, query: dict[str, str], body: bytes, match_info: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.match_info = match_info
        self._body = body

    async def read(self) -> bytes:
        return self._body


class InProcessSession:
    """A `requests.Session` look-alike answering from the in-process venue."""

    def __init__(self, venue: InProcessVenue) -> None:
        self._venue = venue
        self.requests = 0
        # (url, params) -> (path, query): the periodic passes send the same requests
        # (open orders, positions, account) over and over, and encoding then parsing
        # them cost as much as a small request's handler.
        self._targets: dict[tuple[Any, ...], tuple[str, dict[str, str]]] = {}

    def request(
        self, method: str, url: str, params: dict[str, Any] | None = None, json: Any = None, **_: Any
    ) -> requests.Response:
        self.requests += 1
        path, query = self._target(url, params or {})
        body = b"" if json is None else _json_bytes(json)
        status, payload = self._venue.handle(method.upper(), path, query, body)
        response = requests.Response()
        response.status_code = status
        response.reason = "OK" if status < 400 else "Error"
        response.url = url
        response._content = payload  # how a Response is built without a socket
        response.headers["Content-Type"] = "application/json"
        response.encoding = "utf-8"  # as the server's charset says; spares requests a guess per body
        return response

    def _target(self, url: str, params: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The path and query the server would see for `url` and `params`."""
        key = _params_key(url, params)
        known = self._targets.get(key) if key is not None else None
        if known is not None:
            return known[0], dict(known[1])
        parts = urlsplit(url)
        # Encoded exactly as `requests` puts a params dict on the wire, then parsed as the server does.
        encoded = requests.models.RequestEncodingMixin._encode_params(params)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        query.update(parse_qsl(encoded if isinstance(encoded, str) else "", keep_blank_values=True))
        if key is not None:
            if len(self._targets) >= _TARGETS_MAX:
                self._targets.clear()
            self._targets[key] = (parts.path, dict(query))
        return parts.path, query

    def close(self) -> None:
        pass


_TARGETS_MAX = 4096
_PLAIN = (str, int, bool, type(None))


def _params_key(url: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    """A key for `params` whose values encode one way only (None: not cached).

    Plain values and enum members, each with its type: True and 1 are equal
    but encode differently; an equal Decimal or float may print differently,
    so those are not cached at all."""
    key: list[Any] = [url]
    for name, value in params.items():
        kind = type(value)
        if kind not in _PLAIN and not isinstance(value, enum.Enum):
            return None
        key.append((name, kind, value))
    return tuple(key)


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, default=str).encode()


class SessionCache(MarketClock):
    """A `MarketClock` whose `is_open` remembers the current New York day's session.

    The exchange asks on every quote; a backtest replays millions of them, and
    the calendar arithmetic (datetimes, time zones) cost more than the
    matching. Same answers: the day's bounds and session come from the clock.
    """

    def __init__(self, mode: ClockMode, now_fn: Callable[[], int]) -> None:
        super().__init__(mode, now_fn)
        self._lo = self._hi = 0  # [lo, hi): the New York day cached
        self._open = self._close = 0

    def is_open(self, ts_ns: int | None = None) -> bool:
        if self.mode == "always_open":
            return True
        ts = self.now_ns() if ts_ns is None else ts_ns
        if not self._lo <= ts < self._hi:
            self._load(ts)
        return self._open <= ts < self._close

    def _load(self, ts_ns: int) -> None:
        day = ns_to_new_york(ts_ns).date()
        lo = datetime.combine(day, time(0, 0), tzinfo=NEW_YORK)
        hi = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=NEW_YORK)
        self._lo, self._hi = int(lo.timestamp()) * NS_PER_S, int(hi.timestamp()) * NS_PER_S
        session = self.session(day)
        if session is None:
            self._open = self._close = 0
        else:
            self._open = int(session.open.timestamp()) * NS_PER_S
            self._close = int(session.close.timestamp()) * NS_PER_S


class InProcessVenue:
    """One paper account, its matching engine and (optionally) a market, driven by the caller's clock."""

    def __init__(
        self,
        symbols: Iterable[str],
        now_ns: Callable[[], int],
        *,
        market: Any = None,
        initial_cash: float = 100_000.0,
        seed: int = 0,
        new_id: Callable[[], str] | None = None,
        clock_mode: ClockMode = "nyse",
    ) -> None:
        self.ctx = VenueContext(VenueConfig())
        self.ctx.clock = SessionCache(clock_mode, now_ns)
        self.ctx.market = market
        self.exchange = Exchange(
            symbols, self.ctx.clock, initial_cash=initial_cash, seed=seed, on_event=self._on_event, new_id=new_id
        )
        self.ctx.exchange = self.exchange
        self.sessions = SessionBars()
        self._apis = {"trading": TradingApi(self.ctx), "data": MarketDataApi(self.ctx), "sessions": self.sessions}
        self._subscribers: list[Callable[[str], None]] = []
        self._held: dict[str, list[str]] = {}  # symbol -> accepted order ids waiting for its next quote
        self._event_subscribers: list[Callable[[TradeEvent], None]] = []
        self._open_by_symbol: dict[str, dict[str, Any]] = {}  # symbol -> open orders, in book order
        # symbol -> its book's `_reach`, dropped at every event of the symbol and
        # after every match: most quotes reach none of the resting legs.
        self._reach: dict[str, tuple[float, float, float, float] | None] = {}
        self._next_tick_ns = 0

    # ---- trade updates ---------------------------------------------------------

    def subscribe(self, on_frame: Callable[[str], None]) -> Callable[[], None]:
        """`on_frame(text)` gets every trade_updates frame, as the /stream websocket sends it."""
        self._subscribers.append(on_frame)
        return lambda: self._subscribers.remove(on_frame) if on_frame in self._subscribers else None

    def subscribe_events(self, on_event: Callable[[TradeEvent], None]) -> None:
        """`on_event(event)` gets every exchange event first, as a `TradeEvent` (e.g. to charge fees)."""
        self._event_subscribers.append(on_event)

    def _on_event(self, event: TradeEvent) -> None:
        self._index(event.order.id)
        self._index(event.order.replaced_by)
        for on_event in self._event_subscribers:
            on_event(event)
        if self._subscribers:
            frame = json.dumps({"stream": "trade_updates", "data": trade_update_json(event, self.exchange)})
            for on_frame in tuple(self._subscribers):
                on_frame(frame)

    # ---- market ---------------------------------------------------------------------

    def _index(self, order_id: str | None) -> None:
        order = self.exchange.orders.get(order_id) if order_id else None
        if order is None:
            return
        self._reach.pop(order.symbol, None)
        book = self._open_by_symbol.setdefault(order.symbol, {})
        if order.is_open:
            book.setdefault(order.id, order)
        else:
            book.pop(order.id, None)

    def on_quote(self, quote: QuoteLike) -> None:
        """A new top of book: working orders match; orders held for this symbol are routed and match.

        `Exchange.on_quote`, with two scans of every open order per quote
        replaced (they made a replay with many resting bracket legs quadratic):
        the symbol's working orders come from an index kept from the
        exchange's own events, in the order they went to the book; the
        clock-following `tick` (day roll, expiry at the close, routing at the
        open) runs on the first quote of each simulated minute.
        """
        ex = self.exchange
        if quote.bid <= 0 or quote.ask <= 0 or quote.ask < quote.bid:
            return  # a broken quote must not trade anything
        symbol = quote.symbol
        ex.quotes[symbol] = quote
        book = self._open_by_symbol.get(symbol)
        working: list[Any] = []
        if book:
            # No order of the book within reach of this quote: none would be matched.
            reach = (
                self._reach[symbol] if symbol in self._reach else self._reach.setdefault(symbol, _reach(book.values()))
            )
            if reach is None or _within_reach(reach, quote):
                working = [o for o in book.values() if o.status in _WORKING]
        if quote.ts_ns >= self._next_tick_ns:
            ex.tick(quote.ts_ns)
            self._next_tick_ns = (quote.ts_ns // _MINUTE_NS + 1) * _MINUTE_NS
        if ex.clock.is_open(quote.ts_ns):
            self.sessions.on_quote(quote)
            for order in working:
                # An OCO sibling's fill may have cancelled it meanwhile.
                if order.status in _WORKING and _may_execute(order, quote):
                    ex._match(order)  # the exchange's own matching
                    self._reach.pop(symbol, None)  # a stop it triggered without a fill is a market order now
        held = self._held.pop(quote.symbol, None)
        if held:
            ex._to_route.extend(held)  # the exchange's own routing queue
            ex.route_pending()

    def _hold_new_orders(self, before: set[str]) -> None:
        ex = self.exchange
        for oid in [o for o in ex._to_route if o not in before]:
            ex._to_route.remove(oid)
            self._held.setdefault(ex.orders[oid].symbol, []).append(oid)

    # ---- REST ---------------------------------------------------------------------------

    def session(self) -> InProcessSession:
        return InProcessSession(self)

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """Run the venue's handler for one request; (status, JSON body) as the server answers."""
        for m, pattern, api, name in _COMPILED:
            if m != method:
                continue
            match = pattern.match(path)
            if match is None:
                continue
            handler = getattr(self._apis[api], name)
            request = _Request(method, path, query, body, match.groupdict())
            ex = self.exchange
            before = set(ex._to_route)
            # The handlers route accepted orders at once (against the quote the
            # decision saw); hold them for the next quote instead.
            ex.routing_held = True
            try:
                response = _run(handler(request))
            except VenueError as exc:
                return exc.status, _json_bytes(exc.body())
            except ApiError as exc:
                return exc.status, _json_bytes({"code": exc.code, "message": exc.message})
            finally:
                ex.routing_held = False
                self._hold_new_orders(before)
            return response.status, bytes(response.body or b"")
        return 404, _json_bytes({"code": 40410000, "message": "endpoint not found"})


class SessionBars:
    """Each symbol's regular-session daily bar so far and the previous one, from the quotes given.

    Serves `/v2/stocks/snapshots` (the reconciler's gap-risk check at the
    open) from what the replay has shown the venue up to now: the market
    simulator's own snapshot is its state at the end of the data, i.e. the
    future. Prices are the quotes' mids; only `dailyBar`, `prevDailyBar` and
    `latestQuote` are filled (no trades are kept).
    """

    def __init__(self) -> None:
        self._day_end_ns = 0
        self._date = ""
        self._today: dict[str, list[Any]] = {}  # symbol -> [open, high, low, close, first ts_ns]
        self._previous: dict[str, list[Any]] = {}
        self._quotes: dict[str, QuoteLike] = {}

    def on_quote(self, quote: QuoteLike) -> None:
        ts = quote.ts_ns
        if ts >= self._day_end_ns:
            self._roll(ts)
        mid = (quote.bid + quote.ask) / 2
        bar = self._today.get(quote.symbol)
        if bar is None:
            self._today[quote.symbol] = [mid, mid, mid, mid, ts]
        else:
            bar[1] = max(bar[1], mid)
            bar[2] = min(bar[2], mid)
            bar[3] = mid
        self._quotes[quote.symbol] = quote

    def _roll(self, ts_ns: int) -> None:
        day = ns_to_new_york(ts_ns).date()
        if day.isoformat() != self._date:
            self._previous.update(self._today)  # a symbol with no quote today keeps its last session
            self._today = {}
            self._date = day.isoformat()
        midnight = datetime.combine(day + timedelta(days=1), time(0), NEW_YORK)
        self._day_end_ns = int(midnight.timestamp()) * NS_PER_S

    async def get_snapshots(self, request: Any) -> web.Response:
        symbols = [s.strip() for s in request.query.get("symbols", "").split(",") if s.strip()]
        if not symbols:
            raise ApiError(400, 40010001, "missing symbols")
        body: dict[str, Any] = {}
        for symbol in dict.fromkeys(symbols):
            today, before, quote = self._today.get(symbol), self._previous.get(symbol), self._quotes.get(symbol)
            if quote is None:
                continue  # as Alpaca: a symbol with no data is left out
            body[symbol] = {
                "latestTrade": None,
                "latestQuote": {
                    "t": rfc3339_ns(quote.ts_ns),
                    "bp": quote.bid,
                    "ap": quote.ask,
                    "bs": quote.bid_size,
                    "as": quote.ask_size,
                    "bx": "",
                    "ax": "",
                    "c": [],
                    "z": "",
                },
                "minuteBar": None,
                "dailyBar": _daily_json(today) if today else None,
                "prevDailyBar": _daily_json(before) if before else None,
            }
        return web.json_response(body)


def _daily_json(bar: list[Any]) -> dict[str, Any]:
    o, h, lo, c, ts = bar
    return {"t": rfc3339_ns(ts), "o": o, "h": h, "l": lo, "c": c, "v": 0, "n": 0, "vw": c}


def _run(coro: Any) -> Any:
    """Run a handler coroutine that never waits (in-process, nothing to wait for)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("an in-process venue handler tried to wait")
