"""A trading run against a standalone venue with every fault knob turned on.

While the daemon trades briskly, a seeded schedule keeps changing the venue's
faults: HTTP 5xx errors, 429 bursts, latency (a stretch of it above the
heartbeat timeout), partial fills, lost submit responses, rejections,
dropped and silent trade-update sockets, and one crash of the order manager.
A person buys shares by hand in the same account, with a separate alpaca-py
client, during 429 bursts and during the slow stretch: shares no bracket
covers. Meanwhile the venue's own view of exposure (positions against live
sell stops) is sampled. Then the faults go off, trading is halted, the
ledger must converge to the venue's positions (no phantom shares), the kill
switch takes everything flat, the daemon stops, and its lmdb ledger is
compared with the venue's order list:

- no client_order_id twice at the venue, and every venue order in the ledger
  (the person's included);
- every fill in the ledger exactly once (per order: ledger fill qty = venue filled_qty);
- the ledger equal to the venue at the end (orders' states and fills, positions);
- no position without a protective stop for longer than `reconciler.max_unprotected_s`.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections import defaultdict

from daemon_harness import DaemonProcess, VenueProcess, settings_text, wait_orders
from waiting import wait_for

CHAOS_S = 20.0
MAX_UNPROTECTED_S = 10.0
SAMPLE_EVERY_S = 0.2
HEARTBEAT_TIMEOUT_S = 1.5  # daemon_harness.settings_text's
# Every REST call of the slow stretch takes this long: above the heartbeat
# timeout, so a reconcile pass (four calls) outlives it many times over.
SLOW_MS = 2500.0
SLOW_STEPS = (7, 8, 9)  # schedule steps (0.7 s each) of the slow stretch
BY_HAND_STEPS = (3, 8, 14, 20, 25)  # schedule steps where the person buys (step 8: in the slow stretch)

# What Alpaca answers for the rejections stockade maps to reasons.
REJECTIONS = (
    {"status": 403, "code": 40310000, "message": "insufficient qty available for order (requested: 5, available: 0)"},
    {"status": 403, "code": 40310000, "message": "insufficient buying power"},
    {"status": 403, "code": 40310100, "message": "trade denied due to pattern day trading protection"},
    {"status": 403, "code": 40310000, "message": "potential wash trade detected. use complex orders"},
)
# Always on while the chaos lasts; the schedule adds the one-off faults.
BASE_FAULTS = {
    "latency_ms": 15.0,
    "partial_fill_prob": 0.35,
    "http_error_rate": 0.05,
    "http_error_status": 503,
    "lose_response_rate": 0.15,
    "seed": 5,
}
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")  # the venue's (daemon_harness.VenueProcess)
FAULTS_OFF = {
    "latency_ms": 0.0,
    "partial_fill_prob": 0.0,
    "http_error_rate": 0.0,
    "lose_response_rate": 0.0,
    "burst_429": 0,
    "reject_next": None,
    "stream_silent": False,
}


def _admin(venue: VenueProcess, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        venue.base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"APCA-API-KEY-ID": venue.key, "APCA-API-SECRET-KEY": venue.secret, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


class ExposureWatch:
    """Samples /admin/exposure; keeps the longest stretch any symbol was held without a full stop."""

    def __init__(self, venue: VenueProcess) -> None:
        self.venue = venue
        self.stop = threading.Event()
        self.since: dict[str, float] = {}
        self.worst: dict[str, float] = defaultdict(float)
        self.samples = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY_S):  # a sampling period, not synchronisation
            now = time.monotonic()
            exposure = _admin(self.venue, "/admin/exposure")
            self.samples += 1
            bare = {s for s, e in exposure.items() if e["stop_covered"] < e["qty"]}
            for symbol in bare:
                self.since.setdefault(symbol, now)
                self.worst[symbol] = max(self.worst[symbol], now - self.since[symbol])
            for symbol in set(self.since) - bare:
                del self.since[symbol]


class Person:
    """Someone buying by hand in the same account, with a separate alpaca-py
    client: market buys outside any bracket, each on a thread of its own so a
    slow or refused request never holds the schedule up."""

    def __init__(self, venue: VenueProcess) -> None:
        from stockade.broker.rest import make_trading_client

        # The SDK resends a 429 (refused before anything happened) a few times, as a script would.
        self.client = make_trading_client(
            venue.key, venue.secret, venue.base_url, timeout_s=10, retry_attempts=5, retry_wait_s=0.3
        )
        self.sent: list[str] = []
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []
        self.stop = threading.Event()

    def buy(self, symbol: str, qty: int) -> None:
        coid = f"by-hand-{len(self.sent)}"
        self.sent.append(coid)
        thread = threading.Thread(target=self._submit, args=(coid, symbol, qty), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _submit(self, coid: str, symbol: str, qty: int) -> None:
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import MarketOrderRequest

        request = MarketOrderRequest(
            symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, client_order_id=coid
        )
        # A careful person tries again with the same id: a resend of an order
        # that did land (a lost response) is refused as a duplicate, never doubled.
        for _ in range(6):
            try:
                self.client.submit_order(request)
                return
            except Exception as exc:  # a 5xx, a lost response, a refusal
                self.errors.append(f"{coid}: {exc!r}")
                if "40010001" in str(exc) or self.stop.wait(0.3):  # the person's pace, not synchronisation
                    return

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)


def _chaos_schedule(
    venue: VenueProcess, daemon: DaemonProcess, person: Person, stop: threading.Event, log: list[str]
) -> None:
    rng = random.Random(20261123)
    _admin(venue, "/admin/faults", BASE_FAULTS)
    silent = False
    steps = 0
    while not stop.wait(0.7):  # the schedule's pace, not synchronisation
        steps += 1
        if steps in SLOW_STEPS:
            last = steps == SLOW_STEPS[-1]
            _admin(venue, "/admin/faults", {"latency_ms": BASE_FAULTS["latency_ms"] if last else SLOW_MS})
            log.append("slow-end" if last else "slow")
            if steps not in BY_HAND_STEPS:
                continue
        if steps in BY_HAND_STEPS:
            # Shares no bracket covers, bought while a burst of 429s is on.
            _admin(venue, "/admin/faults", {"burst_429": rng.randint(3, 8)})
            person.buy(rng.choice(SYMBOLS), rng.randint(1, 3))
            log.append("by-hand")
            continue
        if steps == 12:
            # The order manager dies mid-run too: its successor resolves what it left.
            log.append("crash" if daemon.ctl("crash", name="order_manager")["ok"] else "crash-refused")
            continue
        if silent:
            _admin(venue, "/admin/faults", {"stream_silent": False})
            silent = False
            continue
        pick = rng.choice(("burst", "reject", "drop", "silent", "errors500", "calm"))
        if pick == "burst":
            change = {"burst_429": rng.randint(3, 8)}
        elif pick == "reject":
            change = {"reject_next": rng.choice(REJECTIONS)}
        elif pick == "drop":
            change = {"drop_streams": "trading"}
        elif pick == "silent":
            change, silent = {"stream_silent": True}, True
        elif pick == "errors500":
            change = {"http_error_status": rng.choice((500, 502, 503))}
        else:
            change = {}
        if change:
            _admin(venue, "/admin/faults", change)
        log.append(pick)


def test_chaos_run_leaves_ledger_equal_to_venue_without_duplicates_or_bare_positions(short_dir, venue):
    settings = settings_text(
        venue,
        analyzer={"evaluate_every_s": 0.05},
        voter={"threshold": 0.02, "cooldown_s": 0.3, "in_flight_timeout_s": 5.0},
        risk={
            "max_positions": 5,
            "max_position_pct": 50.0,
            "risk_per_trade_pct": 0.05,
            "max_orders_per_min": 1000,
            "circuit_breaker_failures": 1000,
        },
        orders={"retry_backoff_s": 0.05},
        reconciler={"interval_s": MAX_UNPROTECTED_S / 2, "max_unprotected_s": MAX_UNPROTECTED_S},
        # The slow stretch may get the reconciler and the order manager replaced
        # as hung (a blocking REST call outlives the heartbeat): room for that
        # here, so the run tests the order path, not the restart intensity.
        supervision={"max_restarts": 30, "heartbeat_timeout_s": HEARTBEAT_TIMEOUT_S},
    )
    assert SLOW_MS / 1000.0 > HEARTBEAT_TIMEOUT_S
    daemon = DaemonProcess(short_dir / "data", settings, venue)
    watch = ExposureWatch(venue)
    person = Person(venue)
    stop_chaos = threading.Event()
    schedule: list[str] = []
    chaos = threading.Thread(target=_chaos_schedule, args=(venue, daemon, person, stop_chaos, schedule), daemon=True)
    try:
        daemon.wait_ready()
        wait_orders(daemon, 1)
        watch.thread.start()
        chaos.start()
        chaos.join(timeout=CHAOS_S)  # the chaos lasts this long: a bounded run, not a wait on a condition
        stop_chaos.set()
        chaos.join(timeout=10)
        assert not chaos.is_alive()
        _admin(venue, "/admin/faults", FAULTS_OFF)
        person.join(timeout=30)
        # Quiesce: nothing left whose outcome the order manager does not know.
        wait_for(
            lambda: not [o for o in daemon.status()["open_orders"] if o["state"] in ("intent", "submitted", "unknown")],
            30,
            0.2,
            "no order in doubt",
        )
        # No phantom position: with no new orders, the ledger comes to hold
        # exactly the venue's positions (the person's shares included).
        daemon.ok("halt", reason="end of chaos: compare positions")

        def ledger_positions():
            return {p["symbol"]: p["qty"] for p in daemon.status()["positions"]}

        try:
            wait_for(lambda: ledger_positions() == venue.positions(), 30, 0.2, "ledger positions equal to the venue's")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: ledger {ledger_positions()} venue {venue.positions()}") from None
        watch.stop.set()
        watch.thread.join(timeout=10)
        assert watch.samples > 20

        assert daemon.actor("order_manager")["restarts"] >= 1  # the crash landed
        daemon.ok("kill", timeout=90, reason="end of chaos run")
        wait_for(lambda: not venue.positions(), 30, 0.5, "venue flat")
        # The ledger catches up with the liquidation (stream, resync, reconcile).
        wait_for(
            lambda: (s := daemon.status())["positions"] == [] and s["open_orders"] == [],
            60,
            0.5,
            "ledger flat with no open orders",
        )
    finally:
        stop_chaos.set()
        person.stop.set()
        watch.stop.set()
        code = daemon.stop()
    assert code == 0

    from stockade.storage.store import Store

    store = Store.open(short_dir / "data", readonly=True)
    try:
        ledger = dict(store.orders.items())
        fills = list(store.fills.values())
        positions = {p.symbol: p.qty for p in store.positions.values() if p.qty}
    finally:
        store.close()
    at_venue = venue.orders()
    ids = [o.client_order_id for o in at_venue]
    assert len(ids) == len(set(ids)), "a client_order_id twice at the venue"
    ours = [o for o in at_venue if o.client_order_id.startswith("stk-")]
    assert len(ours) >= 10, f"too little trading to prove anything: {len(ours)} orders"
    assert {"burst", "reject", "drop", "silent", "crash", "slow", "slow-end", "by-hand"} <= set(schedule), schedule
    # The person's orders: each at most once at the venue, and most of them placed despite the faults.
    by_hand = [o for o in at_venue if o.client_order_id.startswith("by-hand-")]
    assert {o.client_order_id for o in by_hand} <= set(person.sent)
    assert sum(int(float(o.filled_qty or 0)) > 0 for o in by_hand) >= 3, (by_hand, person.errors)

    # Every venue order is in the ledger, with the venue's fills and final state.
    missing = [o.client_order_id for o in at_venue if o.client_order_id not in ledger]
    assert not missing, f"venue orders the ledger lacks: {missing}"
    filled_by_order: dict[str, int] = defaultdict(int)
    for f in fills:
        filled_by_order[f.client_order_id] += f.qty
    wrong = []
    for o in at_venue:
        mine = ledger[o.client_order_id]
        venue_filled = int(float(o.filled_qty or 0))
        venue_state = str(o.status.value)
        if filled_by_order[o.client_order_id] != venue_filled or mine.filled_qty != venue_filled:
            wrong.append(
                f"{o.client_order_id}: fills {filled_by_order[o.client_order_id]}, "
                f"ledger filled {mine.filled_qty}, venue {venue_filled}"
            )
        expected = {"replaced": "canceled"}.get(venue_state, venue_state)
        if mine.state != expected:
            wrong.append(f"{o.client_order_id}: ledger {mine.state}, venue {venue_state}")
    assert not wrong, "ledger differs from the venue:\n" + "\n".join(wrong)
    # Orders the venue never had were never sent (or refused before placing).
    venue_ids = set(ids)
    for coid, mine in ledger.items():
        if coid not in venue_ids:
            assert mine.state in ("rejected", "canceled") and mine.filled_qty == 0, (coid, mine.state)
    assert positions == venue.positions() == {}
    assert not any(f.client_order_id not in venue_ids for f in fills)

    worst = max(watch.worst.values(), default=0.0)
    assert worst <= MAX_UNPROTECTED_S, f"unprotected for {worst:.1f}s: {dict(watch.worst)}"
