"""A running paper venue per test: port from the OS, tmp data dir, a fresh key pair."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from conftest_market import market_config

from stockade.venue.config import VenueConfig
from stockade.venue.server import VenueHandle, start_venue


@pytest.fixture(scope="module")
def market_venue() -> Iterator[VenueHandle]:
    """One market-side venue per test module (conftest_market's settings)."""
    handle = start_venue(market_config())
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def venue_keys() -> tuple[str, str]:
    return "PK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)


@pytest.fixture
def venue_config(tmp_path, venue_keys) -> VenueConfig:
    key, secret = venue_keys
    return VenueConfig(
        port=0,
        seed=11,
        data_dir=str(tmp_path / "venue"),
        api_key=key,
        api_secret=secret,
        symbols=("AAPL", "MSFT", "SPY"),
        quote_rate_hz=2.0,
        # Tests poll; the per-minute budget has its own test.
        rate_limit_per_min=100_000,
    )


@pytest.fixture
def venue(venue_config) -> VenueHandle:
    handle = start_venue(venue_config)
    try:
        yield handle
    finally:
        handle.stop(timeout=10)
