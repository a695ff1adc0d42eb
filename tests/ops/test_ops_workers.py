"""ops/workers.py: results in unit order whatever finishes first; errors kept, never retried; dead workers retried."""

from __future__ import annotations

import pytest
import sweep_helpers

from stockade.ops.workers import Backend, WorkersError, backend_from_args, run_units

POOL = Backend(kind="pool", workers=2, max_retries=1)


def test_inline_and_pool_give_the_same_results_in_unit_order():
    units = [(f"u{i}", x) for i, x in enumerate([3, -1, 5, 0])]
    done = []
    inline = run_units(sweep_helpers.square, units, Backend(), on_done=lambda r: done.append(r.key))
    pooled = run_units(sweep_helpers.square, units, POOL)
    assert [(r.key, r.ok, r.value, r.error) for r in inline] == [
        ("u0", True, 9, None),
        ("u1", False, None, "ValueError: negative: -1"),
        ("u2", True, 25, None),
        ("u3", True, 0, None),
    ]
    assert [(r.key, r.ok, r.value, r.error, r.attempts) for r in pooled] == [
        (r.key, r.ok, r.value, r.error, 1) for r in inline
    ]  # an error in the unit is its result: not retried
    assert sorted(done) == ["u0", "u1", "u2", "u3"]


def test_a_unit_whose_worker_always_dies_fails_after_its_retries_and_the_others_complete():
    results = run_units(sweep_helpers.exit_on_seven, [("a", 2), ("b", 7), ("c", 3)], POOL)
    a, b, c = results
    # The others may have been running when b's worker died and taken down with it: rerun, never failed.
    assert (a.ok, a.value, c.ok, c.value) == (True, 4, True, 9)
    assert a.attempts in (1, 2) and c.attempts in (1, 2)
    # b: its start in the shared pool, then alone until it has died more than max_retries (1) times.
    assert not b.ok and b.attempts == 3 and b.error == "worker died (2 times running this unit alone)", b


def test_backend_flags():
    assert backend_from_args(None, None) == Backend(kind="inline")
    assert backend_from_args(None, 1) == Backend(kind="inline")
    assert backend_from_args(None, 3) == Backend(kind="pool", workers=3)
    assert backend_from_args("auto", 2) == Backend(kind="ray", workers=2, ray_address="auto")
    with pytest.raises(WorkersError, match="--workers = 0"):
        backend_from_args(None, 0)
    with pytest.raises(ValueError, match="unique"):
        run_units(sweep_helpers.square, [("x", 1), ("x", 2)], Backend())
