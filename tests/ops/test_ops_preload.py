"""Imports done once, before threads start (ops/preload.py).

Many analyzer threads importing alpaca-py's data module for the first time
at once crashed one with `ImportError ... partially initialized module`. The
daemon imports every lazily imported third-party module on its main thread
before the tree starts; these tests hold the list complete and show that a
fresh interpreter has them all imported after `preload`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from stockade.ops.preload import LAZY_IMPORTS

REPO = Path(__file__).resolve().parents[2]
# Where actor threads run code: actors and the broker clients they call.
SCANNED = ("actors", "broker")


def _lazy_third_party_imports() -> dict[str, list[str]]:
    """Third-party modules imported inside functions, with where."""
    found: dict[str, list[str]] = {}
    for folder in SCANNED:
        for path in sorted((REPO / folder).glob("*.py")):
            if path.name.endswith("bench.py"):
                continue  # benchmarks run alone, never under the tree
            tree = ast.parse(path.read_text(), str(path))
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    names = []
                    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                        names = [node.module]
                    elif isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    for name in names:
                        top = name.split(".")[0]
                        if top == "stockade" or top in sys.stdlib_module_names:
                            continue
                        found.setdefault(name, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_every_lazy_third_party_import_is_preloaded():
    lazy = _lazy_third_party_imports()
    assert lazy, "the scan found nothing: it no longer reads the source"
    missing = {name: where for name, where in lazy.items() if name not in LAZY_IMPORTS}
    assert not missing, f"add to ops/preload.py LAZY_IMPORTS: {missing}"


def test_preload_imports_them_in_a_fresh_interpreter():
    code = (
        "import sys\n"
        "from stockade.ops.preload import LAZY_IMPORTS, preload\n"
        "from stockade.config.settings import settings_from_dict\n"
        "before = [m for m in LAZY_IMPORTS if m in sys.modules]\n"
        "preload(settings_from_dict({}), None)\n"
        "from stockade.trading import model_store\n"
        "print(len(before), sum(m in sys.modules for m in LAZY_IMPORTS), len(model_store._sessions))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    before, after, sessions = map(int, out.stdout.split())
    assert before < len(LAZY_IMPORTS)  # the import of preload itself does not do the work
    assert after == len(LAZY_IMPORTS)
    assert sessions > 0  # the shipped models are loaded, not left to the first analyzer
