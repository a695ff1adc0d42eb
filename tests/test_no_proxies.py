"""House rules checked statically.

- Actors talk by `tell` of messages through the router: nothing under
  `actors/` may use pykka proxies or `ask` another actor (asks are for
  supervisors and the control socket, which live elsewhere).
- Every message type is a frozen msgspec Struct, so a message cannot be
  changed after it is sent.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import msgspec

import stockade.codecs.messages as messages

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_CALLS = {"proxy", "ask"}
FORBIDDEN_NAMES = {"ActorProxy", "CallableProxy", "traversable"}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name in FORBIDDEN_CALLS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: call to {name}()")
        elif isinstance(node, (ast.Name, ast.Attribute)):
            name = node.attr if isinstance(node, ast.Attribute) else node.id
            if name in FORBIDDEN_NAMES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: uses {name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pykka"):
            for alias in node.names:
                if alias.name in FORBIDDEN_NAMES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {alias.name}")
    return found


def test_actors_use_no_proxies_and_no_ask():
    files = sorted((ROOT / "actors").rglob("*.py"))
    assert files, "actors/ has no modules"
    problems = [v for path in files for v in _violations(path)]
    assert problems == [], "actors must only tell messages through the router:\n" + "\n".join(problems)


def test_the_check_itself_catches_proxies_and_asks(tmp_path):
    global ROOT
    bad = tmp_path / "bad.py"
    bad.write_text("ref.proxy().go()\nx = other.ask(msg, timeout=1)\nfrom pykka import ActorProxy\n")
    saved, ROOT = ROOT, tmp_path
    try:
        assert len(_violations(bad)) == 3
    finally:
        ROOT = saved


def test_every_message_type_is_a_frozen_struct():
    structs = [obj for _, obj in inspect.getmembers(messages, inspect.isclass) if obj.__module__ == messages.__name__]
    assert structs, "no classes found in codecs/messages.py"
    not_struct = [cls.__name__ for cls in structs if not issubclass(cls, msgspec.Struct)]
    assert not_struct == [], f"not msgspec Structs: {not_struct}"
    mutable = [cls.__name__ for cls in structs if not cls.__struct_config__.frozen]
    assert mutable == [], f"not frozen: {mutable}"
    # Everything an actor can receive derives from Message (tagged for encoding).
    assert issubclass(messages.Tick, messages.Message)
