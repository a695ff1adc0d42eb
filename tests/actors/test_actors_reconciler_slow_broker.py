"""The issue's case: a broker slower than the heartbeat timeout must not get
the reconciler replaced pass after pass (each replacement used to leave a
zombie finishing a stale pass). The real Reconciler under a real supervisor,
real alpaca-py against the in-process venue with 700 ms added to every REST
answer, a 0.3 s heartbeat timeout: each pass takes seconds, all of it in
bounded REST calls, so it is busy, never hung."""

from __future__ import annotations

from actor_probes import venue_services
from waiting import wait_for

from stockade.actors.reconciler import Reconciler
from stockade.codecs.records import Reconciled
from stockade.config.settings import ReconcilerSettings, Settings
from stockade.supervisors.runtime import start_tree
from stockade.supervisors.spec import ChildSpec, RestartPolicy
from stockade.venue.faults import Faults

POLICY = RestartPolicy(
    max_restarts=10,
    period_s=60.0,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
    heartbeat_interval_s=0.05,
    heartbeat_timeout_s=0.3,
    jitter_seed=3,
)


def test_reconciler_on_a_slow_broker_is_busy_not_replaced(tmp_path):
    settings = Settings(reconciler=ReconcilerSettings(interval_s=1.0, max_unprotected_s=2.0))
    with venue_services(tmp_path / "data", settings, seed=21, faults=Faults(latency_ms=700.0)) as svc:
        tree = start_tree(POLICY, [ChildSpec(name="reconciler", start=Reconciler.start)], extras={"services": svc})
        try:

            def passes() -> int:
                return sum(isinstance(event, Reconciled) for _, event in svc.store.journal.read())

            wait_for(lambda: passes() >= 2, timeout=90, interval=0.2, what="two slow reconcile passes")
            status = tree.router.status("reconciler")
            assert (status.generation, status.restarts) == (1, 0), status
            assert tree.router.refusal_counts() == {}
            assert tree.healthy()
        finally:
            assert tree.stop(timeout=30)
