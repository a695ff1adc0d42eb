"""Per-symbol feature state: indicators fed by bars and quotes.

When strategies evaluate
------------------------
On every quote. Indicators are *committed* only on bar close (1-minute bars,
from history or built from live quotes), so their meaning does not depend
on how busy the quote feed is. On each quote the snapshot shows every
bar-based indicator "as if the forming bar closed at this mid" (each
indicator's O(1) `peek`), so a strategy reacts within the minute and,
at the bar boundary, sees exactly what the bar-close evaluation would see.
No indicator state is mutated by a quote beyond the forming bar's OHLC.

Breakout levels (`high_n`, `low_n`) are over the last N *closed* bars, so
"price above the N-bar high" means the live price has left the range that
completed bars set.

Bars from quotes
----------------
Quotes are bucketed by their venue timestamp (`ts_ns`) into bars of
`bar_seconds` starting on the epoch grid, the same way Alpaca stamps
historical bars (bar time = start of the minute). A bar closes when the
first quote of a later bucket arrives, or when `roll(now_ns)` is called
(a timer, so a quiet symbol still closes its bar). Buckets with no quotes
produce no bar, like Alpaca's bars for minutes without trades.

Bar prices from quotes are mids; history bars are trade prices. Quotes
carry no traded volume, so a quote-built bar's volume is the traded size
fed through `on_trade` when there is any, else the quote count. The volume
ratio resets whenever bar volume changes unit (shares vs quote count) so it
never compares one against the other; it is warm again after N bars.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

from stockade.codecs.messages import Bar, Quote
from stockade.config.params import MOMENTUM_BARS, FeatureParams
from stockade.trading.indicators import (
    ATR,
    EMA,
    MACD,
    RSI,
    SMA,
    Bollinger,
    RateOfChange,
    ReturnWindow,
    RollingExtreme,
    Volatility,
    VolumeRatio,
    percent_b,
)


class Features(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A frozen snapshot of one symbol's indicators. None = not warm yet."""

    symbol: str
    ts_ns: int
    price: float
    bid: float | None
    ask: float | None
    spread_bps: float | None
    sma_fast: float | None
    sma_slow: float | None
    ema_fast: float | None
    ema_slow: float | None
    rsi: float | None
    macd: float | None
    macd_signal: float | None
    macd_hist: float | None
    bb_upper: float | None
    bb_mid: float | None
    bb_lower: float | None
    bb_width: float | None
    volume_ratio: float | None
    atr: float | None
    high_n: float | None
    low_n: float | None
    bars_seen: int
    # Bollinger %B: 0 at the lower band, 1 at the upper (0.5 with no variance).
    pct_b: float | None = None
    # Sample std of the last `vol_period` one-bar log returns (per bar).
    volatility: float | None = None
    # price / close n bars ago - 1.
    mom_1: float | None = None
    mom_5: float | None = None
    mom_10: float | None = None
    # The last `return_window` one-bar log returns, oldest first; () until known.
    returns: tuple[float, ...] = ()


class _FormingBar:
    __slots__ = ("start_ns", "open", "high", "low", "close", "volume", "ticks", "traded")

    def __init__(self, start_ns: int, price: float) -> None:
        self.start_ns = start_ns
        self.open = self.high = self.low = self.close = price
        self.volume = 0.0  # traded size from on_trade
        self.ticks = 0  # quotes seen
        self.traded = False

    def add(self, price: float) -> None:
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.ticks += 1

    @property
    def bar_volume(self) -> float:
        return self.volume if self.traded else float(self.ticks)

    @property
    def unit(self) -> str:
        return "shares" if self.traded else "quotes"


class FeatureState:
    """Indicators and the forming bar for one symbol. Not thread-safe: one owner."""

    def __init__(self, symbol: str, params: FeatureParams | None = None) -> None:
        p = params or FeatureParams()
        self.symbol = symbol
        self.params = p
        self._warmup_bars = p.warmup_bars  # computed by the (frozen) params on each read; `ready` runs per quote
        self._bar_ns = int(p.bar_seconds) * 1_000_000_000
        if self._bar_ns <= 0:
            raise ValueError(f"bar_seconds must be positive, got {p.bar_seconds!r}")
        self._sma_fast = SMA(p.sma_fast)
        self._sma_slow = SMA(p.sma_slow)
        self._ema_fast = EMA(p.ema_fast)
        self._ema_slow = EMA(p.ema_slow)
        self._rsi = RSI(p.rsi)
        self._macd = MACD(p.macd_fast, p.macd_slow, p.macd_signal)
        self._bb = Bollinger(p.bb_period, p.bb_k)
        self._vol = VolumeRatio(p.volume_n)
        self._atr = ATR(p.atr)
        self._high_n = RollingExtreme(p.breakout_n, "max")
        self._low_n = RollingExtreme(p.breakout_n, "min")
        self._volatility = Volatility(p.vol_period)
        self._mom_1, self._mom_5, self._mom_10 = (RateOfChange(n) for n in MOMENTUM_BARS)
        self._returns = ReturnWindow(p.return_window)
        self._volume_unit: str | None = None
        self._last_bar_start: int | None = None  # start of the last committed bar
        self._last_close: float | None = None
        self._forming: _FormingBar | None = None
        # Traded size stamped after the forming bar's bucket, waiting for the
        # quote that opens that bucket's bar (a trade can beat it by a flush).
        self._early_bucket: int | None = None
        self._early_volume = 0.0
        self._quote: Quote | None = None
        self.bars_seen = 0

    # ---- inputs --------------------------------------------------------------

    def warm_up(self, bars: Iterable[Bar]) -> int:
        """Commit historical bars (any order; duplicates ignored). Returns bars used."""
        before = self.bars_seen
        for bar in sorted(bars, key=lambda b: b.ts_ns):
            self.on_bar(bar)
        return self.bars_seen - before

    def on_bar(self, bar: Bar) -> bool:
        """Commit a complete bar (history or a streamed bar). Returns False if ignored.

        A bar for the bucket being built from quotes replaces that forming bar
        (a venue bar is the better record); bars at or before the last
        committed one are duplicates and are ignored.
        """
        start = self._bucket(bar.ts_ns)
        if self._last_bar_start is not None and start <= self._last_bar_start:
            return False
        if not (_finite_positive(bar.close) and _finite_positive(bar.high) and _finite_positive(bar.low)):
            return False
        fb = self._forming
        if fb is not None:
            if fb.start_ns < start:
                self._commit_forming(fb)
            else:
                self._forming = None  # same or later bucket: the venue bar wins
        self._commit(start, bar.high, bar.low, bar.close, bar.volume, "shares")
        return True

    def on_quote(self, q: Quote) -> bool:
        """Take one quote: update price and spread, build the forming bar.

        Returns True when the quote closed a bar (indicators advanced).
        Crossed, non-positive and out-of-order quotes are ignored.
        """
        if not (_finite_positive(q.bid) and _finite_positive(q.ask)) or q.ask < q.bid:
            return False
        last = self._quote
        if last is not None and q.ts_ns < last.ts_ns:
            return False
        self._quote = q
        mid = (q.bid + q.ask) * 0.5
        start = self._bucket(q.ts_ns)
        if self._last_bar_start is not None and start <= self._last_bar_start:
            return False  # a committed bar already covers this time
        closed = False
        fb = self._forming
        if fb is not None and start > fb.start_ns:
            self._commit_forming(fb)
            fb = None
            closed = True
        if fb is None:
            fb = self._forming = _FormingBar(start, mid)
            if self._early_bucket is not None:
                if self._early_bucket == start:
                    fb.volume, fb.traded = self._early_volume, True
                self._early_bucket, self._early_volume = None, 0.0
        fb.add(mid)
        return closed

    def on_trade(self, price: float, size: float, ts_ns: int) -> None:
        """Add traded size to the forming bar's volume (optional feed).

        Size stamped in a later bucket than the forming bar is held for that
        bucket's bar; size for a bucket already closed is dropped.
        """
        if not size > 0:
            return
        fb = self._forming
        bucket = self._bucket(ts_ns)
        if fb is not None and bucket == fb.start_ns:
            fb.volume += float(size)
            fb.traded = True
        elif (fb is None or bucket > fb.start_ns) and (self._last_bar_start is None or bucket > self._last_bar_start):
            if self._early_bucket != bucket:
                self._early_bucket, self._early_volume = bucket, 0.0
            self._early_volume += float(size)

    def roll(self, now_ns: int) -> bool:
        """Close the forming bar if its bucket has ended by `now_ns` (timer)."""
        fb = self._forming
        if fb is not None and now_ns >= fb.start_ns + self._bar_ns:
            self._commit_forming(fb)
            return True
        return False

    # ---- output --------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Enough bars for every price indicator (volume ratio may lag after a unit reset)."""
        return self.bars_seen >= self._warmup_bars

    def features(self) -> Features | None:
        """Snapshot of the indicators at the latest price; None before any price."""
        q = self._quote
        fb = self._forming
        if q is not None and fb is not None:
            price = fb.close
            return self._snapshot(price, fb.high, fb.low, fb.bar_volume, fb.unit, q.ts_ns, q)
        if q is not None:
            # quote inside an already committed bar: no forming bar to peek with
            return self._committed_snapshot((q.bid + q.ask) * 0.5, q.ts_ns, q)
        if self._last_close is not None:
            return self._committed_snapshot(self._last_close, self._last_bar_start or 0, None)
        return None

    # ---- internals -----------------------------------------------------------

    def _bucket(self, ts_ns: int) -> int:
        return ts_ns - ts_ns % self._bar_ns

    def _commit_forming(self, fb: _FormingBar) -> None:
        self._forming = None
        self._commit(fb.start_ns, fb.high, fb.low, fb.close, fb.bar_volume, fb.unit)

    def _commit(self, start: int, high: float, low: float, close: float, volume: float, unit: str) -> None:
        if unit != self._volume_unit:
            if self._volume_unit is not None:
                self._vol.reset()
            self._volume_unit = unit
        self._sma_fast.update(close)
        self._sma_slow.update(close)
        self._ema_fast.update(close)
        self._ema_slow.update(close)
        self._rsi.update(close)
        self._macd.update(close)
        self._bb.update(close)
        self._vol.update(volume)
        self._atr.update(high, low, close)
        self._high_n.update(high)
        self._low_n.update(low)
        self._volatility.update(close)
        self._mom_1.update(close)
        self._mom_5.update(close)
        self._mom_10.update(close)
        self._returns.update(close)
        self._last_bar_start = start
        self._last_close = float(close)
        self.bars_seen += 1

    def _snapshot(
        self, price: float, high: float, low: float, volume: float, unit: str, ts_ns: int, q: Quote
    ) -> Features:
        macd = self._macd.peek(price)
        bb = self._bb.peek(price)
        # Volume already done in the forming bar confirms; never project it.
        vr = self._vol.value
        if unit == self._volume_unit:
            forming = self._vol.peek(volume)
            if forming is not None and (vr is None or forming > vr):
                vr = forming
        return Features(
            symbol=self.symbol,
            ts_ns=ts_ns,
            price=price,
            bid=q.bid,
            ask=q.ask,
            spread_bps=q.spread_bps,
            sma_fast=self._sma_fast.peek(price),
            sma_slow=self._sma_slow.peek(price),
            ema_fast=self._ema_fast.peek(price),
            ema_slow=self._ema_slow.peek(price),
            rsi=self._rsi.peek(price),
            macd=macd[0] if macd else None,
            macd_signal=macd[1] if macd else None,
            macd_hist=macd[2] if macd else None,
            bb_upper=bb[0] if bb else None,
            bb_mid=bb[1] if bb else None,
            bb_lower=bb[2] if bb else None,
            bb_width=bb[3] if bb else None,
            volume_ratio=vr,
            atr=self._atr.peek(high, low, price),
            high_n=self._high_n.value,
            low_n=self._low_n.value,
            bars_seen=self.bars_seen,
            pct_b=percent_b(price, bb) if bb else None,
            volatility=self._volatility.peek(price),
            mom_1=self._mom_1.peek(price),
            mom_5=self._mom_5.peek(price),
            mom_10=self._mom_10.peek(price),
            returns=self._returns.peek(price),
        )

    def _committed_snapshot(self, price: float, ts_ns: int, q: Quote | None) -> Features:
        macd = self._macd.value
        bb = self._bb.value
        return Features(
            symbol=self.symbol,
            ts_ns=ts_ns,
            price=price,
            bid=q.bid if q else None,
            ask=q.ask if q else None,
            spread_bps=q.spread_bps if q else None,
            sma_fast=self._sma_fast.value,
            sma_slow=self._sma_slow.value,
            ema_fast=self._ema_fast.value,
            ema_slow=self._ema_slow.value,
            rsi=self._rsi.value,
            macd=macd[0] if macd else None,
            macd_signal=macd[1] if macd else None,
            macd_hist=macd[2] if macd else None,
            bb_upper=bb[0] if bb else None,
            bb_mid=bb[1] if bb else None,
            bb_lower=bb[2] if bb else None,
            bb_width=bb[3] if bb else None,
            volume_ratio=self._vol.value,
            atr=self._atr.value,
            high_n=self._high_n.value,
            low_n=self._low_n.value,
            bars_seen=self.bars_seen,
            pct_b=percent_b(price, bb) if bb else None,
            volatility=self._volatility.value,
            mom_1=self._mom_1.value,
            mom_5=self._mom_5.value,
            mom_10=self._mom_10.value,
            returns=self._returns.value,
        )


def _finite_positive(x: float) -> bool:
    return x > 0.0 and math.isfinite(x)
