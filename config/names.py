"""Names the settings file shares with the rest of stockade, defined once.

Config is the bottom layer, so the lists live here and the layers above key
their own tables by them: `codecs.messages.AlertLevel` is `AlertLevel`, and
the strategy registry (`trading.strategies.REGISTRY`) checks at import that
it builds exactly `STRATEGY_NAMES`.
"""

from __future__ import annotations

from typing import Literal, get_args

# Alert severities, least to most severe (the order is their rank).
AlertLevel = Literal["INFO", "WARNING", "CRITICAL", "EMERGENCY"]
ALERT_LEVELS: tuple[AlertLevel, ...] = get_args(AlertLevel)

# The rule-based strategies `[analyzer] strategies` may name.
StrategyName = Literal["momentum", "mean_reversion", "breakout"]
STRATEGY_NAMES: tuple[StrategyName, ...] = get_args(StrategyName)
