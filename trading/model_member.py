"""A trained model as a voting member of the ensemble.

The model gives P(up) over its horizon; the vote is its side and how far
it leans: direction = sign(p - 0.5), confidence = |2p - 1|. A coin-flip
model (p near 0.5) votes with almost no weight, a sure one with full weight.
"""

from __future__ import annotations

import numpy as np

from stockade.trading.model_store import LoadedModel
from stockade.trading.strategies import Signal


def signal_from_probability(p_up: float) -> Signal:
    """Map P(up) to a Signal (reason carries the probability for traces)."""
    if not 0.0 <= p_up <= 1.0:  # NaN included: never vote on a broken output
        return Signal.flat(f"p_up {p_up!r} out of range")
    lean = 2.0 * p_up - 1.0
    direction = 1.0 if lean > 0.0 else -1.0 if lean < 0.0 else 0.0
    return Signal(direction, abs(lean), f"p_up {p_up:.3f}")


class ModelMember:
    """One loaded model; `evaluate(x)` with the full feature vector of one snapshot."""

    __slots__ = ("model", "name")

    def __init__(self, model: LoadedModel) -> None:
        self.name = model.name
        self.model = model

    def evaluate(self, x: np.ndarray) -> Signal:
        return signal_from_probability(self.model.p_up(x))
