"""How a settings section says a value is bad: one line naming key and value.

Each section validates itself in `__post_init__` (config/settings.py) with
these helpers, so a section built in code is held to the same rules as one
loaded from a file. The error carries the key path and the reason, so the
loader can show the value as the file wrote it (``-5``, not ``-5.0``).
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A settings file or value that stockade refuses to start with (exit 2).

    `key` and `reason` are set when one key's value is refused (`fail`).
    """

    def __init__(self, message: str, key: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason


def fmt(value: Any) -> str:
    """A value as it would be written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


def fail(key: str, value: Any, reason: str) -> NoReturn:
    """Refuse `value` of the dotted `key` (``risk.max_positions``) for `reason`."""
    raise SettingsError(f"settings: {key} = {fmt(value)}: {reason}", key=key, reason=reason)


def positive(key: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        fail(key, value, "must be > 0")


def non_negative(key: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        fail(key, value, "must be >= 0")


def pct(key: str, value: float) -> None:
    if not (0 < value <= 100):
        fail(key, value, "must be > 0 and <= 100")


def ratio(key: str, value: float) -> None:
    if not (0 <= value <= 1):
        fail(key, value, "must be between 0 and 1")


def at_least(key: str, value: int, low: int) -> None:
    if value < low:
        fail(key, value, f"must be >= {low}")


def url(key: str, value: str, schemes: tuple[str, ...], allow_empty: bool = True) -> None:
    if not value and allow_empty:
        return
    problem = url_problem(value, schemes)
    if problem:
        fail(key, value, problem)


def url_problem(value: str, schemes: tuple[str, ...]) -> str | None:
    """Why `value` is not a usable URL with one of `schemes`, or None."""
    parts = urlsplit(value)
    try:
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError:
        return "has a bad port"
    if parts.scheme not in schemes or not parts.hostname or any(ch.isspace() for ch in value):
        return f"must be a URL like {schemes[0]}://host[:port][/path]"
    return None
