"""The broker side of a backtest: the real alpaca-py clients, answered by the in-process venue.

Narrowest seam that keeps the order path real: `BacktestBroker` is a
`BrokerAccess` whose clients are the same alpaca-py `TradingClient` /
`StockHistoricalDataClient` the daemon builds (same request objects, same
JSON parsing, same errors), with their HTTP session swapped for the venue's
in-process one, and whose trade-updates "stream" hands the venue's
`trade_updates` frames to the same wire decoder the websocket client uses.
An HTTP round trip per order to a venue on a simulated clock would be more
faithful only in the socket, and a hundred times slower and thread-timed;
see `venue/inprocess.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from stockade.actors.services import BrokerAccess
from stockade.broker.rest import BrokerEndpoints, make_data_client, make_trading_client
from stockade.codecs.alpaca_wire import WireError, decode_trade_stream
from stockade.codecs.messages import OrderUpdate
from stockade.venue.inprocess import InProcessVenue

IN_PROCESS_URL = "http://in-process.backtest"


class InProcessTradeUpdates:
    """`TradeUpdatesStream`'s interface over the in-process venue's frames (no thread, no socket)."""

    def __init__(self, venue: InProcessVenue, on_update: Callable[[OrderUpdate], None]) -> None:
        self._venue = venue
        self._on_update = on_update
        self._unsubscribe: Callable[[], Any] | None = None
        self.updates = 0
        self.state = "stopped"  # as TradeUpdatesStream: "listening" while updates flow

    def start(self) -> None:
        self._unsubscribe = self._venue.subscribe(self._frame)
        self.state = "listening"

    def _frame(self, frame: str) -> None:
        try:
            msg = decode_trade_stream(frame)
        except WireError:
            raise  # the venue wrote it: a bad frame here is a bug, not noise
        if isinstance(msg, OrderUpdate):
            self.updates += 1
            self._on_update(msg)

    def stop(self, timeout: float = 0.0) -> bool:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.state = "stopped"
        return True

    def stats(self) -> dict[str, Any]:
        return {"connected": True, "updates": self.updates}


@dataclasses.dataclass(frozen=True)
class BacktestBroker(BrokerAccess):
    """`BrokerAccess` for a backtest: every client talks to `inprocess`."""

    inprocess: InProcessVenue | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def for_venue(cls, venue: InProcessVenue, key: str = "BACKTEST") -> BacktestBroker:
        endpoints = BrokerEndpoints(
            IN_PROCESS_URL, IN_PROCESS_URL, IN_PROCESS_URL + "/v2/test", IN_PROCESS_URL + "/stream"
        )
        return cls("backtest", endpoints, key, "in-process", True, 10.0, inprocess=venue)

    def _venue(self) -> InProcessVenue:
        assert self.inprocess is not None
        return self.inprocess

    def trading_client(self) -> Any:
        client = make_trading_client(self.key, self.secret, IN_PROCESS_URL, paper=True, retry_attempts=0)
        client._session = self._venue().session()
        return client

    def data_client(self, raw_data: bool = False) -> Any:
        client = make_data_client(self.key, self.secret, IN_PROCESS_URL, raw_data=raw_data)
        client._session = self._venue().session()
        return client

    def trade_updates(self, on_update: Any, on_reconnect: Any) -> InProcessTradeUpdates:
        return InProcessTradeUpdates(self._venue(), on_update)
