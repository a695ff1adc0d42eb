"""Stockade's supervision tree.

    root (one_for_one)
    ├── emergency_stop          critical: its failure means full liquidation
    ├── alerter
    ├── execution (one_for_one)
    │   ├── order_manager       rebuilds from the journal and the broker
    │   ├── reconciler
    │   └── risk_guard
    └── market (rest_for_one)   a new stream restarts everything after it
        ├── quote_streamer
        ├── analyzers (one_for_one)
        │   └── analyzer:<SYMBOL> ...
        └── ensemble_voter
    └── model_keeper            the models' lifecycle: retrain, compare, promote

EmergencyStop and Alerter start first so that everything after them can
alert and be stopped; they stop last. The root exhausting its restart
intensity (or EmergencyStop failing) calls `on_exhausted`, which the daemon
wires to a full liquidation that needs no actor alive.
"""

from __future__ import annotations

from collections.abc import Callable

from stockade.actors import names
from stockade.actors.alerter import Alerter
from stockade.actors.analyzer import WARMUP_EXTRA, Analyzer, warmup_bar_count
from stockade.actors.emergency_stop import EmergencyStop
from stockade.actors.ensemble_voter import EnsembleVoter
from stockade.actors.model_keeper import ModelKeeper
from stockade.actors.order_manager import OrderManager
from stockade.actors.quote_streamer import QuoteStreamer, analyzer_name
from stockade.actors.reconciler import Reconciler
from stockade.actors.risk_guard import RiskGuard
from stockade.actors.services import Services
from stockade.broker.rest import data_feed
from stockade.broker.warmup_bars import WarmupBars
from stockade.supervisors.pool import POOL_EXTRA, ActorPool
from stockade.supervisors.runtime import Tree, start_tree
from stockade.supervisors.spec import ChildSpec, RestartPolicy, Strategy
from stockade.supervisors.supervisor import supervisor_spec

SUPERVISOR_NAMES = names.SUPERVISOR_NAMES


def _policy(svc: Services, strategy: Strategy) -> RestartPolicy:
    return RestartPolicy.from_settings(svc.settings.supervision, strategy, alerts_to=names.ALERTER)


def tree_children(svc: Services) -> list[ChildSpec]:
    """The root's children, in start order."""
    # Start-up work (warm-up, first REST calls) may take a while on a slow
    # link: give it room before a missed heartbeat counts as a hang.
    grace = max(10.0, svc.settings.orders.request_timeout_s * 2)
    analyzers = [
        ChildSpec(name=analyzer_name(sym), start=Analyzer.start, start_timeout_s=grace * 2)
        for sym in svc.settings.trading.symbols
    ]
    return [
        ChildSpec(name=names.EMERGENCY_STOP, start=EmergencyStop.start, critical=True, start_timeout_s=grace),
        ChildSpec(name=names.ALERTER, start=Alerter.start, start_timeout_s=grace),
        supervisor_spec(
            names.EXECUTION,
            _policy(svc, "one_for_one"),
            [
                ChildSpec(
                    name=names.ORDER_MANAGER,
                    start=OrderManager.start,
                    shutdown_timeout_s=10.0,
                    start_timeout_s=grace * 3,
                ),
                ChildSpec(name=names.RECONCILER, start=Reconciler.start, start_timeout_s=grace),
                ChildSpec(name=names.RISK_GUARD, start=RiskGuard.start, start_timeout_s=grace),
            ],
        ),
        supervisor_spec(
            names.MARKET,
            _policy(svc, "rest_for_one"),
            [
                ChildSpec(
                    name=names.QUOTE_STREAMER, start=QuoteStreamer.start, shutdown_timeout_s=8.0, start_timeout_s=grace
                ),
                supervisor_spec(names.ANALYZERS, _policy(svc, "one_for_one"), analyzers),
                ChildSpec(name=names.ENSEMBLE_VOTER, start=EnsembleVoter.start, start_timeout_s=grace),
            ],
        ),
        # Outside the market branch: its restart never restarts the analyzers.
        ChildSpec(name=names.MODEL_KEEPER, start=ModelKeeper.start, start_timeout_s=grace),
    ]


def start_stockade_tree(svc: Services, on_exhausted: Callable[[str], None], data_dir: str) -> Tree:
    """Start every actor under supervision; returns the tree handle.

    The analyzers (one per symbol) share `[runtime] analyzer_threads` threads
    (supervisors/pool.py); a worker stuck for half a heartbeat timeout is
    replaced, so a hung analyzer neither starves the others' heartbeats nor
    costs the pool capacity for good.
    """
    s = svc.settings
    pool = ActorPool(s.runtime.analyzer_threads, name="analyzers", hang_after_s=s.supervision.heartbeat_timeout_s / 2)
    # Warm-up bars for many symbols per request: 500 symbols stay far under 200 data calls/min.
    warmup = WarmupBars(
        lambda: svc.broker.data_client(raw_data=True), s.trading.symbols, warmup_bar_count(s), data_feed(s.alpaca.feed)
    )
    try:
        tree = start_tree(
            _policy(svc, "one_for_one"),
            tree_children(svc),
            name=names.ROOT,
            on_exhausted=on_exhausted,
            faults=svc.faults,
            extras={
                "services": svc,
                "data_dir": data_dir,
                POOL_EXTRA: pool,
                WARMUP_EXTRA: warmup,
                "model_keeper": True,
            },
        )
    except BaseException:
        pool.stop()
        raise
    tree.close_with(pool.stop)
    return tree
