"""Historical quotes and trades for any past window, drawn from the simulator's minute bars.

The simulator keeps bars, not ticks, for the past; Alpaca's
`/v2/stocks/{symbol}/quotes` and `/trades` need ticks. Each completed minute
bar with volume is expanded into TICKS_PER_BAR trades, each with the quote
that stood just before it:

- the trades open at the bar's open, touch its high and its low, and close at
  its close; their sizes add up to the bar's volume;
- each quote brackets its trade's price with the symbol's typical spread.

The expansion is a pure function of (seed, symbol, bar), so the same window
asked twice (or paged through) gives the same ticks, and the ticks agree with
the bars served for that window. Timestamps are distinct within a symbol
(whole microseconds inside the bar's minute), which keeps page tokens exact.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from stockade.venue.market import NS_PER_MIN, SimBar, SimQuote, SimTrade, stable_hash

TICKS_PER_BAR = 4
_QUOTE_LEAD_NS = 500_000  # a trade's quote stood this long before it
_FIRST_OFFSET_US = 1_000  # no tick in the first millisecond (room for the quote before it)

BarSource = Callable[[str, int, int, int, bool], list[SimBar]]  # (symbol, start, end, limit, desc)


def _bar_ticks(seed: int, bar: SimBar, spread_bps: float, tape: str) -> tuple[list[SimQuote], list[SimTrade]]:
    """The quotes and trades of one minute bar, oldest first."""
    if bar.volume <= 0:
        return [], []
    rng = random.Random(stable_hash(f"{seed}:{bar.symbol}:{bar.ts_ns}:ticks"))
    n = min(TICKS_PER_BAR, bar.volume)
    offsets = sorted(rng.sample(range(_FIRST_OFFSET_US, 60_000_000), n))
    middle = [bar.high, bar.low]
    rng.shuffle(middle)
    prices = {1: [bar.close], 2: [bar.open, bar.close], 3: [bar.open, middle[0], bar.close]}.get(
        n, [bar.open, *middle, bar.close]
    )
    cuts = sorted(rng.sample(range(1, bar.volume), n - 1)) if n > 1 else []
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, bar.volume], strict=True)]
    first_id = stable_hash(f"{seed}:{bar.symbol}:{bar.ts_ns}:tid") % 10**12
    quotes, trades = [], []
    for i, (offset_us, price, size) in enumerate(zip(offsets, prices, sizes, strict=True)):
        ts = bar.ts_ns + offset_us * 1_000
        trades.append(SimTrade(bar.symbol, price, size, ts, first_id + i, tape=tape))
        cents = round(price * 100)
        spread = max(1, round(cents * spread_bps / 1e4))
        below = rng.randint(0, spread)  # the print sits anywhere inside the spread
        bid = max(1, cents - below)
        quotes.append(
            SimQuote(
                symbol=bar.symbol,
                bid=bid / 100.0,
                bid_size=100 * rng.randint(1, 8),
                ask=(bid + spread) / 100.0,
                ask_size=100 * rng.randint(1, 8),
                ts_ns=ts - _QUOTE_LEAD_NS,
                tape=tape,
            )
        )
    return quotes, trades


def ticks(
    kind: str,
    symbol: str,
    bars: BarSource,
    seed: int,
    spread_bps: float,
    tape: str,
    start_ns: int,
    end_ns: int,
    limit: int,
    descending: bool,
) -> list[SimQuote] | list[SimTrade]:
    """Up to `limit` quotes or trades (`kind`) of `symbol` with start_ns <= t <= end_ns, in time order."""
    out: list = []
    # A tick at t belongs to the bar of t's minute: bars from the one holding start_ns.
    lo, hi = start_ns - start_ns % NS_PER_MIN, end_ns
    batch = max(2, limit // TICKS_PER_BAR + 2)
    while len(out) < limit and lo <= hi:
        chunk = bars(symbol, lo, hi, batch, descending)
        if not chunk:
            break
        for bar in chunk:
            q, t = _bar_ticks(seed, bar, spread_bps, tape)
            items = [x for x in (q if kind == "quotes" else t) if start_ns <= x.ts_ns <= end_ns]
            out.extend(reversed(items) if descending else items)
            if len(out) >= limit:
                break
        if len(chunk) < batch:
            break
        if descending:
            hi = chunk[-1].ts_ns - 1
        else:
            lo = chunk[-1].ts_ns + 1
    return out[:limit]
