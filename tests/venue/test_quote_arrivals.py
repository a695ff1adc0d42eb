"""The venue's per-symbol quote arrival schedules: lock-step (default), staggered, Poisson.

Only when a symbol quotes changes; its n-th quote is the same in every schedule.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict

import pytest

from stockade.venue.arrivals import ArrivalSchedule
from stockade.venue.market import MarketSimulator, SimQuote

SYMBOLS = tuple(f"S{i:02d}" for i in range(10))
START_NS = 1_700_000_000_000_000_000


def _drain(schedule: ArrivalSchedule, until_s: float) -> list[tuple[float, int]]:
    """Every (due time, symbol index) fired up to `until_s`, stepping the clock to each due time."""
    fired = []
    while schedule.next_due() <= until_s:
        due = schedule.next_due()
        i = schedule.pop_due(due)
        assert i is not None
        fired.append((due, i))
    return fired


def test_staggered_quotes_every_symbol_once_per_interval_one_at_a_time():
    rate = 40.0
    schedule = ArrivalSchedule("staggered", len(SYMBOLS), rate, seed=4, origin_s=100.0)
    fired = _drain(schedule, 100.0 + 10.01 / rate)  # ten intervals (and a hair, for rounding)
    assert Counter(i for _, i in fired) == {i: 10 for i in range(len(SYMBOLS))}
    times = [t for t, _ in fired]
    assert len(set(times)) == len(times)  # no two symbols at the same instant
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) - min(gaps) < 1e-9 and gaps[0] == pytest.approx(1 / rate / len(SYMBOLS))


def test_poisson_is_seeded_independent_per_symbol_and_keeps_the_rate():
    rate = 40.0

    def run(seed: int) -> list[tuple[float, int]]:
        return _drain(ArrivalSchedule("poisson", len(SYMBOLS), rate, seed=seed, origin_s=0.0), 200.0)

    first = run(4)
    assert first == run(4)  # same seed, same arrivals
    assert first != run(5)
    per_symbol: dict[int, list[float]] = defaultdict(list)
    for t, i in first:
        per_symbol[i].append(t)
    for times in per_symbol.values():  # ~8,000 arrivals each: the mean gap within 5% of 1/rate
        assert len(times) / 200.0 == pytest.approx(rate, rel=0.05)
    assert len({t for t, _ in first}) == len(first)  # never two symbols in lock-step


def test_a_starved_loop_drops_the_backlog_instead_of_chasing_it():
    schedule = ArrivalSchedule("staggered", 2, 10.0, seed=1, origin_s=0.0)
    late = 100.0  # the loop did not run for 100 s: 1,000 ticks per symbol were due
    fired = 0
    while schedule.pop_due(late) is not None:
        fired += 1
    assert fired == 2 and schedule.next_due() > late


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="arrivals must be staggered or poisson here, got 'lockstep'"):
        ArrivalSchedule("lockstep", 2, 1.0, seed=1, origin_s=0.0)
    with pytest.raises(ValueError, match="arrivals must be one of lockstep, staggered, poisson, got 'burst'"):
        MarketSimulator(SYMBOLS, arrivals="burst")


def test_each_symbols_nth_quote_is_the_same_whatever_the_schedule():
    def quotes_of(market: MarketSimulator) -> dict[str, list[tuple[float, float, int, int]]]:
        out: dict[str, list[tuple[float, float, int, int]]] = defaultdict(list)
        market.subscribe(
            lambda e: out[e.symbol].append((e.bid, e.ask, e.bid_size, e.ask_size)) if isinstance(e, SimQuote) else None
        )
        return out

    lockstep = MarketSimulator(SYMBOLS, seed=4, quote_rate_hz=20.0, now_fn=lambda: START_NS)
    assert lockstep.arrivals == "lockstep"  # the default is unchanged
    independent = MarketSimulator(SYMBOLS, seed=4, quote_rate_hz=20.0, now_fn=lambda: START_NS, arrivals="poisson")
    a, b = quotes_of(lockstep), quotes_of(independent)
    for _ in range(50):
        lockstep.step()
    order = [s for s in SYMBOLS for _ in range(50)]
    random.Random(3).shuffle(order)  # symbols ticking in any interleaving
    for symbol in order:
        independent.step_symbol(symbol)
    assert a == b and all(len(q) == 50 for q in a.values())


@pytest.mark.parametrize("arrivals", ["lockstep", "staggered", "poisson"])
def test_run_quotes_all_symbols_together_only_in_lockstep(arrivals):
    market = MarketSimulator(SYMBOLS, seed=4, quote_rate_hz=50.0, arrivals=arrivals)
    stamps: list[tuple[int, str]] = []
    enough = asyncio.Event()

    def on(event: object) -> None:
        if isinstance(event, SimQuote):
            stamps.append((event.ts_ns, event.symbol))
            if len(stamps) >= 5 * len(SYMBOLS):
                enough.set()

    market.subscribe(on)

    async def main() -> None:
        task = asyncio.create_task(market.run())
        try:
            await asyncio.wait_for(enough.wait(), 30)
        finally:
            task.cancel()

    asyncio.run(main())
    by_instant = Counter(ts for ts, _ in stamps[: 5 * len(SYMBOLS)])
    if arrivals == "lockstep":  # one instant per tick, every symbol in it
        assert set(by_instant.values()) == {len(SYMBOLS)}
    else:
        assert set(by_instant.values()) == {1}
