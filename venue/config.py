"""Settings of the embedded paper venue."""

from __future__ import annotations

from typing import Literal

import msgspec

DEFAULT_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")


class VenueConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How a venue instance is started (CLI flags, the daemon, or tests)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port from the OS
    seed: int = 7
    data_dir: str | None = None  # None: nothing persists (tests of pure behaviour)
    api_key: str = ""
    api_secret: str = ""
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    quote_rate_hz: float = 4.0  # quotes per second per symbol
    clock: Literal["always_open", "nyse"] = "always_open"
    rate_limit_per_min: int = 200  # Alpaca's REST budget
    initial_cash: float = 100_000.0
    max_stream_connections: int = 1  # per stream kind and key pair, as Alpaca
    max_body_bytes: int = 64 * 1024
    auth_timeout_s: float = 10.0  # websocket: no auth by then -> 404 auth timeout
