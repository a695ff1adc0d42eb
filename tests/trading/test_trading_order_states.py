"""The order state machine: pure transitions, no storage."""

import itertools

import pytest

from stockade.trading.order_states import (
    EVENTS,
    OPEN,
    STATES,
    TERMINAL,
    InvalidTransition,
    next_state,
    state_from_broker_status,
)


def run(state, *events):
    for event in events:
        state = next_state(state, event)
    return state


def test_happy_path_with_partial_fills():
    assert run("intent", "submit", "pending_new", "new", "partial_fill", "partial_fill", "fill") == "filled"


def test_submit_timeout_then_broker_news_resolves_unknown():
    assert run("intent", "submit", "submit_unknown") == "unknown"
    assert run("unknown", "new") == "accepted"
    assert run("unknown", "fill") == "filled"
    assert run("unknown", "not_found") == "rejected"
    assert run("unknown", "submit") == "submitted"  # a retry with the same client_order_id


def test_fill_after_cancel_request_is_still_a_fill():
    assert run("accepted", "cancel_request") == "accepted"
    assert run("accepted", "cancel_request", "fill") == "filled"
    assert run("partially_filled", "cancel_request", "partial_fill", "canceled") == "canceled"


def test_full_fill_reported_after_cancel_wins():
    # The cancel raced a full fill and the reports came out of order.
    assert next_state("canceled", "fill") == "filled"
    assert next_state("expired", "fill") == "filled"


def test_late_reports_do_not_move_terminal_states():
    assert next_state("filled", "partial_fill") == "filled"
    assert next_state("filled", "new") == "filled"
    assert next_state("filled", "canceled") == "filled"
    assert next_state("canceled", "partial_fill") == "canceled"
    assert next_state("canceled", "pending_cancel") == "canceled"
    assert next_state("rejected", "new") == "rejected"


def test_late_ack_after_partial_fill_keeps_partial():
    assert next_state("partially_filled", "new") == "partially_filled"
    assert next_state("partially_filled", "pending_cancel") == "partially_filled"


def test_late_submit_rejection_after_ack_is_ignored():
    # e.g. a retry answered "client order id already exists"
    assert next_state("accepted", "submit_rejected") == "accepted"
    assert next_state("submitted", "submit_rejected") == "rejected"


@pytest.mark.parametrize(
    "state, event",
    [
        ("accepted", "submit"),
        ("filled", "submit"),
        ("rejected", "fill"),
        ("rejected", "partial_fill"),
        ("accepted", "not_found"),
        ("filled", "cancel_request"),
        ("submitted", "abandon"),
    ],
)
def test_invalid_transitions_raise(state, event):
    with pytest.raises(InvalidTransition) as info:
        next_state(state, event)
    assert state in str(info.value) and event in str(info.value)


def test_unknown_names_raise_value_error():
    with pytest.raises(ValueError):
        next_state("accepted", "teleport")
    with pytest.raises(ValueError):
        next_state("pending", "fill")


def test_abandon_only_unsent_intent():
    assert next_state("intent", "abandon") == "canceled"


def test_terminal_states_stay_terminal_for_every_event():
    for state, event in itertools.product(sorted(TERMINAL), sorted(EVENTS)):
        try:
            new = next_state(state, event)
        except InvalidTransition:
            continue
        assert new in TERMINAL, (state, event, new)


def test_every_result_is_a_known_state():
    for state, event in itertools.product(sorted(STATES), sorted(EVENTS)):
        try:
            assert next_state(state, event) in STATES
        except InvalidTransition:
            pass


def test_broker_status_mapping():
    assert state_from_broker_status("filled") == "filled"
    assert state_from_broker_status("PARTIALLY_FILLED") == "partially_filled"
    assert state_from_broker_status("pending_new") == "accepted"
    assert state_from_broker_status("replaced") == "canceled"
    assert state_from_broker_status("something_new") == "unknown"
    assert "unknown" in OPEN and "intent" in OPEN


def test_replaced_ends_the_old_order_and_late_news_cannot_revive_it():
    assert run("accepted", "pending_replace", "replaced") == "canceled"
    assert run("accepted", "replaced", "new", "pending_replace") == "canceled"
    assert next_state("filled", "replaced") == "filled"  # the fill beat the replace


def test_duplicate_and_out_of_order_updates():
    # Every update delivered twice, and the fill before the acknowledgement.
    assert run("submitted", "fill", "fill", "new", "new", "partial_fill") == "filled"
    assert run("accepted", "partial_fill", "partial_fill", "new", "partial_fill") == "partially_filled"


def _order(filled_qty=0, avg=None):
    from stockade.codecs.records import OrderRecord

    return OrderRecord(
        client_order_id="stk-x",
        intent_id="x",
        symbol="AAPL",
        side="buy",
        qty=10,
        order_type="market",
        state="accepted",
        created_ns=0,
        updated_ns=0,
        filled_qty=filled_qty,
        filled_avg_price=avg,
    )


def test_fill_increment_records_each_execution_once():
    from stockade.trading.ledger import fill_increment

    assert fill_increment(_order(), 4, 100.0, 100.0) == (4, 100.0)
    # The same cumulative report again (a replay, or a resync agreeing): nothing new.
    assert fill_increment(_order(4, 100.0), 4, 100.0, 100.0) is None
    # An older report arriving late: nothing new, never negative.
    assert fill_increment(_order(6, 100.0), 4, 100.0, 100.0) is None
    # A missed partial: the increment's price comes from the averages.
    qty, price = fill_increment(_order(4, 100.0), 10, 101.2, None)
    assert qty == 6 and price == pytest.approx(102.0)
