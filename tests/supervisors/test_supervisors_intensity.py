"""Pure restart logic: restart types, strategies, backoff, intensity window, spec validation."""

import random

import pytest

from stockade.supervisors.intensity import RestartIntensity, backoff_delay, restart_targets, should_restart
from stockade.supervisors.spec import ChildSpec, RestartPolicy


@pytest.mark.parametrize(
    "restart, abnormal, expected",
    [
        ("permanent", True, True),
        ("permanent", False, True),
        ("transient", True, True),
        ("transient", False, False),
        ("temporary", True, False),
        ("temporary", False, False),
    ],
)
def test_restart_types(restart, abnormal, expected):
    assert should_restart(restart, abnormal) is expected


ORDER = ["a", "b", "c", "d"]


def test_one_for_one_restarts_only_the_failed():
    assert restart_targets("one_for_one", ORDER, "c") == ["c"]


def test_one_for_all_restarts_everyone_in_start_order():
    assert restart_targets("one_for_all", ORDER, "c") == ORDER


def test_rest_for_one_restarts_the_failed_and_those_started_after_it():
    assert restart_targets("rest_for_one", ORDER, "b") == ["b", "c", "d"]
    assert restart_targets("rest_for_one", ORDER, "d") == ["d"]
    assert restart_targets("rest_for_one", ORDER, "a") == ORDER


def test_unknown_child_is_an_error():
    with pytest.raises(ValueError):
        restart_targets("one_for_one", ORDER, "zz")


def test_backoff_doubles_and_caps_without_jitter():
    delays = [backoff_delay(k, 0.1, 1.0, 0.0) for k in range(1, 7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff_delay(0, 0.1, 1.0, 0.0) == pytest.approx(0.1)
    assert backoff_delay(10_000, 0.1, 1.0, 0.0) == pytest.approx(1.0)  # no overflow


def test_backoff_jitter_only_shortens_and_is_reproducible_with_a_seed():
    first = [backoff_delay(k, 0.1, 1.0, 0.5, random.Random(42)) for k in range(1, 8)]
    again = [backoff_delay(k, 0.1, 1.0, 0.5, random.Random(42)) for k in range(1, 8)]
    assert first == again
    for k, delay in enumerate(first, start=1):
        nominal = min(1.0, 0.1 * 2 ** (k - 1))
        assert nominal * 0.5 <= delay <= nominal


def test_backoff_jitter_spreads_capped_restarts():
    rng = random.Random(1)
    delays = {backoff_delay(20, 0.1, 1.0, 0.3, rng) for _ in range(20)}
    assert len(delays) > 1 and max(delays) <= 1.0


def test_intensity_allows_max_restarts_in_period_then_refuses():
    window = RestartIntensity(max_restarts=3, period_s=10.0)
    assert window.record("a", 0.0) == (True, 1)
    assert window.record("b", 1.0) == (True, 1)
    assert window.record("a", 2.0) == (True, 2)
    assert window.record("a", 3.0) == (False, 3)


def test_intensity_window_slides():
    window = RestartIntensity(max_restarts=2, period_s=5.0)
    assert window.record("a", 0.0)[0]
    assert window.record("a", 1.0)[0]
    # The restart at t=0 is out of the window at t=5.
    assert window.record("a", 5.0) == (True, 2)
    assert window.count(5.0) == 2
    assert window.count(100.0) == 0


def test_zero_max_restarts_escalates_on_first_failure():
    assert RestartIntensity(0, 1.0).record("a", 0.0)[0] is False


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "one_for_some"},
        {"max_restarts": -1},
        {"period_s": 0},
        {"backoff_initial_s": 2.0, "backoff_max_s": 1.0},
        {"jitter": 1.5},
        {"heartbeat_interval_s": 0},
        {"heartbeat_timeout_s": -1},
    ],
)
def test_policy_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)


def test_child_spec_validation():
    ChildSpec(name="ok", start=lambda ctx: None)
    with pytest.raises(ValueError):
        ChildSpec(name="", start=lambda ctx: None)
    with pytest.raises(ValueError):
        ChildSpec(name="x", start=lambda ctx: None, restart="sometimes")
    with pytest.raises(ValueError):
        ChildSpec(name="x", start="not callable")
    with pytest.raises(ValueError):
        ChildSpec(name="x", start=lambda ctx: None, shutdown_timeout_s=0)
