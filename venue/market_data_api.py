"""Alpaca's market-data REST (and the trading API's clock and calendar) over the simulator.

Paths, parameters and bodies follow what alpaca-py's StockHistoricalDataClient
and TradingClient send and parse:

    GET /v2/stocks/bars                 {"bars": {SYM: [bar...]}, "next_page_token": ...}
    GET /v2/stocks/{symbol}/bars        {"bars": [bar...], "symbol": SYM, "next_page_token": ...}
    GET /v2/stocks/quotes, /v2/stocks/trades, /v2/stocks/{symbol}/quotes, .../trades   (the same shapes)
    GET /v2/stocks/{quotes,trades,bars}/latest     {"quotes": {SYM: quote}} ...
    GET /v2/stocks/{symbol}/{quotes,trades,bars}/latest   {"symbol": SYM, "quote": quote} ...
    GET /v2/stocks/snapshots, /v2/stocks/{symbol}/snapshot
    GET /v2/clock, /v2/calendar

Historical quotes and trades come from `history_ticks` (ticks drawn from the
minute bars). Paging is Alpaca's: `limit` (1-10000, default 1000) counts
items across all symbols of a request, symbols come in alphabetical order,
and `next_page_token` (null on the last page) resumes where the page ended.
Unknown (but well-formed) symbols are left out of the maps, as Alpaca does.
Bad parameters get Alpaca's JSON error body {"code", "message"}: 400 for a
missing or malformed parameter, 422 for a value Alpaca refuses (timeframe...).
API keys, rate limits and faults are the server's middlewares' job.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any

import msgspec
from aiohttp import web

from stockade.venue import history_ticks
from stockade.venue.clock import NEW_YORK, NS_PER_S, TradingDay, ns_to_new_york, settlement_date
from stockade.venue.context import VenueContext
from stockade.venue.market import MarketSimulator, SimBar, SimQuote, SimTrade, Timeframe

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
FEEDS = frozenset({"iex", "sip", "otc", "delayed_sip", "boats", "overnight"})
ADJUSTMENTS = frozenset({"raw", "split", "dividend", "spin-off", "all"})
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9.\-/]{1,21}$")
_CALENDAR_FIRST = date(1970, 1, 1)
_CALENDAR_LAST = date(2029, 12, 31)

_json = msgspec.json.Encoder()


class ApiError(Exception):
    """A request Alpaca would refuse: status plus Alpaca's body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad(message: str) -> ApiError:
    return ApiError(400, 40010001, message)


def _invalid(message: str) -> ApiError:
    return ApiError(422, 42210000, message)


# ---- wire shapes -----------------------------------------------------------------


def rfc3339_ns(ts_ns: int) -> str:
    """UTC RFC 3339 with nanoseconds, trailing zeros trimmed, like Alpaca's data API (Go's RFC3339Nano)."""
    secs, frac = divmod(ts_ns, NS_PER_S)
    base = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def quote_json(q: SimQuote) -> dict[str, Any]:
    return {
        "ap": q.ask,
        "as": q.ask_size,
        "ax": q.exchange,
        "bp": q.bid,
        "bs": q.bid_size,
        "bx": q.exchange,
        "c": list(q.conditions),
        "t": rfc3339_ns(q.ts_ns),
        "z": q.tape,
    }


def trade_json(t: SimTrade) -> dict[str, Any]:
    return {
        "c": list(t.conditions),
        "i": t.id,
        "p": t.price,
        "s": t.size,
        "t": rfc3339_ns(t.ts_ns),
        "x": t.exchange,
        "z": t.tape,
    }


def bar_json(b: SimBar) -> dict[str, Any]:
    return {
        "c": b.close,
        "h": b.high,
        "l": b.low,
        "n": b.trade_count,
        "o": b.open,
        "t": rfc3339_ns(b.ts_ns),
        "v": b.volume,
        "vw": b.vwap,
    }


def _respond(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(body), status=status, content_type="application/json")


# ---- parameters ---------------------------------------------------------------------


def _symbols(request: web.Request) -> list[str]:
    raw = request.query.get("symbols", "")
    symbols = [s.strip() for s in raw.split(",") if s.strip()]
    if not symbols:
        raise _bad("missing symbols")
    for s in symbols:
        if not _SYMBOL_RE.match(s):
            raise _bad(f"invalid symbol: {s}")
    return list(dict.fromkeys(symbols))


def _path_symbol(request: web.Request) -> str:
    symbol = request.match_info["symbol"]
    if not _SYMBOL_RE.match(symbol):
        raise _bad(f"invalid symbol: {symbol}")
    return symbol


def parse_time(text: str, name: str, *, end_of_day: bool = False) -> int:
    """RFC 3339 (naive means UTC) or a New York date; epoch ns. A date `end` covers the whole day."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, dtime(), tzinfo=NEW_YORK)
            return int(moment.timestamp()) * NS_PER_S - (1 if end_of_day else 0)
        frac_ns = 0
        # Python keeps microseconds; Alpaca accepts nanoseconds, so split them off first.
        m = re.match(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$", text)
        if m:
            text = m.group(1) + m.group(3)
            frac_ns = int((m.group(2) + "000000000")[:9])
        moment = datetime.fromisoformat(text.replace("z", "Z"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp()) * NS_PER_S + frac_ns
    except ValueError:
        raise _invalid(f"invalid {name}: {text}") from None


def _limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise _invalid(f"invalid limit: {text}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _invalid(f"invalid limit: must be between 1 and {MAX_LIMIT}")
    return limit


def _check_common(request: web.Request) -> None:
    feed = request.query.get("feed")
    if feed is not None and feed not in FEEDS:
        raise _invalid(f"invalid feed: {feed}")
    adjustment = request.query.get("adjustment")
    if adjustment is not None and not set(adjustment.split(",")) <= ADJUSTMENTS:
        raise _invalid(f"invalid adjustment: {adjustment}")


def _encode_token(symbol: str, ts_ns: int) -> str:
    return base64.urlsafe_b64encode(f"{symbol}|{ts_ns}".encode()).decode()


def _decode_token(token: str) -> tuple[str, int]:
    try:
        symbol, ts = base64.urlsafe_b64decode(token.encode()).decode().split("|")
        return symbol, int(ts)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _invalid("invalid page token") from None


class BarsQuery(msgspec.Struct):
    start_ns: int
    end_ns: int
    limit: int
    descending: bool
    page: tuple[str, int] | None


def _bars_query(request: web.Request, now_ns: int) -> tuple[BarsQuery, Timeframe]:
    try:
        timeframe = Timeframe.parse(request.query.get("timeframe", ""))
    except ValueError:
        _check_common(request)
        raise _invalid("invalid timeframe") from None
    return _range_query(request, now_ns), timeframe


def _range_query(request: web.Request, now_ns: int) -> BarsQuery:
    """start/end/sort/limit/page_token as every historical endpoint takes them."""
    _check_common(request)
    q = request.query
    # Alpaca's defaults: from the start of today (New York) to now.
    today = ns_to_new_york(now_ns).date()
    start = (
        parse_time(q["start"], "start")
        if q.get("start")
        else int(datetime.combine(today, dtime(), tzinfo=NEW_YORK).timestamp()) * NS_PER_S
    )
    end = parse_time(q["end"], "end", end_of_day=True) if q.get("end") else now_ns
    if end < start:
        raise _invalid("end should not be before start")
    sort = q.get("sort", "asc")
    if sort not in ("asc", "desc"):
        raise _invalid(f"invalid sort: {sort}")
    page = _decode_token(q["page_token"]) if q.get("page_token") else None
    return BarsQuery(start, end, _limit(request), sort == "desc", page)


Fetch = Callable[[str, int, int, int, bool], list]  # (symbol, start, end, limit, descending) -> items


# ---- handlers ---------------------------------------------------------------------------


class MarketDataApi:
    """The handlers; one instance per app, bound to the venue context."""

    def __init__(self, ctx: VenueContext) -> None:
        self.ctx = ctx

    @property
    def market(self) -> MarketSimulator:
        assert self.ctx.market is not None, "venue started without a market"
        return self.ctx.market

    def _now(self) -> int:
        return self.ctx.clock.now_ns() if self.ctx.clock is not None else self.market.clock.now_ns()

    # -- bars --

    def _fetch_bars(self, timeframe: Timeframe) -> Fetch:
        return lambda symbol, start, end, n, desc: self.market.bars(
            symbol, timeframe, start, end, n, desc, now_ns=self._now()
        )

    def _fetch_ticks(self, kind: str) -> Fetch:
        market = self.market

        def fetch(symbol: str, start: int, end: int, n: int, desc: bool) -> list:
            profile = market.profile(symbol)
            if profile is None:
                return []
            return history_ticks.ticks(
                kind,
                symbol,
                lambda *a: market.bars(a[0], 1, *a[1:]),
                market.seed,
                profile.spread_bps,
                profile.tape,
                start,
                end,
                n,
                desc,
            )

        return fetch

    def _page(
        self, symbols: list[str], query: BarsQuery, fetch: Fetch, render: Callable[[Any], dict]
    ) -> tuple[dict[str, list[dict]], str | None]:
        """Items of `symbols` (in symbol order), at most `limit` in all, and the next page's token."""
        known = [s for s in sorted(symbols) if s in self.market.symbols]
        out: dict[str, list[dict]] = {}
        remaining = query.limit
        if query.page is not None:
            known = [s for s in known if s >= query.page[0]]
        for symbol in known:
            start, end = query.start_ns, query.end_ns
            if query.page is not None and symbol == query.page[0]:
                if query.descending:
                    end = min(end, query.page[1])
                else:
                    start = max(start, query.page[1])
            if remaining == 0:
                # Full page: is there anything left to point a token at?
                probe = fetch(symbol, start, end, 1, query.descending)
                if probe:
                    return out, _encode_token(symbol, probe[0].ts_ns)
                continue
            items = fetch(symbol, start, end, remaining + 1, query.descending)
            if len(items) > remaining:
                out[symbol] = [render(x) for x in items[:remaining]]
                return out, _encode_token(symbol, items[remaining].ts_ns)
            if items:
                out[symbol] = [render(x) for x in items]
                remaining -= len(items)
        return out, None

    async def get_bars(self, request: web.Request) -> web.Response:
        symbols = _symbols(request)
        query, timeframe = _bars_query(request, self._now())
        bars, token = self._page(symbols, query, self._fetch_bars(timeframe), bar_json)
        return _respond({"bars": bars, "next_page_token": token})

    async def get_symbol_bars(self, request: web.Request) -> web.Response:
        symbol = _path_symbol(request)
        query, timeframe = _bars_query(request, self._now())
        bars, token = self._page([symbol], query, self._fetch_bars(timeframe), bar_json)
        return _respond({"bars": bars.get(symbol, []), "symbol": symbol, "next_page_token": token})

    # -- historical quotes and trades --

    def ticks_handler(self, kind: str) -> Callable:
        render = quote_json if kind == "quotes" else trade_json

        async def handler(request: web.Request) -> web.Response:
            symbols = _symbols(request)
            query = _range_query(request, self._now())
            items, token = self._page(symbols, query, self._fetch_ticks(kind), render)
            return _respond({kind: items, "next_page_token": token})

        return handler

    def symbol_ticks_handler(self, kind: str) -> Callable:
        render = quote_json if kind == "quotes" else trade_json

        async def handler(request: web.Request) -> web.Response:
            symbol = _path_symbol(request)
            query = _range_query(request, self._now())
            items, token = self._page([symbol], query, self._fetch_ticks(kind), render)
            return _respond({kind: items.get(symbol, []), "symbol": symbol, "next_page_token": token})

        return handler

    # -- latest --

    def _latest(self, kind: str, symbol: str) -> dict[str, Any] | None:
        if kind == "quotes":
            q = self.market.latest_quote(symbol)
            return quote_json(q) if q else None
        if kind == "trades":
            t = self.market.latest_trade(symbol)
            return trade_json(t) if t else None
        b = self.market.latest_bar(symbol)
        return bar_json(b) if b else None

    def latest_handler(self, kind: str) -> Callable:
        async def handler(request: web.Request) -> web.Response:
            _check_common(request)
            found = {s: self._latest(kind, s) for s in _symbols(request)}
            return _respond({kind: {s: v for s, v in found.items() if v is not None}})

        return handler

    def symbol_latest_handler(self, kind: str) -> Callable:
        singular = kind[:-1]

        async def handler(request: web.Request) -> web.Response:
            _check_common(request)
            symbol = _path_symbol(request)
            found = self._latest(kind, symbol)
            if found is None:
                raise ApiError(404, 40410000, f"no {singular} found for {symbol}")
            return _respond({"symbol": symbol, singular: found})

        return handler

    # -- snapshots --

    def _snapshot(self, symbol: str) -> dict[str, Any] | None:
        if symbol not in self.market.symbols:
            return None
        daily = self.market.bars(symbol, Timeframe(1, "Day"), None, None, 2, descending=True)
        minute = self.market.latest_bar(symbol)
        return {
            "latestTrade": self._latest("trades", symbol),
            "latestQuote": self._latest("quotes", symbol),
            "minuteBar": bar_json(minute) if minute else None,
            "dailyBar": bar_json(daily[0]) if daily else None,
            "prevDailyBar": bar_json(daily[1]) if len(daily) > 1 else None,
        }

    async def get_snapshots(self, request: web.Request) -> web.Response:
        _check_common(request)
        found = {s: self._snapshot(s) for s in _symbols(request)}
        return _respond({s: v for s, v in found.items() if v is not None})

    async def get_snapshot(self, request: web.Request) -> web.Response:
        _check_common(request)
        symbol = _path_symbol(request)
        snap = self._snapshot(symbol)
        if snap is None:
            raise ApiError(404, 40410000, f"no snapshot found for {symbol}")
        return _respond({"symbol": symbol, **snap})

    # -- clock and calendar --

    async def get_clock(self, request: web.Request) -> web.Response:
        clock = self.ctx.clock or self.market.clock
        now = clock.now_ns()
        return _respond(
            {
                "timestamp": _new_york_iso(now),
                "is_open": clock.is_open(now),
                "next_open": _new_york_iso(clock.next_open(now)),
                "next_close": _new_york_iso(clock.next_close(now)),
            }
        )

    async def get_calendar(self, request: web.Request) -> web.Response:
        clock = self.ctx.clock or self.market.clock
        q = request.query
        try:
            start = date.fromisoformat(q["start"][:10]) if q.get("start") else _CALENDAR_FIRST
            end = date.fromisoformat(q["end"][:10]) if q.get("end") else _CALENDAR_LAST
        except ValueError:
            raise _bad("invalid date format, expected YYYY-MM-DD") from None
        date_type = q.get("date_type", "TRADING").upper()
        if date_type not in ("TRADING", "SETTLEMENT"):
            raise _bad(f"invalid date_type: {q.get('date_type')}")
        # Settlement dates trail trading dates by a few days; look that far back.
        days = clock.calendar(start - timedelta(days=7) if date_type == "SETTLEMENT" else start, end)
        rows = [_calendar_row(d) for d in days]
        if date_type == "SETTLEMENT":
            rows = [r for r in rows if start.isoformat() <= r["settlement_date"] <= end.isoformat()]
        return _respond(rows)


def _new_york_iso(ts_ns: int) -> str:
    """New York time with offset and nanoseconds, as Alpaca's /v2/clock writes it."""
    local = ns_to_new_york(ts_ns)
    frac = ts_ns % NS_PER_S
    text = local.replace(microsecond=0).isoformat()
    return f"{text[:19]}.{frac:09d}{text[19:]}" if frac else text


def _calendar_row(day: TradingDay) -> dict[str, str]:
    close = day.close if day.close.date() == day.date else day.close - timedelta(minutes=1)
    always_open = day.open.time() == dtime(0, 0)
    extended_close = "2359" if always_open else ("1700" if day.early_close else "2000")
    return {
        "date": day.date.isoformat(),
        "open": day.open.strftime("%H:%M"),
        "close": close.strftime("%H:%M"),
        "session_open": "0000" if always_open else "0400",
        "session_close": extended_close,
        "settlement_date": settlement_date(day.date).isoformat(),
    }


def add_routes(app: web.Application, ctx: VenueContext) -> None:
    """Register the market-data REST routes, /v2/clock and /v2/calendar on `app`."""
    api = MarketDataApi(ctx)
    r = app.router

    def wrap(handler: Callable) -> Callable:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except ApiError as exc:
                return _respond({"code": exc.code, "message": exc.message}, status=exc.status)

        return guarded

    r.add_get("/v2/stocks/bars", wrap(api.get_bars))
    r.add_get("/v2/stocks/quotes", wrap(api.ticks_handler("quotes")))
    r.add_get("/v2/stocks/trades", wrap(api.ticks_handler("trades")))
    r.add_get("/v2/stocks/{symbol}/quotes", wrap(api.symbol_ticks_handler("quotes")))
    r.add_get("/v2/stocks/{symbol}/trades", wrap(api.symbol_ticks_handler("trades")))
    r.add_get("/v2/stocks/bars/latest", wrap(api.latest_handler("bars")))
    r.add_get("/v2/stocks/quotes/latest", wrap(api.latest_handler("quotes")))
    r.add_get("/v2/stocks/trades/latest", wrap(api.latest_handler("trades")))
    r.add_get("/v2/stocks/snapshots", wrap(api.get_snapshots))
    r.add_get("/v2/stocks/{symbol}/bars", wrap(api.get_symbol_bars))
    r.add_get("/v2/stocks/{symbol}/bars/latest", wrap(api.symbol_latest_handler("bars")))
    r.add_get("/v2/stocks/{symbol}/quotes/latest", wrap(api.symbol_latest_handler("quotes")))
    r.add_get("/v2/stocks/{symbol}/trades/latest", wrap(api.symbol_latest_handler("trades")))
    r.add_get("/v2/stocks/{symbol}/snapshot", wrap(api.get_snapshot))
    r.add_get("/v2/clock", wrap(api.get_clock))
    r.add_get("/v2/calendar", wrap(api.get_calendar))
