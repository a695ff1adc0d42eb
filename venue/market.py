"""A seeded US-equity market: quotes, trades and 1-minute bars for the paper venue.

Determinism: every symbol draws from its own random stream seeded by
(seed, symbol), a fixed number of draws per tick, so the n-th tick's prices
are a pure function of (seed, symbol, n, quote_rate_hz) no matter how ticks
are scheduled. Only what is meant to follow the wall clock does: timestamps,
bar boundaries, and the intraday (U-shaped) volume profile scaling sizes.

Each symbol's price follows a regime chosen by a seeded Markov chain:
trending (drift), mean-reverting (pulled to where the regime began) or
volatile (2.5x the noise, 2.5x the spread). History (`bars`) is generated
backwards from the start price, so the last historical bar closes exactly where
the live market starts. In `always_open` mode it is a pure function of (seed,
symbol, minutes before the start): the k-th minute bar before the start is the
same whatever the wall-clock start time, with regime blocks counted backwards
from the start and flat volume, so the market an analyzer warms up from is
reproducible. In `nyse` mode it follows the real calendar instead, day by day
with a per-day seed: sessions, overnight gaps and the intraday volume shape.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Literal

import msgspec
import numpy as np

from stockade.venue.arrivals import QUOTE_ARRIVALS, ArrivalSchedule
from stockade.venue.clock import NEW_YORK, NS_PER_S, MarketClock, ns_to_new_york

log = logging.getLogger(__name__)

NS_PER_MIN = 60 * NS_PER_S
HISTORY_DAYS = 5 * 366  # how far back `bars` can reach before the start
LIVE_BARS_KEPT = 7 * 24 * 60  # completed live minute bars kept per symbol
OVERNIGHT_PROFILE = 0.15  # volume multiplier outside 09:30-16:00 New York
SESSION_MINUTES = 390
REGIME_BLOCK_MINUTES = 30  # history switches regime at most this often
_CHUNK_MINUTES = 48 * REGIME_BLOCK_MINUTES  # always_open history is drawn in chunks this long
MAX_EVENTS_PER_BATCH = 2_000  # run(): quotes per loop iteration before yielding to the websockets

# ---- events --------------------------------------------------------------------


class SimQuote(msgspec.Struct, frozen=True):
    """Top of book after one tick. Sizes in shares (round lots)."""

    symbol: str
    bid: float
    bid_size: int
    ask: float
    ask_size: int
    ts_ns: int
    exchange: str = "V"  # IEX
    tape: str = "C"
    conditions: tuple[str, ...] = ("R",)


class SimTrade(msgspec.Struct, frozen=True):
    symbol: str
    price: float
    size: int
    ts_ns: int
    id: int
    exchange: str = "V"
    tape: str = "C"
    conditions: tuple[str, ...] = ("@",)


class SimBar(msgspec.Struct, frozen=True):
    """An OHLCV bar; `ts_ns` is the start of its interval."""

    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: int
    trade_count: int
    vwap: float
    ts_ns: int


MarketEvent = SimQuote | SimTrade | SimBar

# ---- timeframes ----------------------------------------------------------------

TimeframeUnit = Literal["Min", "Hour", "Day", "Week", "Month"]
_UNIT_ALIASES: dict[str, TimeframeUnit] = {
    "Min": "Min",
    "T": "Min",
    "Hour": "Hour",
    "H": "Hour",
    "Day": "Day",
    "D": "Day",
    "Week": "Week",
    "W": "Week",
    "Month": "Month",
    "M": "Month",
}
_ALLOWED_AMOUNTS = {"Min": range(1, 60), "Hour": range(1, 24), "Day": (1,), "Week": (1,), "Month": (1, 2, 3, 4, 6, 12)}


class Timeframe(msgspec.Struct, frozen=True):
    """A bar width as Alpaca spells it: 1-59Min, 1-23Hour, 1Day, 1Week, 1/2/3/4/6/12Month."""

    amount: int
    unit: TimeframeUnit

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        """Parse "5Min", "1Hour", "1D"...; ValueError when Alpaca would reject it."""
        digits = ""
        for ch in text:
            if not ch.isdigit():
                break
            digits += ch
        unit = _UNIT_ALIASES.get(text[len(digits) :])
        amount = int(digits) if digits else 0
        if unit is None or amount not in _ALLOWED_AMOUNTS[unit]:
            raise ValueError(f"invalid timeframe {text!r}")
        return cls(amount, unit)

    @classmethod
    def minutes(cls, n: int) -> Timeframe:
        if n % (24 * 60) == 0 and n // (24 * 60) == 1:
            return cls(1, "Day")
        if n % 60 == 0 and n < 24 * 60:
            return cls(n // 60, "Hour")
        return cls(n, "Min")

    @property
    def intraday_ns(self) -> int | None:
        """Width in ns for epoch-aligned intraday frames; None for Day and longer."""
        if self.unit == "Min":
            return self.amount * NS_PER_MIN
        if self.unit == "Hour":
            return self.amount * 60 * NS_PER_MIN
        return None

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


# ---- per-symbol character -----------------------------------------------------


class SymbolProfile(msgspec.Struct, frozen=True):
    start_price: float
    daily_vol: float  # fraction, one regular session
    spread_bps: float  # typical quoted spread
    daily_volume: int  # shares, regular session
    tape: str  # A: NYSE, B: Arca/other, C: Nasdaq


_KNOWN = {
    "AAPL": SymbolProfile(190.0, 0.016, 1.0, 55_000_000, "C"),
    "MSFT": SymbolProfile(420.0, 0.014, 1.0, 20_000_000, "C"),
    "NVDA": SymbolProfile(125.0, 0.030, 1.5, 250_000_000, "C"),
    "AMZN": SymbolProfile(185.0, 0.020, 1.2, 40_000_000, "C"),
    "GOOGL": SymbolProfile(170.0, 0.018, 1.2, 25_000_000, "C"),
    "META": SymbolProfile(500.0, 0.022, 1.5, 15_000_000, "C"),
    "TSLA": SymbolProfile(250.0, 0.035, 2.0, 100_000_000, "C"),
    "AMD": SymbolProfile(150.0, 0.030, 1.8, 45_000_000, "C"),
    "SPY": SymbolProfile(500.0, 0.010, 0.5, 60_000_000, "B"),
    "QQQ": SymbolProfile(440.0, 0.013, 0.6, 35_000_000, "C"),
    "IWM": SymbolProfile(200.0, 0.014, 0.8, 30_000_000, "B"),
    "JPM": SymbolProfile(200.0, 0.015, 1.2, 9_000_000, "A"),
    "XOM": SymbolProfile(115.0, 0.015, 1.3, 15_000_000, "A"),
}


def stable_hash(text: str) -> int:
    """64-bit hash that, unlike `hash()`, is the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def symbol_profile(symbol: str, seed: int) -> SymbolProfile:
    """Plausible character for a symbol; unknown ones are derived from a hash."""
    jitter = 1.0 + ((stable_hash(f"{seed}:{symbol}:price") % 2001) - 1000) / 1000 * 0.03
    known = _KNOWN.get(symbol)
    if known is not None:
        return msgspec.structs.replace(known, start_price=round(known.start_price * jitter, 2))
    h = stable_hash(symbol)
    price = 20.0 * (20.0 ** ((h % 10_000) / 10_000))  # log-uniform 20..400
    return SymbolProfile(
        start_price=round(price * jitter, 2),
        daily_vol=0.012 + ((h >> 16) % 1000) / 1000 * 0.025,
        spread_bps=1.0 + ((h >> 32) % 1000) / 1000 * 3.0,
        daily_volume=2_000_000 + (h >> 40) % 20_000_000,
        tape="ABC"[(h >> 8) % 3],
    )


# ---- regimes -------------------------------------------------------------------

TREND, REVERT, VOLATILE = 0, 1, 2
REGIME_NAMES = ("trending", "mean_reverting", "volatile")
_MEAN_MINUTES = (40.0, 60.0, 15.0)  # mean regime duration
_NEXT = ((REVERT, VOLATILE, 0.6), (TREND, VOLATILE, 0.7), (TREND, REVERT, 0.5))  # (a, b, P(a))
_VOL_MULT = (1.0, 0.8, 2.5)
_SPREAD_MULT = (1.0, 1.0, 2.5)
_TREND_DRIFT = 0.12  # per minute, in units of the per-minute sigma
_REVERT_KAPPA = 0.1  # per minute: half-life ~7 minutes
_HOME_KAPPA = 1.0 / (5 * 24 * 60)  # weak pull to the start price over days


def _next_regime(current: int, u: float) -> int:
    a, b, p_a = _NEXT[current]
    return a if u < p_a else b


def intraday_profile(ts_ns: int) -> float:
    """Volume multiplier at `ts_ns`: U-shaped over 09:30-16:00 New York, low outside."""
    local = ns_to_new_york(ts_ns)
    minute = (local.hour * 60 + local.minute) - (9 * 60 + 30)
    if not 0 <= minute < SESSION_MINUTES:
        return OVERNIGHT_PROFILE
    return float(_u_shape(np.array([minute / SESSION_MINUTES]))[0])


def _u_shape(x: np.ndarray) -> np.ndarray:
    # Heavy at the open, heavier than midday at the close, mean 1 over the session.
    return (0.55 + 1.9 * np.exp(-x / 0.05) + 1.1 * np.exp(-(1.0 - x) / 0.06)) / 0.7108


# ---- live state of one symbol --------------------------------------------------

_DRAWS_U = 9  # uniforms per tick
_DRAWS_N = 2  # normals per tick
_BLOCK = 1024  # ticks drawn at once


class _LiveSymbol:
    """The ticking state of one symbol. Every tick consumes the same draws."""

    def __init__(self, symbol: str, profile: SymbolProfile, seed: int, rate_hz: float) -> None:
        self.symbol = symbol
        self.profile = profile
        self.rng = np.random.default_rng([seed & 0xFFFFFFFF, stable_hash(symbol) & 0xFFFFFFFF, 1])
        self.tick = 0
        self.log_home = math.log(profile.start_price)
        self.log_price = self.log_home
        self.regime = REVERT
        self.trend_dir = 1.0
        self.regime_anchor = self.log_price
        minutes_per_tick = 1.0 / (60.0 * rate_hz)
        self.minutes_per_tick = minutes_per_tick
        self.sigma_min = profile.daily_vol / math.sqrt(SESSION_MINUTES)
        self.sigma_tick = self.sigma_min * math.sqrt(minutes_per_tick)
        self.p_trade = 0.5
        trades_per_min = 60.0 * rate_hz * self.p_trade
        self.mean_trade_shares = profile.daily_volume / SESSION_MINUTES / trades_per_min
        self._u: list[list[float]] = []
        self._n: list[list[float]] = []
        self._i = _BLOCK
        self.next_trade_id = stable_hash(f"{seed}:{symbol}:tid") % 10**9 * 1000
        self.quote = self._make_quote(0.0, 0.5, 0.5, 1.0, 0)  # before the first tick
        self.trade: SimTrade | None = None
        self.bar_builder: _BarBuilder = _BarBuilder(symbol)

    def _draws(self) -> tuple[list[float], list[float]]:
        if self._i >= _BLOCK:
            self._u = self.rng.random((_BLOCK, _DRAWS_U)).tolist()
            self._n = self.rng.standard_normal((_BLOCK, _DRAWS_N)).tolist()
            self._i = 0
        i = self._i
        self._i += 1
        return self._u[i], self._n[i]

    def step(self, ts_ns: int, volume_scale: float) -> tuple[SimTrade | None, SimQuote]:
        """Advance one tick: maybe a trade against the standing quote, then a new quote."""
        u, n = self._draws()
        self.tick += 1
        trade = None
        if u[0] < self.p_trade:
            trade = self._make_trade(u[1], u[2], ts_ns, volume_scale)
        # Regime chain.
        if u[3] < self.minutes_per_tick / _MEAN_MINUTES[self.regime]:
            self.regime = _next_regime(self.regime, u[4])
            self.trend_dir = 1.0 if u[5] < 0.5 else -1.0
            self.regime_anchor = self.log_price
        # Price.
        m = self.minutes_per_tick
        drift = -_HOME_KAPPA * (self.log_price - self.log_home) * m
        if self.regime == TREND:
            drift += self.trend_dir * _TREND_DRIFT * self.sigma_min * m
        elif self.regime == REVERT:
            drift -= _REVERT_KAPPA * (self.log_price - self.regime_anchor) * m
        self.log_price += drift + self.sigma_tick * _VOL_MULT[self.regime] * n[0]
        self.quote = self._make_quote(n[1], u[6], u[7], volume_scale, ts_ns)
        return trade, self.quote

    def _make_quote(self, spread_noise: float, u_bid: float, u_ask: float, volume_scale: float, ts_ns: int) -> SimQuote:
        mid_cents = math.exp(self.log_price) * 100.0
        bps = self.profile.spread_bps * _SPREAD_MULT[self.regime] * (1.0 + 0.3 * abs(spread_noise))
        spread_cents = max(1, round(mid_cents * bps / 1e4))
        bid_cents = max(1, math.floor(mid_cents - spread_cents / 2.0))
        lots = 3.0 * volume_scale
        return SimQuote(
            symbol=self.symbol,
            bid=bid_cents / 100.0,
            bid_size=100 * (1 + int(-math.log(1.0 - u_bid) * lots)),
            ask=(bid_cents + spread_cents) / 100.0,
            ask_size=100 * (1 + int(-math.log(1.0 - u_ask) * lots)),
            ts_ns=ts_ns,
            tape=self.profile.tape,
        )

    def _make_trade(self, u_side: float, u_size: float, ts_ns: int, volume_scale: float) -> SimTrade:
        q = self.quote
        if u_side < 0.45:
            price = q.bid
        elif u_side < 0.9:
            price = q.ask
        else:  # hidden liquidity inside the spread, as on IEX
            price = round((q.bid + q.ask) / 2.0, 2)
        shares = max(1, round(-math.log(1.0 - u_size) * self.mean_trade_shares * volume_scale))
        if shares >= 100:
            shares = shares // 100 * 100
        self.next_trade_id += 1
        self.trade = SimTrade(self.symbol, price, shares, ts_ns, self.next_trade_id, tape=self.profile.tape)
        return self.trade


class _BarBuilder:
    """Builds 1-minute bars from trades; a bar is finished when its minute has passed."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.minute_ns = -1
        self.o = self.h = self.l = self.c = 0.0
        self.v = self.n = 0
        self.pv = 0.0

    def add(self, trade: SimTrade) -> None:
        minute = trade.ts_ns - trade.ts_ns % NS_PER_MIN
        if minute != self.minute_ns:
            self.minute_ns = minute
            self.o = self.h = self.l = trade.price
            self.v = self.n = 0
            self.pv = 0.0
        self.h = max(self.h, trade.price)
        self.l = min(self.l, trade.price)
        self.c = trade.price
        self.v += trade.size
        self.n += 1
        self.pv += trade.price * trade.size

    def finish_before(self, now_ns: int) -> SimBar | None:
        """The bar of a minute that ended before `now_ns`, once; None otherwise."""
        if self.minute_ns < 0 or now_ns < self.minute_ns + NS_PER_MIN or self.n == 0:
            return None
        bar = SimBar(
            self.symbol, self.o, self.h, self.l, self.c, self.v, self.n, round(self.pv / self.v, 4), self.minute_ns
        )
        self.n = 0
        self.minute_ns = -1
        return bar


# ---- history -------------------------------------------------------------------


class _DayBars(msgspec.Struct):
    """One New York date's minute bars as parallel arrays (may be empty)."""

    ts: np.ndarray
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray
    c: np.ndarray
    v: np.ndarray
    n: np.ndarray
    vw: np.ndarray


def _empty_day() -> _DayBars:
    z = np.zeros(0)
    zi = np.zeros(0, dtype=np.int64)
    return _DayBars(zi, z, z, z, z, zi, zi, z)


class _History:
    """Deterministic minute bars before the simulator's start, built backwards.

    nyse: day by day, each date seeded on its own (`_generate`). always_open: in
    chunks of minutes counted back from the start minute (`_chunk`), then cut
    into New York dates for `day`/`daily`.
    """

    def __init__(
        self,
        symbol: str,
        profile: SymbolProfile,
        seed: int,
        start_ns: int,
        clock: MarketClock,
        mean_trade_shares: float,
    ) -> None:
        self.symbol = symbol
        self.profile = profile
        self.seed = seed
        self.clock = clock
        self.start_minute_ns = start_ns - start_ns % NS_PER_MIN
        self.start_date = ns_to_new_york(self.start_minute_ns).date()
        self.earliest_date = self.start_date - timedelta(days=HISTORY_DAYS)
        self.mean_trade_shares = mean_trade_shares  # shares per trade, as live trading draws them
        self.sigma_min = profile.daily_vol / math.sqrt(SESSION_MINUTES)
        # Log close of each date's last slot; walked backwards lazily.
        self._anchor: dict[date, float] = {self.start_date: math.log(profile.start_price)}
        self._oldest = self.start_date
        self._daily: dict[date, tuple] = {}
        self._days: OrderedDict[date, _DayBars] = OrderedDict()
        # always_open: the path is indexed by minutes before the start, not by date.
        self.relative = clock.mode == "always_open"
        self._chunks: OrderedDict[int, _DayBars] = OrderedDict()  # relative chunks, by index
        # Chunk index -> (log close of its newest bar, regime and direction in force after it).
        self._chunk_state: list[tuple[float, int, float]] = []

    def _slots(self, day: date) -> np.ndarray:
        session = self.clock.session(day)
        if session is None:
            return np.zeros(0, dtype=np.int64)
        first = int(session.open.timestamp()) * NS_PER_S
        last = int(session.close.timestamp()) * NS_PER_S
        return np.arange(first, last, NS_PER_MIN, dtype=np.int64)

    def _walk_back_to(self, day: date) -> None:
        while self._oldest > day and self._oldest > self.earliest_date:
            d = self._oldest
            bars, total_return = self._generate(d, self._anchor[d])
            self._anchor[d - timedelta(days=1)] = self._anchor[d] - total_return
            self._oldest = d - timedelta(days=1)

    def day(self, day: date) -> _DayBars:
        """Minute bars of `day` (only minutes before the start on the start date)."""
        if day > self.start_date or day < self.earliest_date:
            return _empty_day()
        cached = self._days.get(day)
        if cached is not None:
            self._days.move_to_end(day)
            return cached
        if self.relative:
            return self._relative_day(day)
        self._walk_back_to(day)
        cached = self._days.get(day)  # the walk may just have built it
        return cached if cached is not None else self._generate(day, self._anchor[day])[0]

    def daily(self, day: date) -> tuple | None:
        """(ts, o, h, l, c, v, n, vw) of `day`'s history, or None without bars."""
        if day > self.start_date or day < self.earliest_date:
            return None
        if day not in self._daily:
            self.day(day)
        return self._daily.get(day)

    def _generate(self, day: date, anchor: float) -> tuple[_DayBars, float]:
        slots = self._slots(day)
        n_full = len(slots)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, stable_hash(self.symbol) & 0xFFFFFFFF, 2, day.toordinal()])
        eps = rng.standard_normal(n_full + 1)
        ext = np.abs(rng.standard_normal((2, n_full)))
        vol_noise = rng.lognormal(0.0, 0.35, n_full)
        vw_noise = rng.standard_normal(n_full)
        gap = rng.standard_normal() * self.profile.daily_vol * 0.3
        n_blocks = -(-n_full // REGIME_BLOCK_MINUTES)
        block_u = rng.random((max(n_blocks, 1), 3))
        if n_full == 0:
            return self._no_day(day), 0.0
        # Regime per block: a Markov chain, starting from the day's own draw.
        regimes = np.empty(n_blocks, dtype=np.int64)
        dirs = np.empty(n_blocks)
        regime = int(block_u[0, 0] * 3)
        direction = 1.0
        for b in range(n_blocks):
            u_switch, u_next, u_dir = block_u[b]
            if b == 0 or u_switch < REGIME_BLOCK_MINUTES / _MEAN_MINUTES[regime]:
                if b:
                    regime = _next_regime(regime, u_next)
                direction = 1.0 if u_dir < 0.5 else -1.0
            regimes[b] = regime
            dirs[b] = direction
        regime_of = np.repeat(regimes, REGIME_BLOCK_MINUTES)[:n_full]
        dir_of = np.repeat(dirs, REGIME_BLOCK_MINUTES)[:n_full]
        profile = self._profile(slots)
        sig = self.sigma_min * np.sqrt(profile) * np.take(_VOL_MULT, regime_of)
        r = self._regime_returns(regime_of, dir_of, sig, eps)
        g = np.zeros(n_full)
        g[0] = gap  # the overnight gap lands on the opening print (this path only runs in nyse mode)
        keep = n_full if day < self.start_date else int(np.searchsorted(slots, self.start_minute_ns))
        if keep == 0:
            return self._no_day(day), 0.0
        r, g, slots = r[:keep], g[:keep], slots[:keep]
        step = r + g
        bars, _ = self._bars_from_returns(
            slots,
            anchor,
            step,
            r,
            sig[:keep],
            ext[:, :keep],
            vol_noise[:keep],
            vw_noise[:keep],
            volume_profile=profile[:keep],
        )
        self._store_day(day, bars)
        return bars, float(step.sum())

    def _regime_returns(
        self, regime_of: np.ndarray, dir_of: np.ndarray, sig: np.ndarray, eps: np.ndarray
    ) -> np.ndarray:
        """Per-minute log returns: drift in a trend, mean reversion, else plain noise."""
        e_now, e_prev = eps[1:], eps[:-1]
        return np.where(
            regime_of == TREND,
            dir_of * _TREND_DRIFT * self.sigma_min + sig * e_now,
            np.where(regime_of == REVERT, sig * (e_now - 0.7 * e_prev), sig * e_now),
        )

    def _bars_from_returns(
        self,
        ts: np.ndarray,
        anchor: float,
        step: np.ndarray,
        r: np.ndarray,
        sig: np.ndarray,
        ext: np.ndarray,
        vol_noise: np.ndarray,
        vw_noise: np.ndarray,
        volume_profile: np.ndarray | None = None,
        clamp_ohc: bool = False,
    ) -> tuple[_DayBars, np.ndarray]:
        """Bars ending at log price `anchor`, from per-bar moves `step` (`r` within the bar).

        `step` differs from `r` only by gaps between bars; `volume_profile` scales the
        volume; `clamp_ohc` floors open/high/close at a cent like the low. Returns the
        bars and the cumulative sum of `step`.
        """
        cum = np.cumsum(step)
        log_close = anchor - (cum[-1] - cum)
        log_open = log_close - r
        o = np.round(np.exp(log_open) * 100.0) / 100.0
        c = np.round(np.exp(log_close) * 100.0) / 100.0
        wick = sig * 0.6
        h = np.maximum(np.round(np.maximum(o, c) * np.exp(ext[0] * wick) * 100.0) / 100.0, np.maximum(o, c))
        l = np.minimum(np.round(np.minimum(o, c) * np.exp(-ext[1] * wick) * 100.0) / 100.0, np.minimum(o, c))
        if clamp_ohc:
            o, h, c = np.maximum(o, 0.01), np.maximum(h, 0.01), np.maximum(c, 0.01)
        l = np.maximum(l, 0.01)
        volume: float | np.ndarray = self.profile.daily_volume / SESSION_MINUTES
        if volume_profile is not None:
            volume = volume * volume_profile
        v = np.maximum(1, np.round(volume * vol_noise)).astype(np.int64)
        n = np.maximum(1, np.round(v / self.mean_trade_shares)).astype(np.int64)
        vw = np.clip((h + l + c) / 3.0 + vw_noise * (h - l) * 0.1, l, h).round(4)
        return _DayBars(ts, o, h, l, c, v, n, vw), cum

    def _store_day(self, day: date, bars: _DayBars) -> None:
        """Cache `day`'s minute bars and its daily summary."""
        self._days[day] = bars
        if len(self._days) > 64:
            self._days.popitem(last=False)
        o, h, l, c, v, n, vw = bars.o, bars.h, bars.l, bars.c, bars.v, bars.n, bars.vw
        vol = int(v.sum())
        self._daily[day] = (
            _midnight_ns(day),
            float(o[0]),
            float(h.max()),
            float(l.min()),
            float(c[-1]),
            vol,
            int(n.sum()),
            round(float((vw * v).sum()) / vol, 4),
        )

    def _no_day(self, day: date) -> _DayBars:
        """`day` has no bars: forget any summary and return the empty day."""
        self._daily.pop(day, None)
        return _empty_day()

    # -- always_open: history as a function of minutes before the start --

    def _relative_day(self, day: date) -> _DayBars:
        """`day`'s minutes cut out of the start-relative path (see `_chunk`)."""
        lo_ns = _midnight_ns(day)
        hi_ns = min(_midnight_ns(day + timedelta(days=1)), self.start_minute_ns)
        if hi_ns <= lo_ns:
            return self._no_day(day)
        # Minute k (1 = the last bar before the start) starts at start - k minutes.
        k_new = (self.start_minute_ns - hi_ns) // NS_PER_MIN + 1
        k_old = (self.start_minute_ns - lo_ns) // NS_PER_MIN
        parts = []
        for i in range((k_old - 1) // _CHUNK_MINUTES, (k_new - 1) // _CHUNK_MINUTES - 1, -1):  # oldest first
            chunk = self._chunk(i)
            # Chunk i holds k = i*C+1 .. (i+1)*C, oldest first: k at position (i+1)*C - k.
            first = (i + 1) * _CHUNK_MINUTES - min(k_old, (i + 1) * _CHUNK_MINUTES)
            last = (i + 1) * _CHUNK_MINUTES - max(k_new, i * _CHUNK_MINUTES + 1)
            parts.append(
                tuple(
                    a[first : last + 1]
                    for a in (chunk.ts, chunk.o, chunk.h, chunk.l, chunk.c, chunk.v, chunk.n, chunk.vw)
                )
            )
        cols = [np.concatenate(col) for col in zip(*parts, strict=True)]
        ts, o, h, l, c, v, n, vw = cols
        ts = self.start_minute_ns + ts * NS_PER_MIN  # offsets (negative minutes) to epoch ns
        bars = _DayBars(ts, o, h, l, c, v, n, vw)
        self._store_day(day, bars)
        return bars

    def _chunk(self, index: int) -> _DayBars:
        """Chunk `index`: the minutes k = index*C+1 .. (index+1)*C before the start, oldest first.

        Its `ts` holds minute offsets from the start minute (-k), not epoch ns. The
        draws come from a generator seeded by (seed, symbol, index) and regime blocks
        are counted backwards from the start, so nothing depends on the wall clock.
        """
        cached = self._chunks.get(index)
        if cached is not None:
            self._chunks.move_to_end(index)
            return cached
        if not self._chunk_state:  # the start: its price, and a seeded regime in force
            u0 = np.random.default_rng(self._chunk_seed(-1)).random(2)
            self._chunk_state.append((math.log(self.profile.start_price), int(u0[0] * 3), 1.0 if u0[1] < 0.5 else -1.0))
        while len(self._chunk_state) <= index:  # walk back: each chunk starts where the newer one ends
            i = len(self._chunk_state) - 1
            chunk, state = self._generate_chunk(i, self._chunk_state[i])
            self._store_chunk(i, chunk)
            self._chunk_state.append(state)
        cached = self._chunks.get(index)
        if cached is None:
            cached, _ = self._generate_chunk(index, self._chunk_state[index])
            self._store_chunk(index, cached)
        return cached

    def _store_chunk(self, index: int, chunk: _DayBars) -> None:
        self._chunks[index] = chunk
        if len(self._chunks) > 16:
            self._chunks.popitem(last=False)

    def _chunk_seed(self, index: int) -> list[int]:
        return [self.seed & 0xFFFFFFFF, stable_hash(self.symbol) & 0xFFFFFFFF, 3, index + 1]

    def _generate_chunk(self, index: int, state: tuple[float, int, float]) -> tuple[_DayBars, tuple[float, int, float]]:
        anchor, regime, direction = state
        n_min = _CHUNK_MINUTES
        n_blocks = n_min // REGIME_BLOCK_MINUTES
        rng = np.random.default_rng(self._chunk_seed(index))
        eps = rng.standard_normal(n_min + 1)
        ext = np.abs(rng.standard_normal((2, n_min)))
        vol_noise = rng.lognormal(0.0, 0.35, n_min)
        vw_noise = rng.standard_normal(n_min)
        block_u = rng.random((n_blocks, 3))
        # Regime per block, newest block first: the chain runs backwards from the
        # start, so the regime in force at the start depends on the seed alone.
        regimes = np.empty(n_blocks, dtype=np.int64)
        dirs = np.empty(n_blocks)
        for b in range(n_blocks):
            u_switch, u_next, u_dir = block_u[b]
            if index or b:  # block 0 of chunk 0 keeps the seeded initial regime
                if u_switch < REGIME_BLOCK_MINUTES / _MEAN_MINUTES[regime]:
                    regime = _next_regime(regime, u_next)
                    direction = 1.0 if u_dir < 0.5 else -1.0
            regimes[b] = regime
            dirs[b] = direction
        # Oldest first from here on, like a day's bars.
        regime_of = np.repeat(regimes[::-1], REGIME_BLOCK_MINUTES)
        dir_of = np.repeat(dirs[::-1], REGIME_BLOCK_MINUTES)
        sig = self.sigma_min * np.take(_VOL_MULT, regime_of)  # flat: no wall-clock profile
        r = self._regime_returns(regime_of, dir_of, sig, eps)
        offsets = -np.arange((index + 1) * n_min, index * n_min, -1, dtype=np.int64)
        bars, cum = self._bars_from_returns(offsets, anchor, r, r, sig, ext, vol_noise, vw_noise, clamp_ohc=True)
        # The next (older) chunk starts from the regime in force at this chunk's oldest block.
        return bars, (anchor - float(cum[-1]), regime, direction)

    def _profile(self, slots: np.ndarray) -> np.ndarray:
        if len(slots) == 0:
            return np.zeros(0)
        day = ns_to_new_york(int(slots[0])).date()
        open_ns = (
            int(datetime.combine(day, datetime.min.time().replace(hour=9, minute=30), tzinfo=NEW_YORK).timestamp())
            * NS_PER_S
        )
        x = (slots - open_ns) / (SESSION_MINUTES * NS_PER_MIN)
        return np.where((x >= 0) & (x < 1), _u_shape(np.clip(x, 0, 1)), OVERNIGHT_PROFILE)


def _midnight_ns(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=NEW_YORK).timestamp()) * NS_PER_S


# ---- aggregation ---------------------------------------------------------------


def _bucket_key(ts_ns: int, tf: Timeframe) -> int:
    """Start (epoch ns) of the `tf` bar containing `ts_ns`."""
    width = tf.intraday_ns
    if width is not None:
        return ts_ns - ts_ns % width
    day = ns_to_new_york(ts_ns).date()
    if tf.unit == "Week":
        day -= timedelta(days=day.weekday())
    elif tf.unit == "Month":
        day = date(day.year, (day.month - 1) // tf.amount * tf.amount + 1, 1)
    return _midnight_ns(day)


class _Aggregator:
    """Folds time-ordered chunks of bars into buckets, merging across chunk edges."""

    def __init__(self, tf: Timeframe, start_ns: int, end_ns: int) -> None:
        self.tf = tf
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.buckets: dict[int, list] = {}

    def add(self, ts, o, h, l, c, v, n, vw) -> None:
        if len(ts) == 0:
            return
        width = self.tf.intraday_ns
        if width is not None:
            keys = ts - ts % width
        else:
            keys = np.fromiter((_bucket_key(int(t), self.tf) for t in ts), dtype=np.int64, count=len(ts))
        inside = (keys >= self.start_ns) & (keys <= self.end_ns)
        if not inside.all():
            ts, o, h, l, c, v, n, vw, keys = (a[inside] for a in (ts, o, h, l, c, v, n, vw, keys))
            if len(ts) == 0:
                return
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)] - 1
        hs = np.maximum.reduceat(h, starts)
        ls = np.minimum.reduceat(l, starts)
        vs = np.add.reduceat(v, starts)
        ns = np.add.reduceat(n, starts)
        pvs = np.add.reduceat(vw * v, starts)
        for i, s in enumerate(starts.tolist()):
            key = int(keys[s])
            row = [
                float(o[s]),
                float(hs[i]),
                float(ls[i]),
                float(c[ends[i]]),
                int(vs[i]),
                int(ns[i]),
                float(pvs[i]),
                int(ts[s]),
                int(ts[ends[i]]),
            ]
            have = self.buckets.get(key)
            if have is None:
                self.buckets[key] = row
            else:  # the same bucket seen from another chunk: order by time
                first, last = (have, row) if have[7] <= row[7] else (row, have)
                self.buckets[key] = [
                    first[0],
                    max(have[1], row[1]),
                    min(have[2], row[2]),
                    last[3],
                    have[4] + row[4],
                    have[5] + row[5],
                    have[6] + row[6],
                    first[7],
                    last[8],
                ]

    def count(self) -> int:
        return len(self.buckets)

    def result(self, symbol: str, limit: int | None, descending: bool) -> list[SimBar]:
        keys = sorted(self.buckets, reverse=descending)
        if limit is not None:
            keys = keys[:limit]
        out = []
        for key in keys:
            o, h, l, c, v, n, pv, _, _ = self.buckets[key]
            out.append(SimBar(symbol, o, h, l, c, v, n, round(pv / v, 4) if v else c, key))
        return out


# ---- the simulator -------------------------------------------------------------


class MarketSimulator:
    """Seeded market for a set of symbols; see the module docstring."""

    def __init__(
        self,
        symbols: tuple[str, ...] | list[str],
        seed: int = 7,
        quote_rate_hz: float = 4.0,
        clock: MarketClock | None = None,
        now_fn: Callable[[], int] = time.time_ns,
        arrivals: str = "lockstep",
    ) -> None:
        if quote_rate_hz <= 0:
            raise ValueError("quote_rate_hz must be positive")
        if arrivals not in QUOTE_ARRIVALS:
            raise ValueError(f"arrivals must be one of {', '.join(QUOTE_ARRIVALS)}, got {arrivals!r}")
        # When `run()` ticks each symbol (venue/arrivals.py); prices do not depend on it.
        self.arrivals = arrivals
        self.symbols: tuple[str, ...] = tuple(dict.fromkeys(symbols))
        self.seed = seed
        self.quote_rate_hz = float(quote_rate_hz)
        self.clock = clock or MarketClock("always_open", now_fn)
        self._now = now_fn
        self.start_ns = now_fn()
        self._live = {s: _LiveSymbol(s, symbol_profile(s, seed), seed, self.quote_rate_hz) for s in self.symbols}
        for live in self._live.values():  # the standing quote carries a real timestamp
            live.quote = msgspec.structs.replace(live.quote, ts_ns=self.start_ns)
        self._history = {
            s: _History(s, live.profile, seed, self.start_ns, self.clock, live.mean_trade_shares)
            for s, live in self._live.items()
        }
        self._live_bars: dict[str, deque[SimBar]] = {s: deque(maxlen=LIVE_BARS_KEPT) for s in self.symbols}
        self._subscribers: list[Callable[[MarketEvent], None]] = []
        self._profile_minute = -1
        self._profile = 1.0
        self.ticks = 0

    # -- queries --

    def latest_quote(self, symbol: str) -> SimQuote | None:
        live = self._live.get(symbol)
        return live.quote if live else None

    def latest_trade(self, symbol: str) -> SimTrade | None:
        """The last trade; before the first live one, a synthetic print at the last close."""
        live = self._live.get(symbol)
        if live is None:
            return None
        if live.trade is None:
            price = live.profile.start_price
            return SimTrade(symbol, price, 100, self.start_ns - NS_PER_S, live.next_trade_id, tape=live.profile.tape)
        return live.trade

    def latest_bar(self, symbol: str) -> SimBar | None:
        """The last completed 1-minute bar (live, else history)."""
        if symbol not in self._live:
            return None
        if self._live_bars[symbol]:
            return self._live_bars[symbol][-1]
        bars = self.bars(symbol, 1, None, self.start_ns, limit=1, descending=True)
        return bars[0] if bars else None

    def regime(self, symbol: str) -> str:
        return REGIME_NAMES[self._live[symbol].regime]

    def profile(self, symbol: str) -> SymbolProfile | None:
        live = self._live.get(symbol)
        return live.profile if live else None

    # -- events --

    def subscribe(self, callback: Callable[[MarketEvent], None]) -> Callable[[], None]:
        """Call `callback(event)` for every new quote, trade and bar; returns the unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, event: MarketEvent) -> None:
        for callback in tuple(self._subscribers):
            try:
                callback(event)
            except Exception:  # one broken subscriber must not stop the market
                log.exception("market subscriber failed")

    # -- scripted moves (admin) --

    def crash(self, pct: float, symbols: tuple[str, ...] | list[str] | None = None) -> dict[str, float]:
        """Move `symbols` (default: all) down by `pct` percent at once; returns the new mids.

        The whole price process moves (its home and regime anchor too), so the
        crash stays instead of reverting; the next tick quotes around it.
        """
        if not 0 < pct < 100:
            raise ValueError(f"crash pct must be in (0, 100), got {pct!r}")
        names = tuple(symbols) if symbols else self.symbols
        unknown = [s for s in names if s not in self._live]
        if unknown:
            raise ValueError(f"unknown symbols: {', '.join(unknown)}")
        shift = math.log(1.0 - pct / 100.0)
        out: dict[str, float] = {}
        for symbol in names:
            live = self._live[symbol]
            live.log_price += shift
            live.log_home += shift
            live.regime_anchor += shift
            out[symbol] = round(math.exp(live.log_price), 4)
        return out

    # -- ticking --

    def _volume_scale(self, now_ns: int) -> float:
        minute = now_ns // NS_PER_MIN
        if minute != self._profile_minute:
            self._profile_minute = minute
            self._profile = intraday_profile(now_ns)
        return self._profile

    def step(self) -> None:
        """Advance every symbol one tick, emitting its events synchronously."""
        now = self._now()
        scale = self._volume_scale(now)
        self.ticks += 1
        for symbol, live in self._live.items():
            self._step_one(symbol, live, now, scale)

    def step_symbol(self, symbol: str) -> None:
        """Advance one symbol one tick (independent arrivals), emitting its events synchronously."""
        now = self._now()
        self._step_one(symbol, self._live[symbol], now, self._volume_scale(now))

    def _step_one(self, symbol: str, live: _LiveSymbol, now: int, scale: float) -> None:
        self._finish_bar(symbol, live, now)
        trade, quote = live.step(now, scale)
        if trade is not None:
            live.bar_builder.add(trade)
            self._emit(trade)
        self._emit(quote)

    async def run(self) -> None:
        """Tick forever at `quote_rate_hz` per symbol; catches up in batches when behind.

        A batch is capped (MAX_EVENTS_PER_BATCH quotes) so the websockets get the
        loop between batches; a backlog beyond one batch is dropped rather than
        chased. Pauses (but keeps finishing bars) while the clock says closed.
        Every symbol ticks at once ("lockstep") unless `arrivals` says otherwise.
        """
        if self.arrivals != "lockstep":
            await self._run_independent()
            return
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.quote_rate_hz
        max_ticks = max(1, MAX_EVENTS_PER_BATCH // max(1, len(self.symbols)))
        origin = loop.time()
        done = 0
        while True:
            now = loop.time()
            due = int((now - origin) / interval) - done
            if due > max_ticks:
                origin = now - (done + max_ticks) * interval
                due = max_ticks
            if due > 0:
                if self.clock.is_open(self._now()):
                    for _ in range(due):
                        self.step()
                else:
                    self._finish_bars()
                done += due
            next_at = origin + (done + 1) * interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _run_independent(self) -> None:
        """`run()` with each symbol ticking on its own schedule (venue/arrivals.py)."""
        loop = asyncio.get_running_loop()
        schedule = ArrivalSchedule(self.arrivals, len(self.symbols), self.quote_rate_hz, self.seed, loop.time())
        while True:
            now = loop.time()
            is_open = self.clock.is_open(self._now())
            fired = 0
            while fired < MAX_EVENTS_PER_BATCH and (i := schedule.pop_due(now)) is not None:
                if is_open:
                    self.step_symbol(self.symbols[i])
                fired += 1
            if not is_open:
                self._finish_bars()
            await asyncio.sleep(max(0.0, schedule.next_due() - loop.time()))

    def _finish_bars(self) -> None:
        now = self._now()
        for symbol, live in self._live.items():
            self._finish_bar(symbol, live, now)

    def _finish_bar(self, symbol: str, live: _LiveSymbol, now: int) -> None:
        """Close `symbol`'s bar in progress if `now` is past its minute, and emit it."""
        bar = live.bar_builder.finish_before(now)
        if bar is not None:
            self._live_bars[symbol].append(bar)
            self._emit(bar)

    # -- bars --

    def bars(
        self,
        symbol: str,
        timeframe_minutes: int | Timeframe = 1,
        start_ns: int | None = None,
        end_ns: int | None = None,
        limit: int | None = None,
        descending: bool = False,
        now_ns: int | None = None,
    ) -> list[SimBar]:
        """Bars whose start lies in [start_ns, end_ns], oldest first unless `descending`.

        History before the simulator's start and the live bars since join without
        a seam. An int timeframe is minutes (1440 is one New York day). `now_ns`:
        the asker's now when it is earlier than the simulator's (a venue on a
        simulated clock replaying this market's recorded run): nothing after it.
        """
        if symbol not in self._live:
            return []
        tf = timeframe_minutes if isinstance(timeframe_minutes, Timeframe) else Timeframe.minutes(timeframe_minutes)
        history = self._history[symbol]
        now = self._now() if now_ns is None else min(now_ns, self._now())
        end_ns = now if end_ns is None else min(end_ns, now)
        start_ns = _midnight_ns(history.earliest_date) if start_ns is None else start_ns
        if limit is not None and limit <= 0 or start_ns > end_ns:
            return []
        agg = _Aggregator(tf, start_ns, end_ns)
        first_day = max(ns_to_new_york(start_ns).date(), history.earliest_date)
        # A bucket starting at end_ns can reach this far past it.
        span = {"Min": 1, "Hour": 1, "Day": 1, "Week": 7, "Month": 366}[tf.unit]
        last_day = min(ns_to_new_york(end_ns).date() + timedelta(days=span), history.start_date)
        live = self._live_chunk(symbol, now)
        days = [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]
        use_daily = tf.intraday_ns is None
        enough = None if limit is None else limit + 1  # one more proves the last is complete

        def add_day(day: date) -> None:
            if use_daily:
                row = history.daily(day)
                if row is not None:
                    agg.add(*(np.array([x]) for x in row))
            else:
                d = history.day(day)
                agg.add(d.ts, d.o, d.h, d.l, d.c, d.v, d.n, d.vw)

        if descending:
            agg.add(*live)
            for day in reversed(days):
                if enough is not None and agg.count() >= enough:
                    break
                add_day(day)
        else:
            for day in days:
                if enough is not None and agg.count() >= enough:
                    break
                add_day(day)
            if enough is None or agg.count() < enough:
                agg.add(*live)
        return agg.result(symbol, limit, descending)

    def _live_chunk(self, symbol: str, now: int) -> tuple:
        # Only bars complete by `now`. Live a bar is kept once its minute is
        # over, so this drops nothing; for an asker whose now is earlier (a
        # backtest replaying this market's recorded run) the bar of its minute
        # in progress holds prices from after that now: look-ahead.
        bars = [b for b in self._live_bars[symbol] if b.ts_ns + NS_PER_MIN <= now]
        if not bars:
            e = _empty_day()
            return (e.ts, e.o, e.h, e.l, e.c, e.v, e.n, e.vw)
        return (
            np.fromiter((b.ts_ns for b in bars), dtype=np.int64, count=len(bars)),
            np.fromiter((b.open for b in bars), dtype=float, count=len(bars)),
            np.fromiter((b.high for b in bars), dtype=float, count=len(bars)),
            np.fromiter((b.low for b in bars), dtype=float, count=len(bars)),
            np.fromiter((b.close for b in bars), dtype=float, count=len(bars)),
            np.fromiter((b.volume for b in bars), dtype=np.int64, count=len(bars)),
            np.fromiter((b.trade_count for b in bars), dtype=np.int64, count=len(bars)),
            np.fromiter((b.vwap for b in bars), dtype=float, count=len(bars)),
        )
