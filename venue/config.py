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
    # When each symbol quotes: all at once, evenly spread, or independent Poisson (venue/arrivals.py).
    quote_arrivals: Literal["lockstep", "staggered", "poisson"] = "lockstep"
    non_fractionable: tuple[str, ...] = ()  # symbols whose asset says fractionable=false
    clock: Literal["always_open", "nyse"] = "always_open"
    rate_limit_per_min: int = 200  # Alpaca's REST budget
    initial_cash: float = 100_000.0
    max_stream_connections: int = 1  # per stream kind and key pair, as Alpaca
    max_body_bytes: int = 64 * 1024
    auth_timeout_s: float = 10.0  # websocket: no auth by then -> 404 auth timeout
    # One INFO line per request (method, path, status, latency; never a header or a query).
    # Off for the daemon's embedded venue, on for `python run.py venue` unless --no-access-log.
    access_log: bool = False
    # TLS: a certificate chain and its key (PEM files), or a generated self-signed
    # pair written to tls_self_signed_dir (ca.pem for the clients to trust). Neither: plain HTTP.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_self_signed_dir: str | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: give both or neither")
        if self.tls_cert_file is not None and self.tls_self_signed_dir is not None:
            raise ValueError("give tls_cert_file/tls_key_file or tls_self_signed_dir, not both")

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None or self.tls_self_signed_dir is not None
