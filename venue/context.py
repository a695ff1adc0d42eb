"""What every part of the venue server shares: config, market, clock, exchange, faults.

The venue runs on one asyncio event loop in one thread; every object here is
touched only from that loop, so none of them needs locks.
"""

from __future__ import annotations

import hmac
import random
from typing import TYPE_CHECKING, Any

from stockade.venue.config import VenueConfig
from stockade.venue.faults import Faults

if TYPE_CHECKING:  # the concrete classes live in their own modules
    from stockade.venue.clock import MarketClock
    from stockade.venue.exchange import Exchange
    from stockade.venue.market import MarketSimulator


class VenueContext:
    """Shared state of one venue instance."""

    def __init__(self, config: VenueConfig, faults: Faults | None = None) -> None:
        self.config = config
        self.faults = faults or Faults()
        self.fault_rng = random.Random(self.faults.seed)
        self.market: MarketSimulator | None = None
        self.clock: MarketClock | None = None
        self.exchange: Exchange | None = None
        self.market_hub: Any = None  # the market-data websocket hub (set by market_stream.add_routes)
        # Open websockets by kind ("market", "trading"), so a fault can drop
        # them and the connection limit (406) can be enforced.
        self.websockets: dict[str, set[Any]] = {"market": set(), "trading": set()}
        # Authenticated-or-not /stream sessions (trade_stream.TradeStreamSession).
        self.trade_sessions: set[Any] = set()
        # Durable account storage (ledger_store.LedgerStore); None when nothing persists.
        self.ledger: Any = None

    def persist(self) -> None:
        """Write what the exchange changed since the last call (one durable transaction)."""
        if self.exchange is None:
            return
        changes = self.exchange.take_changes()
        if self.ledger is not None and not changes.empty():
            self.ledger.apply(changes)

    def check_keys(self, key: str | None, secret: str | None) -> bool:
        """True when the key pair is the one this venue accepts (constant time)."""
        if not key or not secret:
            return False
        ok_key = hmac.compare_digest(key.encode(), self.config.api_key.encode())
        ok_secret = hmac.compare_digest(secret.encode(), self.config.api_secret.encode())
        return ok_key and ok_secret
