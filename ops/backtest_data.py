"""Market data for a backtest: the sources and how bars are replayed as quotes.

Sources (each yields one trading day at a time, oldest first, as `Day`s):
- `sim`: the venue's seeded market simulator (offline; same seed, same prices);
- `file`: CSV (or Parquet with pyarrow) of bars or quotes, schema below.

File schema (header row required; columns in any order; extra columns ignored):
- bars:   timestamp, symbol, open, high, low, close, volume
- quotes: timestamp, symbol, bid, ask, bid_size, ask_size
`timestamp` is RFC 3339 (`2026-06-01T13:30:00Z`, offset allowed) or integer
nanoseconds since the epoch; a bar's timestamp is its start (Alpaca's). A row
that does not parse is an error naming file, line and field: never skipped.

A 1-minute bar becomes four quotes inside its minute (open, then high and low
in the order a bar that closed up or down most plausibly took, then close, at
+0/+15/+30/+45 s) and one trade carrying the bar's volume, so the analyzer
builds the same bar from quotes as live, and nothing of the bar is visible
before its time. Quotes are `bar_spread_bps` wide around each price.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from stockade.codecs.messages import Quote, Trade
from stockade.trading.market_hours import exchange_date

NS = 1_000_000_000
BAR_COLUMNS = ("timestamp", "symbol", "open", "high", "low", "close", "volume")
QUOTE_COLUMNS = ("timestamp", "symbol", "bid", "ask", "bid_size", "ask_size")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_STEPS_NS = (0, 15 * NS, 30 * NS, 45 * NS)


class BadInput(ValueError):
    """Input the backtest cannot use; the message is the one line the user sees."""


@dataclasses.dataclass(frozen=True)
class BarRow:
    symbol: str
    ts_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclasses.dataclass
class Day:
    """One exchange date's events in time order, and the bars they came from (for charts)."""

    date: str
    events: list[Quote | Trade]
    bars: int


def bar_events(bar: BarRow, spread_bps: float, size: float) -> list[Quote | Trade]:
    """The quotes (and trade) a bar is replayed as; see the module docstring."""
    path = (
        (bar.open, bar.low, bar.high, bar.close) if bar.close >= bar.open else (bar.open, bar.high, bar.low, bar.close)
    )
    half = spread_bps / 20_000.0
    out: list[Quote | Trade] = []
    for step, price in zip(_STEPS_NS, path, strict=True):
        ts = bar.ts_ns + step
        out.append(Quote(bar.symbol, price * (1 - half), price * (1 + half), size, size, ts, ts))
    if bar.volume > 0:
        ts = bar.ts_ns + _STEPS_NS[-1]
        out.append(Trade(bar.symbol, bar.close, float(bar.volume), ts, ts))
    return out


def _day_of(ts_ns: int) -> str:
    return exchange_date(ts_ns)


def days_from_bars(bars: Iterable[BarRow], spread_bps: float, size: float) -> Iterator[Day]:
    """Group time-ordered bars by exchange date and expand them to events."""
    current: str | None = None
    rows: list[BarRow] = []
    for bar in bars:
        day = _day_of(bar.ts_ns)
        if current is not None and day != current:
            yield _expand(current, rows, spread_bps, size)
            rows = []
        current = day
        rows.append(bar)
    if current is not None and rows:
        yield _expand(current, rows, spread_bps, size)


def _expand(day: str, rows: list[BarRow], spread_bps: float, size: float) -> Day:
    events: list[Quote | Trade] = []
    for bar in rows:
        events.extend(bar_events(bar, spread_bps, size))
    events.sort(key=lambda e: e.ts_ns)  # stable: symbols keep their order within a timestamp
    return Day(day, events, len(rows))


# ---- sim ----------------------------------------------------------------------------


class SimSource:
    """Minute bars of the venue's seeded market simulator for [start, end]."""

    def __init__(self, symbols: tuple[str, ...], seed: int, start: dt.date, end: dt.date) -> None:
        from stockade.venue.clock import MarketClock
        from stockade.venue.market import MarketSimulator

        self.symbols = symbols
        self.start_ns = _date_ns(start)
        self.end_ns = _date_ns(end + dt.timedelta(days=1)) - 1
        # The simulator's "now" is the end of the period: its history covers the
        # whole run, and the in-process venue's clock (the decision time) caps
        # what the strategies can ask of it.
        end_ns = self.end_ns
        self.market = MarketSimulator(
            symbols, seed=seed, clock=MarketClock("nyse", lambda: end_ns), now_fn=lambda: end_ns
        )

    def bars_between(self, first: dt.date, last: dt.date) -> dict[str, list[Any]]:
        """Each symbol's minute bars of [first, last] (walk-forward training), as `Bar` messages."""
        from stockade.codecs.messages import Bar

        lo, hi = _date_ns(first), _date_ns(last + dt.timedelta(days=1)) - 1
        return {
            s: [
                Bar(s, b.open, b.high, b.low, b.close, float(b.volume), b.ts_ns) for b in self.market.bars(s, 1, lo, hi)
            ]
            for s in self.symbols
        }

    def days(self, spread_bps: float, size: float) -> Iterator[Day]:
        day = dt.datetime.fromtimestamp(self.start_ns / NS, dt.UTC).date()
        last = dt.datetime.fromtimestamp(self.end_ns / NS, dt.UTC).date()
        while day <= last:
            lo = _date_ns(day)
            hi = _date_ns(day + dt.timedelta(days=1)) - 1
            rows: list[BarRow] = []
            for symbol in self.symbols:
                for b in self.market.bars(symbol, 1, lo, hi):
                    rows.append(BarRow(symbol, b.ts_ns, b.open, b.high, b.low, b.close, float(b.volume)))
            rows.sort(key=lambda r: r.ts_ns)
            if rows:
                yield from days_from_bars(rows, spread_bps, size)
            day += dt.timedelta(days=1)


def _date_ns(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * NS


# ---- file ---------------------------------------------------------------------------


class FileMarket:
    """The bars of a file, served as the venue's market history.

    The in-process venue answers the analyzers' warm-up (`/v2/stocks/bars`)
    from it; only bars complete by the simulated now are ever returned.
    """

    def __init__(self, symbols: tuple[str, ...], history: list[BarRow]) -> None:
        from stockade.venue.market import SimBar

        self.symbols = symbols
        self._now: Callable[[], int] | None = None
        self._bars: dict[str, list[Any]] = {s: [] for s in symbols}
        for r in sorted(history, key=lambda r: r.ts_ns):
            self._bars[r.symbol].append(
                SimBar(r.symbol, r.open, r.high, r.low, r.close, int(r.volume), 0, r.close, r.ts_ns)
            )

    def bind_clock(self, now_ns: Callable[[], int]) -> None:
        self._now = now_ns

    def bars(
        self,
        symbol: str,
        timeframe: Any = 1,
        start_ns: int | None = None,
        end_ns: int | None = None,
        limit: int | None = None,
        descending: bool = False,
        now_ns: int | None = None,
    ) -> list[Any]:
        """`MarketSimulator.bars`' call (`now_ns`: the asker's now, when earlier than the bound clock's)."""
        if getattr(timeframe, "amount", 1) != 1 or getattr(timeframe, "unit", "Min") != "Min":
            return []  # minute bars only: coarser history is not in a minute file
        now = self._now() if self._now is not None else None
        if now_ns is not None:
            now = now_ns if now is None else min(now, now_ns)
        complete_by = now - 60 * NS if now is not None else None
        out = [
            b
            for b in self._bars.get(symbol, ())
            if (start_ns is None or b.ts_ns >= start_ns)
            and (end_ns is None or b.ts_ns <= end_ns)
            and (complete_by is None or b.ts_ns <= complete_by)
        ]
        if descending:
            out.reverse()
        return out[:limit] if limit is not None else out


def parse_timestamp(text: str) -> int:
    """RFC 3339 or integer epoch nanoseconds -> ns; ValueError otherwise."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("no UTC offset")
    return (moment - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def _number(row: dict[str, Any], field: str, where: str, positive: bool = True) -> float:
    raw = row.get(field)
    try:
        if raw is None:
            raise TypeError(field)
        value = float(raw)
    except (TypeError, ValueError):
        raise BadInput(f"{where}: {field} = {raw!r}: not a number") from None
    if not math.isfinite(value) or (value <= 0 if positive else value < 0):
        raise BadInput(f"{where}: {field} = {raw!r}: must be {'> 0' if positive else '>= 0'}")
    return value


class FileSource:
    """Bars or quotes from a CSV or Parquet file (schema in the module docstring)."""

    def __init__(self, path: Path, symbols: tuple[str, ...] | None, start: dt.date, end: dt.date) -> None:
        self.path = path
        if not path.is_file():
            raise BadInput(f"--file {path}: no such file")
        rows, columns = self._read()
        if set(BAR_COLUMNS) <= set(columns):
            self.kind = "bars"
        elif set(QUOTE_COLUMNS) <= set(columns):
            self.kind = "quotes"
        else:
            raise BadInput(
                f"{path}:1: header {','.join(columns)!r} is neither bars "
                f"({','.join(BAR_COLUMNS)}) nor quotes ({','.join(QUOTE_COLUMNS)})"
            )
        lo, hi = _date_ns(start), _date_ns(end + dt.timedelta(days=1))
        parsed: list[tuple[int, str, tuple[float, ...]]] = []
        history: list[BarRow] = []  # bars before --start: what the analyzers warm up from
        seen: set[str] = set()
        for line, row in rows:
            where = f"{path}:{line}"
            symbol = str(row.get("symbol") or "").strip().upper()
            if not symbol:
                raise BadInput(f"{where}: symbol = {row.get('symbol')!r}: empty")
            try:
                ts = parse_timestamp(str(row.get("timestamp") or ""))
            except ValueError:
                raise BadInput(
                    f"{where}: timestamp = {row.get('timestamp')!r}: not RFC 3339 with an offset or integer nanoseconds"
                ) from None
            if self.kind == "bars":
                o, h, lo_, c = (_number(row, f, where) for f in ("open", "high", "low", "close"))
                v = _number(row, "volume", where, positive=False)
                if h < max(o, c, lo_) or lo_ > min(o, c):
                    raise BadInput(f"{where}: high/low = {h}/{lo_}: do not contain open {o} and close {c}")
                values: tuple[float, ...] = (o, h, lo_, c, v)
            else:
                bid, ask = _number(row, "bid", where), _number(row, "ask", where)
                if ask < bid:
                    raise BadInput(f"{where}: ask = {ask}: below bid {bid}")
                values = (bid, ask, _number(row, "bid_size", where, False), _number(row, "ask_size", where, False))
            seen.add(symbol)
            if symbols is None or symbol in symbols:
                if lo <= ts < hi:
                    parsed.append((ts, symbol, values))
                elif ts < lo and self.kind == "bars":
                    history.append(BarRow(symbol, ts, *values))
        if symbols is not None:
            unknown = [s for s in symbols if s not in seen]
            if unknown:
                raise BadInput(f"--symbols: {','.join(unknown)} not in {path} (it has {','.join(sorted(seen))})")
        self.symbols = tuple(symbols) if symbols is not None else tuple(sorted(seen))
        parsed.sort(key=lambda r: r[0])
        self.rows = parsed
        # Every bar, not only those before --start: a walk-forward fold warms up on the
        # bars before its own window; the market never serves a bar after the simulated now.
        self.market = FileMarket(
            self.symbols, history + [BarRow(sym, ts, *v) for ts, sym, v in parsed] if self.kind == "bars" else history
        )

    def _read(self) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
        if self.path.suffix.lower() == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise BadInput(
                    f"--file {self.path}: reading Parquet needs pyarrow (pip install pyarrow), or give a CSV"
                ) from None
            table = pq.read_table(self.path)
            records = table.to_pylist()
            return [(i + 1, r) for i, r in enumerate(records)], list(table.column_names)
        with self.path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            return [(reader.line_num, row) for row in reader], columns

    def bars_between(self, first: dt.date, last: dt.date) -> dict[str, list[Any]]:
        """Each symbol's minute bars of [first, last] (walk-forward training), as `Bar` messages."""
        from stockade.codecs.messages import Bar

        if self.kind != "bars":
            raise BadInput(f"--walk-forward trains on bars; {self.path} holds quotes")
        lo, hi = _date_ns(first), _date_ns(last + dt.timedelta(days=1))
        out: dict[str, list[Any]] = {s: [] for s in self.symbols}
        for ts, symbol, (o, h, lo_, c, v) in self.rows:
            if lo <= ts < hi:
                out[symbol].append(Bar(symbol, o, h, lo_, c, v, ts))
        return out

    def days(self, spread_bps: float, size: float) -> Iterator[Day]:
        if self.kind == "bars":
            bars = (BarRow(s, ts, *v) for ts, s, v in self.rows)
            yield from days_from_bars(bars, spread_bps, size)
            return
        current: str | None = None
        events: list[Quote | Trade] = []
        for ts, symbol, (bid, ask, bs, az) in self.rows:
            day = _day_of(ts)
            if current is not None and day != current:
                yield Day(current, events, 0)
                events = []
            current = day
            events.append(Quote(symbol, bid, ask, bs, az, ts, ts))
        if current is not None and events:
            yield Day(current, events, 0)


# ---- alpaca ---------------------------------------------------------------------------

WARMUP_DAYS = 7  # calendar days of bars before --start fetched for the analyzers' warm-up


class AlpacaSource:
    """Minute bars from Alpaca's historical data API (alpaca-py), cached on disk.

    The cache file is named by what was asked (symbols, dates, feed, URL), so a
    rerun of the same request reads it and makes no call. Keys come from the
    environment (APCA_API_KEY_ID / APCA_API_SECRET_KEY), never from settings.
    """

    def __init__(
        self,
        symbols: tuple[str, ...],
        start: dt.date,
        end: dt.date,
        keys: tuple[str, str],
        data_url: str,
        feed: str,
        cache_dir: Path,
    ) -> None:
        import hashlib
        import json

        self.symbols = symbols
        request = {
            "symbols": list(symbols),
            "start": start.isoformat(),
            "end": end.isoformat(),
            "feed": feed,
            "url": data_url,
            "warmup_days": WARMUP_DAYS,
        }
        name = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:20]
        self.cache = cache_dir / f"alpaca-bars-{name}.csv"
        self.fetched = False
        if not self.cache.exists():
            rows = self._fetch(start, end, keys, data_url, feed)
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache.with_suffix(".tmp")
            with tmp.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(BAR_COLUMNS)
                for r in rows:
                    w.writerow(
                        (r.ts_ns, r.symbol, repr(r.open), repr(r.high), repr(r.low), repr(r.close), repr(r.volume))
                    )
            tmp.replace(self.cache)  # whole or absent: an interrupted fetch is fetched again
            self.fetched = True
        self._file = FileSource(self.cache, symbols, start, end)
        self.rows, self.market, self.kind = self._file.rows, self._file.market, self._file.kind

    def _fetch(self, start: dt.date, end: dt.date, keys: tuple[str, str], data_url: str, feed: str) -> list[BarRow]:
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame

        from stockade.broker.rest import data_feed, make_data_client, redact

        client = make_data_client(keys[0], keys[1], data_url)
        first = dt.datetime.combine(start - dt.timedelta(days=WARMUP_DAYS), dt.time(0), dt.UTC)
        last = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(0), dt.UTC)
        try:
            data = client.get_stock_bars(
                StockBarsRequest(
                    symbol_or_symbols=list(self.symbols),
                    timeframe=TimeFrame.Minute,
                    start=first,
                    end=last,
                    feed=data_feed(feed),
                )
            ).data
        except Exception as exc:  # any failure: one line, exit 2
            raise BadInput(f"--source alpaca: fetching bars failed: {redact(exc)}") from None
        rows = [
            BarRow(
                sym,
                int(b.timestamp.timestamp()) * NS,
                float(b.open),
                float(b.high),
                float(b.low),
                float(b.close),
                float(b.volume),
            )
            for sym, bars in data.items()
            for b in bars
        ]
        rows.sort(key=lambda r: (r.ts_ns, self.symbols.index(r.symbol) if r.symbol in self.symbols else 0))
        return rows

    def days(self, spread_bps: float, size: float) -> Iterator[Day]:
        return self._file.days(spread_bps, size)

    def bars_between(self, first: dt.date, last: dt.date) -> dict[str, list[Any]]:
        return self._file.bars_between(first, last)
