"""Parity: the same period live (the daemon on the embedded venue, real threads, sockets and
supervision) and as a backtest over the quotes the live analyzers were given, gives the same orders
once the live daemon is ready (see the test for the start-up transient).

The live run's router is instrumented to keep every quote and trade it hands
an analyzer (what "the same period" means for a strategy); behaviour is not
changed. The backtest replays them at the time they were received, which is
what the live actors' clock read: the voter's cool-down and in-flight gates
then open on the same quote as live. Equal: symbol, side, quantity and the
quote each order reacted to. Prices within the fill model: the backtest
fills on the symbol's next quote (at its touch, no slippage here); the live
venue fills at the quote it holds when the order arrives, so a live price is
the touch of the decision's quote or of one arriving while the order
travelled.
"""

from __future__ import annotations

import time
from argparse import Namespace

from stockade.codecs.messages import Quote, Trade
from stockade.config.settings import settings_from_dict
from stockade.supervisors import router as router_mod

SYMBOLS = ("AAPL", "MSFT")
# Busy enough that seed 4 trades within seconds (as the pipeline bench).
RAW = {
    "venue": {"quote_rate_hz": 20.0, "seed": 4},
    "trading": {"symbols": list(SYMBOLS)},
    "analyzer": {"evaluate_every_s": 0.001},
    "voter": {"threshold": 0.02, "cooldown_s": 0.2, "adaptive": False, "min_confidence": 0.3},
    "risk": {
        "max_positions": 5,
        "max_position_pct": 90.0,
        "risk_per_trade_pct": 0.05,
        "max_orders_per_min": 1000,
        "circuit_breaker_failures": 1000,
    },
    "backtest": {"slippage_bps": 0.0},
    "logging": {"level": "WARNING"},
}
MIN_ORDERS = 6


def _intents(store):
    return [o for o in sorted(store.orders.values(), key=lambda o: o.created_ns) if o.intent_id]


def run_live(data_dir):
    from stockade.ops.daemon import Daemon

    seen: list = []
    deliver = router_mod.Router.deliver

    def recording(self, name, envelope, sender_generation=None):
        if name.startswith("analyzer:") and type(envelope.body) in (Quote, Trade):
            seen.append(envelope.body)
        return deliver(self, name, envelope, sender_generation)

    router_mod.Router.deliver = recording
    daemon = Daemon(settings_from_dict(RAW), "embedded", None, Namespace(data_dir=str(data_dir), duration=None))
    try:
        daemon._start()  # returns once the tree is up and the first reconciliation is done
        ready_ns = time.time_ns()
        deadline = time.monotonic() + 90
        while (
            time.monotonic() < deadline
            and len([o for o in _intents(daemon.svc.store) if o.quote_recv_ns >= ready_ns]) < MIN_ORDERS
        ):
            time.sleep(0.2)  # polling a condition with a deadline
        time.sleep(1.0)  # let the last orders fill before the feed is cut (not a synchronisation)
        router_mod.Router.deliver = deliver  # the period ends here for both runs
        cut = len(seen)
        time.sleep(0.5)
        orders = [o for o in _intents(daemon.svc.store) if o.quote_recv_ns <= seen[cut - 1].recv_ns]
        return orders, list(seen[:cut]), daemon.venue.ctx.market, ready_ns
    finally:
        router_mod.Router.deliver = deliver
        daemon._stop()


def test_live_and_backtest_place_the_same_orders(tmp_path):
    from stockade.ops.backtest import Engine

    live, events, market, ready_ns = run_live(tmp_path / "live")
    # Compared from the moment the live daemon was ready: while its tree starts, analyzers
    # already vote and the voter and risk guard are not up yet (votes wait for them, and
    # their quotes age), a start-up transient the backtest, whose actors all exist before
    # its first event, does not have.
    live = [o for o in live if o.quote_recv_ns >= ready_ns]
    assert len(live) >= MIN_ORDERS, f"the live run placed {len(live)} orders once ready"
    engine = Engine(
        settings_from_dict(RAW),
        SYMBOLS,
        4,
        tmp_path / "bt",
        str(tmp_path / "live"),
        market=market,
        clock_mode="always_open",
    )
    try:
        engine.replay(sorted(events, key=lambda e: e.recv_ns))
        figures = engine.finish()
        bt = [o for o in _intents(engine.store) if o.quote_recv_ns >= ready_ns]
    finally:
        engine.close()
    # Same orders: each live order (once ready) has its backtest twin, same symbol, side and
    # quantity, reacting to the very same quote. The time gates (the analyzer's pacing, the
    # voter's cool-down) run on the quotes' own time, which both runs read alike; on the
    # handler's clock, live would add the pipeline's latency and jitter and the two runs would
    # open a gate one quote apart.
    last = events[-1].recv_ns - 1_000_000_000  # the live run had no time to act on the very end
    window = [o for o in live if o.quote_recv_ns <= last]
    twins = [o for o in bt if o.quote_recv_ns <= last]
    pairs = []
    free = list(bt)
    for a in window:
        b = next(
            (
                b
                for b in free
                if (b.symbol, b.side, b.qty, b.quote_recv_ns) == (a.symbol, a.side, a.qty, a.quote_recv_ns)
            ),
            None,
        )
        assert b is not None, (a, [(o.symbol, o.side, o.qty, o.quote_recv_ns) for o in bt], figures)
        free.remove(b)
        pairs.append((a, b))
    assert all(b in [p[1] for p in pairs] for b in twins), "the backtest placed an order live did not"
    print(f"parity: {len(pairs)} orders, each on the very same quote")

    quotes = [e for e in sorted(events, key=lambda e: e.recv_ns) if type(e) is Quote]

    def touches(order, within_ns):
        touch = (lambda q: q.ask) if order.side == "buy" else (lambda q: q.bid)
        mine = [q for q in quotes if q.symbol == order.symbol]
        i = next(n for n, q in enumerate(mine) if q.recv_ns == order.quote_recv_ns)
        nxt = touch(mine[i + 1]) if i + 1 < len(mine) else None
        return [touch(q) for q in mine[i:] if q.recv_ns <= order.quote_recv_ns + within_ns], nxt

    for a, b in pairs:
        if a.filled_avg_price is not None:  # live: a quote from the decision's to one second later
            assert a.filled_avg_price in touches(a, 1_000_000_000)[0], a
        if b.filled_avg_price is not None:  # backtest: exactly the symbol's next quote
            assert b.filled_avg_price == touches(b, 0)[1], b
