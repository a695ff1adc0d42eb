"""The seeded market: determinism, regimes, quotes, trades and bars."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import pytest

from stockade.venue.clock import NEW_YORK, MarketClock
from stockade.venue.market import (
    NS_PER_MIN,
    MarketSimulator,
    SimBar,
    SimQuote,
    SimTrade,
    Timeframe,
    intraday_profile,
    symbol_profile,
)

SYMBOLS = ("AAPL", "SPY", "QWERTY")


def ny_ns(*args: int) -> int:
    return int(datetime(*args, tzinfo=NEW_YORK).timestamp()) * 1_000_000_000


class FakeNow:
    """A wall clock that moves only when told to."""

    def __init__(self, start_ns: int, step_ns: int = 0) -> None:
        self.ns = start_ns
        self.step_ns = step_ns

    def __call__(self) -> int:
        value = self.ns
        self.ns += self.step_ns
        return value


def record(sim: MarketSimulator, steps: int) -> list:
    events: list = []
    sim.subscribe(events.append)
    for _ in range(steps):
        sim.step()
    return events


def prices(events: list) -> list[tuple]:
    return [
        (e.symbol, e.bid, e.ask) if isinstance(e, SimQuote) else (e.symbol, e.price)
        for e in events
        if isinstance(e, (SimQuote, SimTrade))
    ]


def test_same_seed_same_prices_whatever_the_wall_clock():
    morning = MarketSimulator(SYMBOLS, seed=3, now_fn=FakeNow(ny_ns(2025, 3, 4, 10, 0), 250_000_000))
    night = MarketSimulator(SYMBOLS, seed=3, now_fn=FakeNow(ny_ns(2025, 8, 9, 2, 13), 7_000_000))
    a, b = record(morning, 400), record(night, 400)
    assert prices(a) == prices(b)
    assert len(prices(a)) > 400


def test_different_seeds_differ():
    a = MarketSimulator(SYMBOLS, seed=1, now_fn=FakeNow(ny_ns(2025, 3, 4, 10, 0)))
    b = MarketSimulator(SYMBOLS, seed=2, now_fn=FakeNow(ny_ns(2025, 3, 4, 10, 0)))
    assert prices(record(a, 50)) != prices(record(b, 50))


def test_start_prices_are_plausible():
    sim = MarketSimulator(("AAPL", "SPY", "QWERTY"), seed=7)
    assert 180 < sim.latest_quote("AAPL").bid < 200
    assert 480 < sim.latest_quote("SPY").bid < 520
    assert 15 < sim.latest_quote("QWERTY").bid < 420  # unknown: derived from a hash
    assert symbol_profile("QWERTY", 7) == symbol_profile("QWERTY", 7)
    assert sim.latest_quote("NOPE") is None and sim.latest_trade("NOPE") is None
    assert sim.bars("NOPE", 1) == []


def test_quotes_and_trades_are_well_formed():
    sim = MarketSimulator(SYMBOLS, seed=5, now_fn=FakeNow(ny_ns(2025, 3, 4, 11, 0), 100_000_000))
    standing = {s: sim.latest_quote(s) for s in SYMBOLS}
    events = []

    def check(event):
        if isinstance(event, SimTrade):  # against the quote it traded with
            q = standing[event.symbol]
            assert q.bid <= event.price <= q.ask
            assert event.size > 0 and (event.size < 100 or event.size % 100 == 0)
        elif isinstance(event, SimQuote):
            standing[event.symbol] = event
        events.append(event)

    sim.subscribe(check)
    for _ in range(3000):
        sim.step()
    quotes = [e for e in events if isinstance(e, SimQuote)]
    assert len(quotes) == 3000 * len(SYMBOLS)
    for q in quotes:
        assert 0 < q.bid < q.ask
        assert round(q.bid * 100) == pytest.approx(q.bid * 100) and round(q.ask * 100) == pytest.approx(q.ask * 100)
        assert q.bid_size % 100 == 0 and q.ask_size % 100 == 0 and q.bid_size > 0
        spread_bps = (q.ask - q.bid) / ((q.ask + q.bid) / 2) * 1e4
        assert spread_bps < 25
    trades = [e for e in events if isinstance(e, SimTrade)]
    assert 0.3 < len(trades) / len(quotes) < 0.7  # trades between quotes
    assert len({t.id for t in trades}) == len(trades)


def test_regimes_switch_and_differ():
    # A slow tick rate makes each tick 20 simulated seconds: many regime spells.
    sim = MarketSimulator(("NVDA",), seed=9, quote_rate_hz=0.05, now_fn=FakeNow(ny_ns(2025, 3, 4, 12, 0)))
    by_regime: dict[str, list[tuple[float, float]]] = {}
    last_mid = None
    for _ in range(20_000):
        sim.step()
        q = sim.latest_quote("NVDA")
        mid = (q.bid + q.ask) / 2
        if last_mid is not None:
            by_regime.setdefault(sim.regime("NVDA"), []).append((abs(math.log(mid / last_mid)), (q.ask - q.bid) / mid))
        last_mid = mid
    assert set(by_regime) == {"trending", "mean_reverting", "volatile"}

    def mean(xs):
        return sum(xs) / len(xs)

    move = {r: mean([m for m, _ in v]) for r, v in by_regime.items()}
    spread = {r: mean([s for _, s in v]) for r, v in by_regime.items()}
    assert move["volatile"] > 1.8 * move["trending"] and move["volatile"] > 1.8 * move["mean_reverting"]
    assert spread["volatile"] > 1.8 * spread["trending"]


def check_bar(bar: SimBar) -> None:
    assert bar.high >= max(bar.open, bar.close)
    assert bar.low <= min(bar.open, bar.close)
    assert 0 < bar.low
    assert bar.low <= bar.vwap <= bar.high
    assert bar.volume > 0 and bar.trade_count > 0


def test_history_bars_are_consistent_and_end_at_the_start_price():
    start = ny_ns(2025, 3, 4, 11, 0) + 17_000_000_000
    sim = MarketSimulator(SYMBOLS, seed=4, now_fn=FakeNow(start))
    bars = sim.bars("AAPL", 1, None, None, limit=500, descending=True)
    assert len(bars) == 500
    for bar in bars:
        check_bar(bar)
        assert bar.ts_ns % NS_PER_MIN == 0
    times = [b.ts_ns for b in bars]
    assert times == sorted(times, reverse=True) and len(set(times)) == 500
    assert times[0] == start - start % NS_PER_MIN - NS_PER_MIN  # history ends where live begins
    assert bars[0].close == sim.profile("AAPL").start_price
    mid = (sim.latest_quote("AAPL").bid + sim.latest_quote("AAPL").ask) / 2
    assert abs(mid / bars[0].close - 1) < 0.001
    # The same seed and start give the same history.
    again = MarketSimulator(SYMBOLS, seed=4, now_fn=FakeNow(start))
    assert again.bars("AAPL", 1, None, None, limit=500, descending=True) == bars


def test_intraday_volume_is_u_shaped_and_history_follows_it():
    assert intraday_profile(ny_ns(2025, 3, 4, 9, 31)) > 2 * intraday_profile(ny_ns(2025, 3, 4, 12, 30))
    assert intraday_profile(ny_ns(2025, 3, 4, 15, 55)) > 1.5 * intraday_profile(ny_ns(2025, 3, 4, 12, 30))
    assert intraday_profile(ny_ns(2025, 3, 4, 2, 0)) < intraday_profile(ny_ns(2025, 3, 4, 12, 30))
    sim = MarketSimulator(("MSFT",), seed=4, now_fn=FakeNow(ny_ns(2025, 3, 5, 8, 0)), clock=MarketClock("nyse"))
    day = sim.bars("MSFT", 1, ny_ns(2025, 3, 4, 9, 30), ny_ns(2025, 3, 4, 16, 0) - 1)
    assert len(day) == 390  # a full regular session, no bars outside it
    first_half_hour = sum(b.volume for b in day[:30])
    midday = sum(b.volume for b in day[150:180])
    last_half_hour = sum(b.volume for b in day[-30:])
    assert first_half_hour > 1.5 * midday and last_half_hour > 1.3 * midday


def test_aggregated_bars_match_their_minutes():
    sim = MarketSimulator(("SPY",), seed=8, now_fn=FakeNow(ny_ns(2025, 3, 6, 15, 0)), clock=MarketClock("nyse"))
    start, end = ny_ns(2025, 3, 4, 9, 30), ny_ns(2025, 3, 5, 16, 0)
    minutes = sim.bars("SPY", 1, start, end)
    fives = sim.bars("SPY", Timeframe.parse("5Min"), start, end)
    days = sim.bars("SPY", Timeframe.parse("1Day"), ny_ns(2025, 3, 4, 0, 0), end)  # bars start in range
    assert len(fives) == 2 * 78 and len(days) == 2
    for bar in fives + days:
        check_bar(bar)
        width = 5 * NS_PER_MIN if bar in fives else 24 * 60 * NS_PER_MIN
        inside = [m for m in minutes if bar.ts_ns <= m.ts_ns < bar.ts_ns + width]
        assert bar.open == inside[0].open and bar.close == inside[-1].close
        assert bar.high == max(m.high for m in inside) and bar.low == min(m.low for m in inside)
        assert bar.volume == sum(m.volume for m in inside)
    assert days[0].ts_ns == ny_ns(2025, 3, 4, 0, 0)  # daily bars start at New York midnight
    assert days[1].open != minutes[389].close  # an overnight gap on the open
    weekly = sim.bars("SPY", Timeframe.parse("1Week"), None, None, limit=3, descending=True)
    assert [datetime.fromtimestamp(b.ts_ns / 1e9, NEW_YORK).weekday() for b in weekly] == [0, 0, 0]


def test_live_bars_are_built_from_trades_and_join_the_history():
    now = FakeNow(ny_ns(2025, 3, 4, 10, 0) + 30_000_000_000, 1_000_000_000)  # 1 s per read
    sim = MarketSimulator(("AAPL",), seed=2, now_fn=now)
    events = record(sim, 300)
    live = [e for e in events if isinstance(e, SimBar)]
    assert len(live) >= 3
    trades = [e for e in events if isinstance(e, SimTrade)]
    for bar in live:
        check_bar(bar)
        inside = [t for t in trades if bar.ts_ns <= t.ts_ns < bar.ts_ns + NS_PER_MIN]
        assert bar.open == inside[0].price and bar.close == inside[-1].price
        assert bar.volume == sum(t.size for t in inside) and bar.trade_count == len(inside)
    joined = sim.bars("AAPL", 1, ny_ns(2025, 3, 4, 9, 50), None)
    assert joined[-len(live) :] == live
    assert [b.ts_ns for b in joined] == sorted({b.ts_ns for b in joined})
    assert sim.latest_bar("AAPL") == live[-1]


def test_timeframes_parse_like_alpaca():
    assert Timeframe.parse("1Min") == Timeframe(1, "Min") and Timeframe.parse("15T") == Timeframe(15, "Min")
    assert Timeframe.parse("1Hour") == Timeframe(1, "Hour") and Timeframe.parse("1Day") == Timeframe(1, "Day")
    assert Timeframe.parse("3Month") == Timeframe(3, "Month")
    for bad in ("", "0Min", "60Min", "24Hour", "2Day", "5Month", "1Sec", "Min", "1min"):
        with pytest.raises(ValueError):
            Timeframe.parse(bad)


def test_run_ticks_on_its_own_and_yields_the_loop():
    sim = MarketSimulator(("AAPL", "MSFT"), seed=1, quote_rate_hz=5_000)
    quotes = []
    sim.subscribe(lambda e: quotes.append(e) if isinstance(e, SimQuote) else None)

    async def main() -> int:
        task = asyncio.create_task(sim.run())
        yields = 0
        while len(quotes) < 2_000:  # other coroutines keep running while it ticks
            await asyncio.sleep(0.001)
            yields += 1
            assert yields < 5_000, "simulator produced too little"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return yields

    assert asyncio.run(asyncio.wait_for(main(), 10)) > 1
    assert len(quotes) >= 2_000


# ---- always_open history: a function of the seed, not of the wall clock ------


def utc_ns(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1_000_000_000


def minutes_before_start(sim: MarketSimulator, symbol: str, count: int) -> list[tuple]:
    """The last `count` history minute bars, newest first, keyed by minutes before the start."""
    start_minute = sim.start_ns - sim.start_ns % NS_PER_MIN
    bars = sim.bars(symbol, 1, None, start_minute - 1, limit=count, descending=True)
    assert len(bars) == count
    return [
        ((start_minute - b.ts_ns) // NS_PER_MIN, b.open, b.high, b.low, b.close, b.volume, b.trade_count, b.vwap)
        for b in bars
    ]


def test_always_open_history_does_not_depend_on_the_start_time():
    # Different hours, dates, and a DST switch in New York (2025-03-09) for one of them.
    early = MarketSimulator(SYMBOLS, seed=3, now_fn=FakeNow(utc_ns(2025, 3, 9, 3, 17, 41), 250_000_000))
    late = MarketSimulator(SYMBOLS, seed=3, now_fn=FakeNow(utc_ns(2025, 7, 22, 14, 52, 5), 250_000_000))
    for symbol in SYMBOLS:
        a, b = minutes_before_start(early, symbol, 300), minutes_before_start(late, symbol, 300)
        assert [bar[0] for bar in a] == list(range(1, 301))
        assert [bar[4] for bar in a] == [bar[4] for bar in b]  # closes by index before start
        assert a == b  # and the whole bar, volume included
        assert a[0][4] == early.profile(symbol).start_price  # still continuous with the live start
        assert early.latest_quote(symbol).bid == late.latest_quote(symbol).bid
        assert early.latest_quote(symbol).ask == late.latest_quote(symbol).ask
        # Deeper history (several days, across midnights and chunk edges) too.
        assert minutes_before_start(early, symbol, 4000) == minutes_before_start(late, symbol, 4000)
    assert prices(record(early, 100)) == prices(record(late, 100))


def test_always_open_history_differs_by_seed():
    start = utc_ns(2025, 3, 4, 14, 0)
    one = MarketSimulator(SYMBOLS, seed=1, now_fn=FakeNow(start))
    two = MarketSimulator(SYMBOLS, seed=2, now_fn=FakeNow(start))
    for symbol in ("AAPL", "QWERTY"):
        a, b = minutes_before_start(one, symbol, 300), minutes_before_start(two, symbol, 300)
        assert [bar[4] for bar in a[1:]] != [bar[4] for bar in b[1:]]


def test_always_open_history_pages_and_aggregates_across_days():
    start = utc_ns(2025, 11, 2, 14, 52, 5)  # New York falls back: a 25-hour date
    sim = MarketSimulator(("SPY",), seed=6, now_fn=FakeNow(start))
    newest = sim.bars("SPY", 1, None, None, limit=5000, descending=True)
    for bar in newest[:200] + newest[-200:]:
        check_bar(bar)
    times = [b.ts_ns for b in newest]
    assert times == [times[0] - i * NS_PER_MIN for i in range(5000)]  # no gaps: always open
    oldest_first = sim.bars("SPY", 1, times[-1], None)
    assert oldest_first == newest[::-1]
    page1 = sim.bars("SPY", 1, times[-1], None, limit=1000)
    page2 = sim.bars("SPY", 1, page1[-1].ts_ns + NS_PER_MIN, None, limit=1000)
    assert page1 + page2 == oldest_first[:2000]
    days = sim.bars("SPY", Timeframe.parse("1Day"), ny_ns(2025, 10, 30, 0, 0), None)
    assert [datetime.fromtimestamp(d.ts_ns / 1e9, NEW_YORK).day for d in days] == [30, 31, 1, 2]
    for day in days:
        check_bar(day)
        date_ = datetime.fromtimestamp(day.ts_ns / 1e9, NEW_YORK).date()
        inside = [m for m in oldest_first if datetime.fromtimestamp(m.ts_ns / 1e9, NEW_YORK).date() == date_]
        assert day.open == inside[0].open and day.close == inside[-1].close
        assert day.high == max(m.high for m in inside) and day.low == min(m.low for m in inside)
        assert day.volume == sum(m.volume for m in inside)
    assert (
        sum(m.ts_ns >= ny_ns(2025, 11, 1, 0, 0) and m.ts_ns < ny_ns(2025, 11, 2, 0, 0) for m in oldest_first) == 24 * 60
    )
    hours = sim.bars("SPY", Timeframe.parse("1Hour"), None, None, limit=30, descending=True)
    assert len(hours) == 30 and hours[0].close == sim.profile("SPY").start_price


def test_nyse_history_is_unchanged():
    # Pinned from the calendar-driven generator: nyse mode keeps real sessions, gaps and dates.
    sim = MarketSimulator(("SPY",), seed=8, now_fn=FakeNow(ny_ns(2025, 3, 6, 15, 0)), clock=MarketClock("nyse"))
    opening = sim.bars("SPY", 1, ny_ns(2025, 3, 4, 9, 30), ny_ns(2025, 3, 4, 9, 32))
    assert [(b.open, b.high, b.low, b.close, b.volume, b.trade_count, b.vwap) for b in opening] == [
        (496.16, 496.25, 495.87, 495.97, 790099, 616, 496.0313),
        (495.97, 496.13, 495.87, 495.95, 1042172, 813, 495.9661),
        (495.95, 496.39, 495.88, 496.27, 463284, 361, 496.3027),
    ]
    assert opening[0].ts_ns == ny_ns(2025, 3, 4, 9, 30)
    last = sim.bars("SPY", 1, None, None, limit=2, descending=True)
    assert [(b.close, b.ts_ns) for b in last] == [
        (494.31, ny_ns(2025, 3, 6, 14, 59)),
        (494.16, ny_ns(2025, 3, 6, 14, 58)),
    ]
    days = sim.bars("SPY", Timeframe.parse("1Day"), ny_ns(2025, 2, 27, 0, 0), ny_ns(2025, 3, 3, 0, 0))
    assert [(b.open, b.close, b.volume) for b in days] == [
        (533.9, 520.02, 62401936),
        (519.25, 511.97, 64980985),
        (513.38, 498.0, 62604273),
    ]
    assert [b.ts_ns for b in days] == [ny_ns(2025, 2, 27, 0, 0), ny_ns(2025, 2, 28, 0, 0), ny_ns(2025, 3, 3, 0, 0)]


def test_bars_as_of_an_earlier_now_leave_out_the_minute_then_in_progress():
    # A backtest replaying a recorded run asks this market for bars as of its
    # simulated now, earlier than the market's: the bar of the minute then in
    # progress, completed later in the run, holds prices from after that now.
    start = ny_ns(2025, 3, 4, 11, 0) + 17_000_000_000
    now = FakeNow(start)
    sim = MarketSimulator(SYMBOLS, seed=4, quote_rate_hz=20.0, now_fn=now)
    at_start = sim.bars("AAPL", 1, None, None, limit=50, descending=True)
    while now.ns < start + 2 * NS_PER_MIN:
        now.ns += 50_000_000
        sim.step()
    current = sim.bars("AAPL", 1, None, None, limit=50, descending=True)
    assert current[0].ts_ns == start - start % NS_PER_MIN + NS_PER_MIN  # the live bars are served
    assert current[1].ts_ns == start - start % NS_PER_MIN
    assert sim.bars("AAPL", 1, None, None, limit=50, descending=True, now_ns=start + 1_000_000_000) == at_start
    later = start - start % NS_PER_MIN + NS_PER_MIN + 1_000_000_000  # the first live bar is complete then
    assert sim.bars("AAPL", 1, None, None, limit=50, descending=True, now_ns=later)[0] == current[1]
