"""The RiskGuard actor in-process: real pykka actors, a real router, real lmdb in
tmp_path; its peers (voter, order manager, alerter, kill switch) are recording
actors. Loss alerts and the loss breaker, the optional day-trade budget (no
pattern-day-trader rule), in-flight entries, exchange-date counters, decision records."""

from __future__ import annotations

import queue
import time
import uuid

import pytest
from actor_probes import add_recorder, services, start_actor
from waiting import wait_for

from stockade.actors.risk_guard import RiskGuard
from stockade.codecs.messages import (
    AccountSnapshot,
    Alert,
    ClockSnapshot,
    Flatten,
    Kill,
    OrderIntent,
    OrderUpdate,
    Position,
    Proposal,
    Rejection,
    Tick,
)
from stockade.codecs.records import DayCounters, OrderRecord, PositionRecord
from stockade.config.settings import RiskSettings, Settings
from stockade.storage.store import Store
from stockade.supervisors.faults import CrashNow
from stockade.supervisors.router import Router, mailbox_size
from stockade.trading.market_hours import exchange_date

PEERS = ("ensemble_voter", "order_manager", "alerter", "emergency_stop", "reconciler")


class Harness:
    def __init__(self, tmp_path, day_trades_today: int = 0, **risk) -> None:
        self.settings = Settings(risk=RiskSettings(**risk))
        self.store = Store.open(tmp_path / "data")
        if day_trades_today:  # as a previous run of the risk guard stored them
            key = exchange_date(time.time_ns())
            self.store.counters.put(key, DayCounters(date=key, day_trades=day_trades_today))
        self.svc = services(self.settings, self.store)
        self.router = Router()
        self.got: dict[str, queue.Queue] = {}
        self.sinks = []
        for name in PEERS:
            sink, self.got[name] = add_recorder(self.router, name)
            self.sinks.append(sink)
        self.ref = start_actor(self.router, RiskGuard, "risk_guard", {"services": self.svc})

    def tell(self, msg) -> None:
        self.router.tell("risk_guard", msg, "test")

    def market(self, equity=100_000.0, last_equity=100_000.0) -> None:
        now = time.time_ns()
        self.tell(ClockSnapshot(True, now))
        self.tell(AccountSnapshot(equity, last_equity, equity, equity * 2, False, now))

    def propose(self, symbol="AAPL", side="buy", price=100.0) -> str:
        pid = uuid.uuid4().hex
        now = time.time_ns()
        self.tell(Proposal(pid, symbol, side, 0.5, 0.9, price, price - 0.01, price + 0.01, now, now))
        return pid

    def next(self, peer: str, kind: type, timeout: float = 10.0):
        """The next message of `kind` the peer got (others skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{peer} got no {kind.__name__}")
            msg = self.got[peer].get(timeout=left)
            if isinstance(msg, kind):
                return msg

    def verdict(self, pid: str):
        """The stored decision record for `pid`."""

        def find():
            for r in self.store.decisions.latest(100):
                if r.proposal_id == pid:
                    return r
            return None

        return wait_for(find, 10, 0.01, f"decision for {pid}")

    def alerts(self, n_expected: int) -> dict[str, Alert]:
        out: dict[str, Alert] = {}
        while len(out) < n_expected:
            a = self.next("alerter", Alert)
            out[a.key] = a
        return out

    def close(self) -> None:
        self.ref.stop(timeout=10)
        for sink in self.sinks:
            sink.stop(timeout=10)
        self.store.close()


@pytest.fixture
def make(tmp_path):
    made: list[Harness] = []

    def factory(day_trades_today: int = 0, **risk) -> Harness:
        h = Harness(tmp_path / str(len(made)), day_trades_today, **risk)
        made.append(h)
        return h

    yield factory
    for h in made:
        h.close()


def test_loss_alerts_near_and_at_the_limit_then_the_breaker_kills(make):
    h = make(daily_loss_limit_pct=3.0, loss_breaker_pct=5.0, loss_alert_ratio=0.8)
    h.market(equity=97_500.0)  # 2.5% >= 0.8 x 3%: near the daily limit
    a = h.next("alerter", Alert)
    assert (a.key, a.level) == ("risk-daily-loss-near", "WARNING")
    assert "day loss 2.50%" in a.text
    h.market(equity=96_000.0)  # 4%: the daily limit, and 0.8 x 5% of the breaker
    got = h.alerts(2)
    assert got["risk-daily-loss-limit"].level == "CRITICAL"
    assert got["risk-loss-breaker-near"].level == "WARNING"
    pid = h.propose()
    assert h.verdict(pid).rule == "daily_loss"  # entries stop before the breaker
    assert h.got["emergency_stop"].empty()

    h.market(equity=95_000.0)  # exactly 5%: the breaker
    kill = h.next("emergency_stop", Kill)
    assert kill.requested_by == "risk_guard:loss_breaker" and "day loss 5.00%" in kill.reason
    assert h.next("alerter", Alert).key == "loss-breaker"


def test_start_of_day_equity_is_the_exchange_dates_counter(make):
    h = make(daily_loss_limit_pct=3.0)
    # The reconciler's record for today's exchange date says the day began at 103,000
    key = exchange_date(time.time_ns())
    h.store.counters.put(key, DayCounters(date=key, start_equity=103_000.0))
    h.market(equity=100_000.0, last_equity=100_000.0)  # 2.91% down on the day, not flat
    assert h.verdict(h.propose()).allowed
    h.market(equity=99_900.0, last_equity=100_000.0)  # 3.01% down
    r = h.verdict(h.propose(symbol="MSFT"))
    assert r.rule == "daily_loss" and "vs start $103,000.00" in r.reason


def test_no_pattern_day_trader_rule_by_default(make):
    """A $20,000 account with five day trades today trades on: the PDT rule is gone."""
    h = make(day_trades_today=5)
    h.market(equity=20_000.0, last_equity=20_000.0)
    r = h.verdict(h.propose())
    assert r.allowed, r.reason


def test_the_day_trade_budget_counts_stored_and_new_day_trades_and_alerts_once_used_up(make):
    h = make(day_trades_today=2, day_trade_budget=3)
    h.market(equity=200_000.0, last_equity=200_000.0)  # at any equity: no equity bound set
    pid = h.propose()
    intent = h.next("order_manager", OrderIntent)
    assert intent.proposal_id == pid
    # the entry fills and its take-profit closes it the same day: day trade 3
    now = time.time_ns()
    h.store.positions.put("AAPL", PositionRecord(symbol="AAPL", qty=intent.qty, avg_entry_price=100.0, updated_ns=now))
    h.tell(
        OrderUpdate(
            event="fill",
            client_order_id="buy-1",
            broker_order_id="b1",
            symbol="AAPL",
            side="buy",
            status="filled",
            qty=float(intent.qty),
            filled_qty=float(intent.qty),
            filled_avg_price=100.0,
            ts_ns=now,
            proposal_id=pid,
            fill_qty=float(intent.qty),
            price=100.0,
        )
    )
    # AAPL, opened today, reserves a day trade: another entry could make a 4th (and, in
    # mailbox order, this verdict means the fill above was counted)
    r = h.verdict(h.propose(symbol="NVDA"))
    assert not r.allowed and r.rule == "day_trade_budget" and "could make day trade 4 > 3" in r.reason
    h.store.positions.delete("AAPL")
    h.tell(
        OrderUpdate(
            event="fill",
            client_order_id="tp-1",
            broker_order_id="b2",
            symbol="AAPL",
            side="sell",
            status="filled",
            qty=float(intent.qty),
            filled_qty=float(intent.qty),
            filled_avg_price=101.0,
            ts_ns=now,
            fill_qty=float(intent.qty),
            price=101.0,
        )
    )
    a = h.next("alerter", Alert)
    assert (a.key, a.level) == ("risk-day-trade-budget", "WARNING")
    assert "3 day trades in the last 5 sessions" in a.text
    assert wait_for(
        lambda: (c := h.store.counters.get(exchange_date(time.time_ns()))) and c.day_trades == 3,
        10,
        0.01,
        "day trade 3 stored",
    )
    r = h.verdict(h.propose(symbol="MSFT"))
    assert not r.allowed and r.rule == "day_trade_budget"
    assert r.reason.startswith("3 day trades in the last 5 sessions, budget 3")


def test_the_day_trade_budget_below_an_equity_is_the_old_guard_by_choice(make):
    h = make(day_trades_today=3, day_trade_budget=3, day_trade_budget_below_equity=25_000.0)
    h.market(equity=30_000.0, last_equity=30_000.0)
    assert h.verdict(h.propose()).allowed
    h.market(equity=24_000.0, last_equity=30_000.0)
    r = h.verdict(h.propose(symbol="MSFT"))
    assert not r.allowed and r.rule == "day_trade_budget"


def test_no_second_entry_while_one_is_in_flight(make):
    h = make()
    h.market()
    assert h.verdict(h.propose()).allowed
    r = h.verdict(h.propose())
    assert r.rule == "in_flight" and r.reason == "an entry for AAPL is already in flight"
    assert h.verdict(h.propose(symbol="MSFT")).allowed  # other symbols go on
    # the order's end (here a rejection) clears it
    h.tell(
        OrderUpdate(
            event="rejected",
            client_order_id="c1",
            broker_order_id="",
            symbol="AAPL",
            side="buy",
            status="rejected",
            qty=1.0,
            filled_qty=0.0,
            filled_avg_price=None,
            ts_ns=time.time_ns(),
        )
    )
    assert h.verdict(h.propose()).allowed


def test_each_decision_is_stored_with_its_reason(make):
    h = make(max_spread_bps=25.0)
    h.market()
    pid = h.propose(price=100.0)
    r = h.verdict(pid)
    assert r.allowed and r.rule == "all" and "shares, limited by" in r.reason and r.qty > 0
    now = time.time_ns()
    pid = uuid.uuid4().hex
    h.tell(Proposal(pid, "NVDA", "buy", 0.5, 0.9, 100.0, 99.0, 101.0, now, now))  # 200 bps wide
    r = h.verdict(pid)
    assert not r.allowed and r.rule == "spread" and r.reason == "spread 200.0 bps > max 25 bps"
    sent = h.next("ensemble_voter", Rejection)
    assert (sent.proposal_id, sent.rule) == (pid, "spread")


def test_flatten_before_the_close_once_and_no_entries_in_the_window(make):
    h = make(flatten_before_close_min=10.0)
    now = time.time_ns()
    h.store.positions.put("AAPL", PositionRecord(symbol="AAPL", qty=10, avg_entry_price=100.0, updated_ns=now))
    h.market()
    h.tell(ClockSnapshot(True, now, now + 11 * 60 * 1_000_000_000))  # 11 min to the close: not yet
    r = h.verdict(h.propose(symbol="MSFT"))
    assert r.allowed
    assert h.got["emergency_stop"].empty()
    h.tell(ClockSnapshot(True, now, now + 9 * 60 * 1_000_000_000))  # 9 min: flatten
    f = h.next("emergency_stop", Flatten)
    assert f.requested_by == "risk_guard:flatten" and "min to the close <= flatten_before_close_min 10" in f.reason
    r = h.verdict(h.propose(symbol="NVDA"))
    assert r.rule == "close_window"
    h.tell(ClockSnapshot(True, now, now + 8 * 60 * 1_000_000_000))  # once a day
    pid = h.propose(symbol="SPY")
    h.verdict(pid)  # the clock message before it has been handled
    assert h.got["emergency_stop"].empty()


def test_a_crash_seen_in_proposals_blocks_entries_and_asks_for_the_brokers_figure_before_liquidating(make):
    """Between reconciles the guard marks held positions to proposal prices: a
    crash blocks new entries at once, but only the broker's equity liquidates."""
    h = make(daily_loss_limit_pct=3.0, loss_breaker_pct=5.0, max_positions=5)
    now = time.time_ns()
    h.tell(ClockSnapshot(True, now))
    # 200 SPY at 500 = 100k of a 200k account; the day starts at 200k.
    spy = Position("SPY", 200.0, 500.0, market_value=100_000.0)
    h.tell(AccountSnapshot(200_000.0, 200_000.0, 100_000.0, 200_000.0, False, now, positions=(spy,)))
    pid = h.propose("AAPL", price=100.0)
    assert h.next("order_manager", OrderIntent).proposal_id == pid  # nothing marked yet: allowed
    # SPY proposed at 450: the 200 shares are worth 10k less = 5% of start equity.
    crashed = h.propose("SPY", price=450.0)
    decision = h.verdict(crashed)
    assert not decision.allowed, decision
    tick = h.next("reconciler", Tick)
    assert tick.what == "reconcile"
    assert h.got["emergency_stop"].empty()  # no liquidation on a proposal's price alone
    # The broker's snapshot confirms the loss: now the breaker fires.
    h.tell(
        AccountSnapshot(
            190_000.0,
            200_000.0,
            100_000.0,
            190_000.0,
            False,
            time.time_ns(),
            positions=(Position("SPY", 200.0, 500.0, market_value=90_000.0),),
        )
    )
    assert "loss breaker" in h.next("emergency_stop", Kill).reason


def test_a_snapshot_resets_the_marks(make):
    h = make(daily_loss_limit_pct=3.0, loss_breaker_pct=5.0)
    now = time.time_ns()
    h.tell(ClockSnapshot(True, now))
    spy = Position("SPY", 200.0, 500.0, market_value=100_000.0)
    h.tell(AccountSnapshot(200_000.0, 200_000.0, 100_000.0, 200_000.0, False, now, positions=(spy,)))
    assert not h.verdict(h.propose("SPY", price=450.0)).allowed
    # The broker says SPY is back at 500: the stale crashed mark is forgotten.
    h.tell(AccountSnapshot(200_000.0, 200_000.0, 100_000.0, 200_000.0, False, time.time_ns(), positions=(spy,)))
    pid = h.propose("AAPL", price=100.0)
    assert h.next("order_manager", OrderIntent).proposal_id == pid


def test_a_working_entry_counts_its_risk_at_the_stop(make):
    """An open entry order's unfilled shares carry risk at their stop (the [risk] stop_loss_pct
    recovers a market entry's price): with it the portfolio-risk budget has no room left."""
    h = make(max_portfolio_risk_pct=1.0, stop_loss_pct=2.0)
    h.market()
    assert h.verdict(h.propose(symbol="NVDA")).allowed  # room while nothing is working
    now = time.time_ns()
    # A market buy of 500 MSFT with its bracket stop at 98: entry 98 / (1 - 2%) = 100, risk $1,000 = 1% of equity.
    h.store.put_order(
        OrderRecord(
            client_order_id="working-1",
            intent_id="i1",
            symbol="MSFT",
            side="buy",
            qty=500,
            order_type="market",
            stop_loss=98.0,
            take_profit=104.0,
            order_class="bracket",
            state="accepted",
            created_ns=now,
            updated_ns=now,
        )
    )
    r = h.verdict(h.propose(symbol="AAPL"))
    assert not r.allowed and r.rule == "sizing", r
    assert r.reason == "size rounds to 0 shares, limited by portfolio risk room 0.00"


def test_each_proposal_sees_the_ledgers_positions_as_stored_now(make):
    """The guard keeps the positions it derived while the stored records are unchanged:
    a record added, changed or removed is seen by the very next proposal."""
    h = make(max_positions=1)
    h.market()
    now = time.time_ns()
    first = h.verdict(h.propose("AMD"))  # nothing held: room for one
    assert first.allowed, first
    h.store.positions.put("AAPL", PositionRecord(symbol="AAPL", qty=10, avg_entry_price=100.0, updated_ns=now))
    held = h.verdict(h.propose("MSFT"))
    assert not held.allowed and held.rule == "max_positions", held
    h.store.positions.put("AAPL", PositionRecord(symbol="AAPL", qty=0, avg_entry_price=100.0, updated_ns=now))
    sold = h.verdict(h.propose("MSFT"))
    assert sold.allowed, sold
    h.store.positions.delete("AAPL")
    h.store.positions.put("NVDA", PositionRecord(symbol="NVDA", qty=5, avg_entry_price=100.0, updated_ns=now))
    other = h.verdict(h.propose("INTC"))
    assert not other.allowed and other.rule == "max_positions", other


def _committed_decisions(store: Store) -> list[str]:
    """Proposal ids of the decision records committed, oldest first (read without settling the buffer)."""
    with store.read() as txn:
        return [r.proposal_id for _, r in store.decisions.table.items(txn=txn)]


@pytest.mark.parametrize("end", ["crash", "clean_stop"])
def test_a_burst_of_verdicts_is_a_group_commit_kept_through_a_crash_and_a_stop(make, tmp_path, end):
    # The verdicts are audit records: no commit (a flush in "safe" mode) each.
    # They wait in the Store's buffer, not the actor's: a crash of the guard
    # loses none, a clean stop commits them.
    h = make(max_spread_bps=25.0)
    audit = h.store.env.audit
    audit.max_delay_s = 3600.0  # no timer commit: only the paths under test
    h.market()
    wait_for(lambda: mailbox_size(h.ref) == 0, 10, 0.01, "market state taken")
    audit.flush()
    n = 20
    now = time.time_ns()
    pids = [uuid.uuid4().hex for _ in range(n)]
    for pid in pids:  # 200 bps wide: each one rejected and recorded
        h.tell(Proposal(pid, "NVDA", "buy", 0.5, 0.9, 100.0, 99.0, 101.0, now, now))
    wait_for(lambda: audit.pending == n, 10, 0.005, "every verdict recorded")
    assert pids[0] not in _committed_decisions(h.store)  # none paid a commit of its own
    if end == "crash":
        h.ref.tell(CrashNow())
        wait_for(lambda: not h.ref.is_alive(), 10, 0.01, "the guard crashed")
        assert audit.pending == n  # the crash took nothing with it
        stored = [r.proposal_id for r in reversed(h.store.decisions.latest(n))]  # a reader settles them
    else:
        h.ref.stop(timeout=10)
        h.store.close()
        h.store = Store.open(tmp_path / "0" / "data")  # the harness's data dir
        stored = _committed_decisions(h.store)
    assert stored == pids  # all of them, in the order decided
