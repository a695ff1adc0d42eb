"""The names actors and supervisors are addressed by: router, child specs, status.

Typed constants (each a `Final` str literal), so a misspelt name fails at
import or in mypy instead of sending a message to nobody. The analyzers are
named per symbol: `actors.quote_streamer.analyzer_name`.
"""

from __future__ import annotations

from typing import Final

# Actors.
ALERTER: Final = "alerter"
EMERGENCY_STOP: Final = "emergency_stop"
ENSEMBLE_VOTER: Final = "ensemble_voter"
MODEL_KEEPER: Final = "model_keeper"
ORDER_MANAGER: Final = "order_manager"
QUOTE_STREAMER: Final = "quote_streamer"
RECONCILER: Final = "reconciler"
RISK_GUARD: Final = "risk_guard"

# Supervisors (actors/tree.py).
ROOT: Final = "root"
EXECUTION: Final = "execution"
MARKET: Final = "market"
ANALYZERS: Final = "analyzers"

SUPERVISOR_NAMES: Final = (ROOT, EXECUTION, MARKET, ANALYZERS)
