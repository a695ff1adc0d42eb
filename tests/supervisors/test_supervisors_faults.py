"""FaultInjector: refuses when disabled, crash once, hang bounded and releasable."""

import threading

import pytest

from stockade.supervisors.faults import FaultInjectionDisabled, FaultInjector, InjectedCrash


def test_disabled_injector_refuses_and_does_nothing():
    faults = FaultInjector()
    with pytest.raises(FaultInjectionDisabled, match="fault_injection"):
        faults.crash("a")
    with pytest.raises(FaultInjectionDisabled):
        faults.hang("a", 1.0)
    faults.apply("a")  # no-op


def test_crash_fires_once_on_the_named_actor_only():
    faults = FaultInjector(enabled=True)
    faults.crash("a")
    assert faults.pending() == {"a": "crash"}
    faults.apply("b")
    with pytest.raises(InjectedCrash):
        faults.apply("a")
    faults.apply("a")  # disarmed
    assert faults.pending() == {}


def test_hang_blocks_until_released():
    faults = FaultInjector(enabled=True)
    faults.hang("a", 30.0)
    done = threading.Event()

    def victim():
        faults.apply("a")
        done.set()

    thread = threading.Thread(target=victim, daemon=True)
    thread.start()
    assert not done.wait(0.05)  # blocked (bounded wait, not synchronisation)
    faults.release()
    assert done.wait(5.0)
    thread.join(5.0)
    assert faults.hanging() == []


def test_hang_times_out_by_itself():
    faults = FaultInjector(enabled=True)
    faults.hang("a", 0.01)
    faults.apply("a")  # returns after ~10 ms


def test_release_does_not_cancel_a_later_hang():
    faults = FaultInjector(enabled=True)
    faults.release()
    faults.hang("a", 0.2)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (faults.apply("a"), done.set()), daemon=True)
    thread.start()
    assert not done.wait(0.05)
    faults.release()
    assert done.wait(5.0)


@pytest.mark.parametrize("seconds", [0, -1, 1e9])
def test_hang_seconds_are_bounded(seconds):
    with pytest.raises(ValueError):
        FaultInjector(enabled=True).hang("a", seconds)
