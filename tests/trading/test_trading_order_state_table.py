"""The order state machine's table: every (state, event) pair has exactly one row,
and the late-news rows keep the state where it is."""

import pytest

from stockade.trading.order_states import (
    ORDER_STATE_TABLE,
    OrderEvent,
    OrderStatus,
    Row,
    _build,
    next_state,
)


def test_the_table_covers_every_pair_once():
    table = _build(ORDER_STATE_TABLE)
    assert len(table) == len(OrderStatus) * len(OrderEvent)


def test_late_news_rows_stay_put():
    late = [row for row in ORDER_STATE_TABLE if row.late]
    assert late, "the late-news rows are explicit"
    for row in late:
        assert row.to is None and not row.invalid
        for state in row.states:
            for event in row.events:
                assert next_state(state.value, event) == state.value


def test_a_gap_or_an_overlap_fails_the_build():
    with pytest.raises(AssertionError, match="no row"):
        _build(ORDER_STATE_TABLE[1:])
    with pytest.raises(AssertionError, match="two rows"):
        _build((*ORDER_STATE_TABLE, Row(frozenset((OrderStatus.INTENT,)), ("submit",), OrderStatus.SUBMITTED)))
    with pytest.raises(ValueError):
        _build((Row(frozenset((OrderStatus.INTENT,)), ("submitt",), OrderStatus.SUBMITTED),))
