"""Performance metrics and the round-trip ledger, on hand-worked examples."""

from __future__ import annotations

import math

import pytest

from stockade.codecs.records import FillRecord, OrderRecord
from stockade.trading import performance as perf
from stockade.trading.trades import UNATTRIBUTED, build_trades, group, proposal_of_order

PNLS = [100.0, -50.0, 200.0, -100.0, 50.0]
RETS = [0.02, -0.01, 0.04, -0.02, 0.01]


def test_trade_metrics_hand_worked():
    assert perf.win_rate(PNLS) == pytest.approx(3 / 5)
    assert perf.profit_factor(PNLS) == pytest.approx(350 / 150)
    assert perf.expectancy(PNLS) == pytest.approx(40.0)
    # mean 0.008; deviations .012 -.018 .032 -.028 .002; squares sum 0.00228; /4 = 0.00057
    assert perf.sharpe(RETS) == pytest.approx(0.008 / math.sqrt(0.00057))
    # downside: sqrt((0.01^2 + 0.02^2) / 5) = sqrt(0.0001)= 0.01
    assert perf.sortino(RETS) == pytest.approx(0.8)
    assert perf.sharpe(RETS, 252) == pytest.approx(0.008 / math.sqrt(0.00057) * math.sqrt(252))


def test_edge_cases_are_none_or_inf():
    assert perf.win_rate([]) is None and perf.expectancy([]) is None and perf.profit_factor([]) is None
    assert perf.profit_factor([10.0, 5.0]) == math.inf
    assert perf.profit_factor([0.0]) is None
    assert perf.sharpe([0.01]) is None and perf.sharpe([0.01, 0.01]) is None  # no spread
    assert perf.sortino([0.01, 0.02]) is None  # no losing observation
    assert perf.value_at_risk([]) is None and perf.expected_shortfall([]) is None
    assert perf.max_drawdown([]) is None


def test_max_drawdown_of_equity_and_pnl_curves():
    dd = perf.max_drawdown([100.0, 120.0, 90.0, 130.0, 104.0])
    assert dd.amount == pytest.approx(30.0) and dd.pct == pytest.approx(25.0)  # 120 -> 90
    curve = perf.cumulative(PNLS)
    assert curve == [0.0, 100.0, 50.0, 250.0, 150.0, 200.0]
    dd = perf.max_drawdown(curve)
    assert dd.amount == pytest.approx(100.0) and dd.pct == pytest.approx(40.0)  # 250 -> 150
    dd = perf.max_drawdown(perf.cumulative([-10.0, -5.0]))  # peak 0: no percentage
    assert dd.amount == pytest.approx(15.0) and dd.pct is None
    assert perf.max_drawdown([1.0, 2.0, 3.0]) == perf.Drawdown(0.0, 0.0)


def test_historical_var_and_expected_shortfall():
    returns = [x / 100 for x in range(-10, 10)]  # 20 returns: -0.10 ... 0.09
    # k = ceil(0.05 * 20) = 1: the worst return
    assert perf.value_at_risk(returns) == pytest.approx(0.10)
    assert perf.expected_shortfall(returns) == pytest.approx(0.10)
    returns = [x / 100 for x in range(-20, 20)]  # 40: k = 2, worst -0.20 and -0.19
    assert perf.value_at_risk(returns) == pytest.approx(0.19)
    assert perf.expected_shortfall(returns) == pytest.approx(0.195)
    assert perf.value_at_risk(RETS) == pytest.approx(0.02)  # n=5: k=1
    assert perf.value_at_risk([0.01, 0.02]) == pytest.approx(-0.01)  # even the tail made money
    with pytest.raises(ValueError):
        perf.value_at_risk(RETS, 1.0)


def test_simple_returns_and_trade_stats():
    assert perf.simple_returns([100.0, 110.0, 99.0]) == pytest.approx([0.1, -0.1])
    st = perf.trade_stats(PNLS, RETS)
    assert st.trades == 5 and st.wins == 3 and st.net_pnl == pytest.approx(200.0)
    assert st.max_drawdown == pytest.approx(100.0) and st.var_95 == pytest.approx(0.02)


# ---- the ledger --------------------------------------------------------------------


def order(coid, side, qty, proposal_id="", parent_id=None):
    return OrderRecord(
        client_order_id=coid,
        intent_id=coid,
        symbol="X",
        side=side,
        qty=qty,
        order_type="market",
        created_ns=0,
        updated_ns=0,
        proposal_id=proposal_id,
        parent_id=parent_id,
    )


def fill(n, coid, side, qty, price, symbol="X"):
    return FillRecord(
        exec_id=f"e{n}",
        client_order_id=coid,
        broker_order_id=None,
        symbol=symbol,
        side=side,
        qty=qty,
        price=price,
        ts_ns=n,
    )


def test_round_trips_fifo_with_brackets_partials_and_open_remainder():
    orders = {
        o.client_order_id: o
        for o in (
            order("entry1", "buy", 10, "p1"),
            order("tp1", "sell", 10, parent_id="entry1"),
            order("entry2", "buy", 5, "p2"),
            order("exit2", "sell", 8),
            order("short3", "sell", 4, "p3"),
            order("cover3", "buy", 4),
        )
    }
    members = {"p1": ("momentum", "gbm"), "p2": ("breakout",), "p3": ("momentum",)}
    fills = [
        fill(1, "entry1", "buy", 6, 100.0),
        fill(2, "entry1", "buy", 4, 101.0),  # avg 100.4
        fill(3, "tp1", "sell", 10, 102.0),  # closes entry1: (102-100)*6 + (102-101)*4 = 16
        fill(4, "entry2", "buy", 5, 50.0),
        fill(5, "exit2", "sell", 8, 49.0),  # closes entry2 (-5) and opens a 3-share short (unattributed)
        fill(6, "cover3", "buy", 3, 48.0),  # closes that short: +3
        fill(7, "short3", "sell", 4, 47.0),  # a short left open
    ]
    trades = build_trades(fills, orders, members, marks={"X": 46.0})
    by = {t.entry_order_id: t for t in trades}
    t1 = by["entry1"]
    assert t1.closed and t1.qty == 10 and t1.entry_price == pytest.approx(100.4)
    assert t1.realized_pnl == pytest.approx(16.0) and t1.exit_price == pytest.approx(102.0)
    assert t1.members == ("momentum", "gbm") and t1.proposal_id == "p1"
    assert t1.ret == pytest.approx(16.0 / 1004.0)
    t2 = by["entry2"]
    assert t2.closed and t2.realized_pnl == pytest.approx(-5.0) and t2.members == ("breakout",)
    t3 = by["exit2"]
    assert t3.direction == "short" and t3.closed and t3.realized_pnl == pytest.approx(3.0) and t3.members == ()
    t4 = by["short3"]
    assert not t4.closed and t4.open_qty == 4 and t4.realized_pnl == 0.0
    assert t4.unrealized_pnl == pytest.approx(4.0) and t4.mark == 46.0  # short 47 marked at 46
    members_groups = group(trades, "member")
    assert [t.entry_order_id for t in members_groups["momentum"]] == ["entry1", "short3"]
    assert [t.entry_order_id for t in members_groups[UNATTRIBUTED]] == ["exit2"]
    assert list(group(trades, "symbol")) == ["X"]


def test_proposal_of_a_leg_is_its_parents():
    orders = {"a": order("a", "buy", 1, "p"), "b": order("b", "sell", 1, parent_id="a")}
    assert proposal_of_order("b", orders) == "p" and proposal_of_order("zzz", orders) == ""
