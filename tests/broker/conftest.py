"""Fixtures shared by the broker tests."""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stockade.config.settings import settings_from_dict


@pytest.fixture
def embedded_daemon(tmp_path) -> Iterator[Callable[..., Any]]:
    """`embedded_daemon(symbols, **sections)`: a real daemon in this process on the embedded
    venue, started and (at teardown) stopped. Its voter waits for an operator, so only the
    intents a test hands the order manager trade; `sections` override or add settings sections."""
    from stockade.ops.daemon import Daemon

    started: list[Any] = []

    def start(symbols: tuple[str, ...], **sections: dict[str, Any]) -> Any:
        settings = settings_from_dict(
            {
                "trading": {"symbols": list(symbols)},
                "venue": {"quote_rate_hz": 20.0},
                "voter": {"mode": "manual"},
                "logging": {"level": "WARNING"},
                "dashboard": {"port": 0},  # any free port: tests run side by side
                **sections,
            }
        )
        daemon = Daemon(settings, "embedded", None, Namespace(data_dir=str(tmp_path / "data"), duration=None))
        started.append(daemon)
        daemon._start()
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon._stop()
