"""The kinds of `Tick` the actors send themselves (and each other): `Tick.what`.

Typed constants, so a timer and the branch that handles it cannot drift
apart by a typo (mypy and an AttributeError catch it).
"""

from __future__ import annotations

from typing import Final

ROLL: Final = "roll"
WARMUP: Final = "warmup"
RESYNC: Final = "resync"
POLL: Final = "poll"
EXPIRE: Final = "expire"
SAVE_WEIGHTS: Final = "save_weights"
STATS: Final = "stats"
DAILY_SUMMARY: Final = "daily-summary"
RECONCILE: Final = "reconcile"
RETENTION: Final = "retention"
PROTECT: Final = "protect"
RETRY: Final = "retry"
FLUSH: Final = "flush"
LIFECYCLE: Final = "lifecycle"
