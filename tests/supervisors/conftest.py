import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from supervision_probes import Recorder

from stockade.supervisors.faults import FaultInjector
from stockade.supervisors.runtime import Tree, start_tree


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def make_tree(rec):
    """Start trees with the recorder in extras and fault injection on; stop them all after the test."""
    trees: list[Tree] = []

    def make(policy, children, **kwargs) -> Tree:
        kwargs.setdefault("faults", FaultInjector(enabled=True))
        extras = dict(kwargs.pop("extras", {}))
        extras.setdefault("rec", rec)
        tree = start_tree(policy, children, extras=extras, **kwargs)
        trees.append(tree)
        return tree

    yield make
    rec.gate.set()
    for tree in trees:
        tree.stop(timeout=10.0)
