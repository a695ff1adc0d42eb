"""The layers import downward only (docs/ARCHITECTURE.md, "Layers").

An AST scan of every product module, in-function imports included (an import
moved into a function to dodge a cycle is still an edge). The check is proven
to bite: a test plants an upward import in a temporary copy and expects the
scan to report it.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top: a package may import its own layer and those below it.
LAYERS = ["config", "codecs", "supervisors", "storage", "trading", "broker", "actors", "ops"]
# Apart from the stack: the venue imports nothing of the product and only the
# application (and the benchmarks) may import it; nothing imports the benchmarks
# (run.py's `bench` command is outside the packages).
APART = {"venue": set(), "bench": set(LAYERS) | {"venue"}}
MAY_IMPORT_VENUE = {"ops", "bench"}
PACKAGES = LAYERS + list(APART)

# Known upward edges still to remove (issue 11), as (importer module, imported module).
# The list may only shrink: an edge that is gone must be deleted here too.
KNOWN: set[tuple[str, str]] = set()


def allowed(src: str, dst: str) -> bool:
    if src == dst:
        return True
    if dst == "bench":
        return False
    if dst == "venue":
        return src in MAY_IMPORT_VENUE
    if src in APART:
        return dst in APART[src]
    return LAYERS.index(dst) <= LAYERS.index(src)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `stockade.*` import in the file, wherever it sits."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from stockade import trading` names a package in the names.
            if node.module == "stockade":
                found.extend((node.lineno, f"stockade.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
    return [(line, mod) for line, mod in found if mod.startswith("stockade.")]


def upward_imports(root: Path) -> list[tuple[str, str, str]]:
    """(file:line, importer module, imported module) for every import against the layers."""
    bad = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root)
            here = "stockade." + ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
            for line, mod in imports_of(path):
                dst = mod.split(".")[1]
                if dst in PACKAGES and not allowed(pkg, dst):
                    bad.append((f"{rel}:{line}", here, mod))
    return bad


def test_layers_import_downward_only():
    found = upward_imports(ROOT)
    new = [b for b in found if (b[1], b[2]) not in KNOWN]
    assert not new, "imports against the layers:\n" + "\n".join(f"  {w}: {a} imports {b}" for w, a, b in new)
    gone = KNOWN - {(a, b) for _, a, b in found}
    assert not gone, f"fixed edges still listed in KNOWN (delete them): {sorted(gone)}"


@pytest.mark.parametrize(
    ("pkg", "planted"),
    [
        ("supervisors", "from stockade.actors.tree import start_stockade_tree\n"),
        ("trading", "def late():\n    from stockade.ops import daemon\n"),  # in-function
        ("venue", "import stockade.codecs.messages\n"),
        ("ops", "from stockade.bench import runner\n"),
    ],
)
def test_a_planted_upward_import_is_caught(tmp_path, pkg, planted):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.onnx"))
    before = upward_imports(tmp_path)
    (tmp_path / pkg / "planted_upward.py").write_text(planted)
    after = upward_imports(tmp_path)
    added = [b for b in after if b not in before]
    assert [b[1] for b in added] == [f"stockade.{pkg}.planted_upward"]
