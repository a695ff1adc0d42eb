"""Warm-up history for many symbols at once: each symbol's last `n` one-minute bars, many symbols a request.

One bars request per analyzer was 500 data calls to start 500 symbols, past
the free plan's 200 calls a minute (300 analyzers started cold). Alpaca's
`/v2/stocks/bars` takes a list of symbols and answers sorted by symbol, then
time; its `limit` counts every bar of the answer, not each symbol's, and the
rest comes page by page with `next_page_token` (alpaca-py follows it). So
the time window, not `limit`, bounds each symbol's share: the first pass asks
for the last `1.25n` minutes (enough while the market trades); symbols still
short of `n` bars are asked again over a day, then over five (a night, a
weekend, a holiday), as one request per pass and chunk of symbols.

The first analyzer to ask fetches for itself and every symbol not served
yet; the others then find theirs waiting. A symbol's bars are handed out
once (an analyzer restarted later asks afresh, for bars up to its own now),
and none older than `fresh_s` is handed out. After a failed fetch, asks fail
at once for `retry_s` without a request, so a data API that is down costs
one call, not one per symbol (each analyzer starts cold and retries later).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from stockade.codecs.messages import Bar
from stockade.supervisors import fence

log = logging.getLogger(__name__)

PAGE_BARS = 10_000  # Alpaca's largest page
MAX_PAGES = 50  # per request and chunk: a bound on one fetch, whatever the window holds
CHUNK_SYMBOLS = 200  # symbols per request (the list travels in the URL)
# Longest an analyzer waits for another's fetch, declared busy (not hung) meanwhile.
WAIT_S = 120.0


def lookbacks(n: int) -> tuple[timedelta, ...]:
    """The windows tried in turn for symbols still short of `n` bars."""
    # n minutes and a quarter more: while the market trades, a minute without a bar is rare.
    return (timedelta(minutes=n + max(n // 4, 10)), timedelta(days=1), timedelta(days=5))


class WarmupBars:
    """Shared by every analyzer of a tree: `bars(symbol, now_ns)` -> up to `n` newest bars, newest first.

    `client()` makes an alpaca-py `StockHistoricalDataClient` made with
    `raw_data=True` (a fresh one per fetch): the answer as the wire's dicts,
    not pydantic models, so 60,000 bars (500 symbols) parse in a tenth of the time.
    """

    def __init__(
        self,
        client: Callable[[], Any],
        symbols: Iterable[str],
        n: int,
        feed: Any,
        *,
        chunk: int = CHUNK_SYMBOLS,
        fresh_s: float = 60.0,
        retry_s: float = 10.0,
    ) -> None:
        self._client = client
        self._pending = dict.fromkeys(symbols)  # never served yet, in the order given
        self.n = n
        self._feed = feed
        self._chunk = max(1, chunk)
        self._fresh_s = fresh_s
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._ready: dict[str, tuple[float, list[Bar]]] = {}
        self._failed: tuple[float, str] | None = None

    def bars(self, symbol: str, now_ns: int) -> list[Any]:
        """`symbol`'s newest `n` one-minute bars up to `now_ns`, newest first.

        Raises what the data API raised (the caller starts cold and retries).
        Waiting for another analyzer's fetch is declared bounded work
        (`supervisors.fence.busy`): busy, not hung, for its supervisor and its pool.
        """
        with fence.busy(WAIT_S, "waiting for warm-up bars"):
            if not self._lock.acquire(timeout=WAIT_S):
                raise TimeoutError(f"no warm-up bars for {symbol} after waiting {WAIT_S:g}s for another fetch")
        try:
            got = self._ready.pop(symbol, None)
            if got is not None and time.monotonic() - got[0] <= self._fresh_s:
                return got[1]
            if self._failed is not None and time.monotonic() - self._failed[0] < self._retry_s:
                raise RuntimeError(f"the bars request for the warm-up failed moments ago: {self._failed[1]}")
            wanted = [symbol] + [s for s in self._pending if s != symbol]
            try:
                with fence.busy(WAIT_S, f"warm-up bars for {len(wanted)} symbols"):
                    fetched = self._fetch(wanted, now_ns)
            except fence.Fenced:
                raise  # the asker was replaced, the data API did not fail: the next asker tries afresh
            except Exception as exc:
                self._failed = (time.monotonic(), str(exc).splitlines()[0][:200] if str(exc) else repr(exc))
                raise
            self._failed = None
            at = time.monotonic()
            for s in wanted:
                self._pending.pop(s, None)
                if s != symbol:
                    self._ready[s] = (at, fetched.get(s, []))
            return fetched.get(symbol, [])
        finally:
            self._lock.release()

    def _fetch(self, symbols: Sequence[str], now_ns: int) -> dict[str, list[Bar]]:
        end = datetime.fromtimestamp(now_ns / 1e9, UTC)
        client = self._client()
        out: dict[str, list[Bar]] = {}
        short = list(symbols)
        for lookback in lookbacks(self.n):
            for i in range(0, len(short), self._chunk):
                got = self._request(client, short[i : i + self._chunk], end - lookback, end)
                for s, bars in got.items():
                    if len(bars) > len(out.get(s, ())):
                        out[s] = bars[: self.n]
            short = [s for s in short if len(out.get(s, ())) < self.n]
            if not short:
                break
        return out

    def _request(self, client: Any, symbols: list[str], start: datetime, end: datetime) -> dict[str, list[Bar]]:
        from alpaca.common.enums import Sort
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame

        request = StockBarsRequest(
            symbol_or_symbols=symbols,
            timeframe=TimeFrame.Minute,
            start=start,
            end=end,
            limit=PAGE_BARS * MAX_PAGES,
            feed=self._feed,
            sort=Sort.DESC,  # within each symbol, newest first: its first `n` are the ones wanted
        )
        raw = client.get_stock_bars(request)
        return {s: [_bar(s, b) for b in rows] for s, rows in raw.items()}


def _bar(symbol: str, b: dict[str, Any]) -> Bar:
    """One bar of /v2/stocks/bars as the wire has it ({"t", "o", "h", "l", "c", "v", ...})."""
    ts = datetime.fromisoformat(b["t"])
    return Bar(symbol, float(b["o"]), float(b["h"]), float(b["l"]), float(b["c"]), float(b["v"]), _ns(ts))


def _ns(ts: datetime) -> int:
    """`ts` in integer nanoseconds since the epoch (no float rounding)."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
