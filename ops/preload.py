"""Everything actors would otherwise import or load lazily, done once before the tree starts.

Actors import alpaca-py's request types and clients inside their methods (a
cheap daemon start for `ctl` and `check`). Hundreds of analyzer threads doing
that for the first time at once can meet Python's import deadlock avoidance:
one of them gets `ImportError: cannot import name ... from partially
initialized module` and crashes in setup. So the daemon imports them here, on
its main thread, before any actor thread exists; and it loads the trained
models once, so each analyzer's setup finds their sessions cached.

`LAZY_IMPORTS` must list every third-party module imported inside a function
under actors/ or broker/ (a test reads the source and holds it so).
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

from stockade.config.settings import Settings

log = logging.getLogger(__name__)

LAZY_IMPORTS: tuple[str, ...] = (
    "alpaca.common.enums",
    "alpaca.common.exceptions",
    "alpaca.data.enums",
    "alpaca.data.historical.stock",
    "alpaca.data.requests",
    "alpaca.data.timeframe",
    "alpaca.trading.client",
    "alpaca.trading.enums",
    "alpaca.trading.requests",
    "msgspec",
    "onnxruntime",
)


def preload(settings: Settings, data_dir: Path | None) -> float:
    """Import `LAZY_IMPORTS` and load the models `[models]` asks for; returns the seconds spent."""
    from stockade.actors.analyzer import load_members
    from stockade.trading.model_panel import panel_of

    started = time.monotonic()
    for name in LAZY_IMPORTS:
        importlib.import_module(name)
    # Refusals are reported by the analyzers (once per process), not here.
    members, _ = load_members(settings, data_dir)
    panel_of([m.model for m in members])
    spent = time.monotonic() - started
    log.debug("preloaded %d modules and the models in %.2fs", len(LAZY_IMPORTS), spent)
    return spent
