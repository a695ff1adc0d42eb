"""What the daemon hands every actor (through `ActorContext.extras["services"]`).

Not an actor: shared, thread-safe services. Each actor builds its own broker
clients from `BrokerAccess`, so no client object is shared between threads.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import lmdb

from stockade.broker.rest import BrokerEndpoints, make_data_client, make_trading_client, redact
from stockade.broker.token_bucket import TokenBucket, shared_bucket
from stockade.codecs.messages import TradingState
from stockade.codecs.records import TradingStateRecord, TradingStateSet
from stockade.config.settings import Settings
from stockade.storage.store import Store
from stockade.supervisors.clock import WALL_CLOCK, Clock
from stockade.supervisors.faults import FaultInjector


@dataclasses.dataclass(frozen=True)
class BrokerAccess:
    """Where the broker is and the key pair to use. The secret never prints."""

    venue: str  # "embedded", "alpaca-paper", "alpaca-live"
    endpoints: BrokerEndpoints
    key: str = dataclasses.field(repr=False)
    secret: str = dataclasses.field(repr=False)
    paper: bool = True
    request_timeout_s: float = 10.0

    def trading_client(self) -> Any:
        return make_trading_client(
            self.key, self.secret, self.endpoints.trading_url, paper=self.paper, timeout_s=self.request_timeout_s
        )

    def data_client(self, raw_data: bool = False) -> Any:
        """An alpaca-py data client; `raw_data`: answers as the wire's dicts, not models."""
        return make_data_client(
            self.key, self.secret, self.endpoints.data_url, timeout_s=self.request_timeout_s, raw_data=raw_data
        )

    def trade_updates(self, on_update: Any, on_reconnect: Any) -> Any:
        """The account's trade-updates stream (not started): `start()`, `stop(timeout)`."""
        from stockade.broker.trade_stream import TradeUpdatesStream

        return TradeUpdatesStream(
            self.endpoints.trading_stream_url, self.key, self.secret, on_update=on_update, on_reconnect=on_reconnect
        )


@dataclasses.dataclass
class Services:
    """Shared by the whole tree. Only thread-safe things live here."""

    settings: Settings
    store: Store
    broker: BrokerAccess
    faults: FaultInjector
    # Set by the reconciler after its first successful pass: READY=1 waits on it.
    first_reconcile: threading.Event = dataclasses.field(default_factory=threading.Event)
    started_ns: int = dataclasses.field(default_factory=time.time_ns)
    # Counters actors publish for `status` (replaced whole, never mutated in place).
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The same clock the actors' contexts carry (a backtest's simulated one there).
    clock: Clock = WALL_CLOCK
    # The application's alert machinery (ops/alerts/machinery.py), for the Alerter actor:
    # handed in, so the actor layer does not import the application.
    alerting: Any = None

    def rest_bucket(self) -> TokenBucket:
        """The API key's shared REST budget (`broker.token_bucket`), with its reserves from settings."""
        o = self.settings.orders
        return shared_bucket(self.broker.key, o.rate_limit_per_min, o.emergency_reserve, o.protect_reserve)

    def trading_state(self, txn: lmdb.Transaction | None = None) -> TradingStateRecord:
        """The persisted trading state (ACTIVE on a fresh data dir); inside `txn` if given."""
        record = self.store.trading_state(txn=txn)
        if record is None:
            return TradingStateRecord(state="ACTIVE", reason="fresh data dir", changed_ns=0, changed_by="default")
        return record

    def set_trading_state(self, state: TradingState, reason: str, by: str) -> TradingStateRecord:
        """Persist a new trading state and journal it, atomically and durably."""
        now = self.clock.now_ns()
        reason = redact(reason)  # an operator may paste anything into a reason; storage keeps no secret
        record = TradingStateRecord(state=state, reason=reason, changed_ns=now, changed_by=by)

        def write(txn: lmdb.Transaction) -> None:
            self.store.put_trading_state(record, txn=txn)
            self.store.journal.append(TradingStateSet(ts_ns=now, state=state, reason=reason, changed_by=by), txn=txn)

        self.store.transact(write, durable=True)
        return record
