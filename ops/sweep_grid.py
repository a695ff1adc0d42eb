"""The sweep file (`python run.py sweep --grid sweep.toml`): what to vary, on what data, ranked how.

    [sweep]
    start = "2026-06-01"          # the data: like `backtest`'s flags
    end = "2026-06-12"
    symbols = ["AAPL", "MSFT"]    # default: trading.symbols of the base settings
    seed = 4
    settings = "base.toml"        # optional base settings (relative to this file)
    objective = "sharpe"          # sharpe | sortino | profit_factor, out-of-sample
    max_drawdown_pct = 5.0        # out-of-sample drawdown limit; deeper points are not ranked (0: none)
    oos_fraction = 0.5            # the last share of the sessions is out-of-sample
    walk_forward = 0              # K > 0: K folds instead (out-of-sample = the folds' test windows)
    mode = "grid"                 # grid: every combination; random: `samples` seeded draws
    surface = ["voter.threshold", "risk.risk_per_trade_pct"]   # the heatmap's two keys

    [grid]
    "voter.threshold" = [0.2, 0.3, 0.4]            # any settings key: candidate values
    "risk.risk_per_trade_pct" = { min = 0.2, max = 1.0 }   # random mode: a uniform range

Every candidate value is checked by the settings' own validation, so a bad
one is refused up front with the key and value named (SettingsError).
"""

from __future__ import annotations

import itertools
import random
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from stockade.config.settings import Settings, SettingsError, settings_from_dict

OBJECTIVES = ("sharpe", "sortino", "profit_factor")


class SweepSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    start: str
    end: str
    symbols: tuple[str, ...] = ()
    source: Literal["sim", "file", "alpaca"] = "sim"
    file: str = ""
    seed: int | None = None
    settings: str = ""
    objective: Literal["sharpe", "sortino", "profit_factor"] = "sharpe"
    max_drawdown_pct: float = 0.0
    oos_fraction: float = 0.5
    walk_forward: int = 0
    mode: Literal["grid", "random"] = "grid"
    samples: int = 0
    random_seed: int = 0
    surface: tuple[str, ...] = ()
    top: int = 5


class Range(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min: float | int
    max: float | int


class Grid(msgspec.Struct, frozen=True, kw_only=True):
    spec: SweepSpec
    keys: tuple[str, ...]  # sorted
    points: tuple[dict[str, Any], ...]  # each: key -> value, in `keys` order
    settings: tuple[Settings, ...]  # each point's whole settings
    base: dict[str, Any]  # the base settings document (raw TOML), for the JSON
    folder: str  # the grid file's folder: relative paths in [sweep] are from there


class GridError(Exception):
    """A bad sweep file: one line naming the file and what is wrong."""


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise GridError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GridError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"sweep", "grid"})
    if unknown:
        raise GridError(f"{path}: unknown table [{unknown[0]}] (a sweep file has [sweep] and [grid])")
    try:
        spec = msgspec.convert(raw.get("sweep", {}), SweepSpec, strict=True)
    except msgspec.ValidationError as exc:
        what, _, where = str(exc).partition(" - at `$")
        field = where.rstrip("`").lstrip(".")
        raise GridError(f"{path}: sweep{'.' + field if field else ''}: {what.replace('`', '')}") from None
    _check_spec(path, spec)
    base_raw = _base_settings(path, spec)
    candidates = _candidates(path, raw.get("grid", {}))
    keys = tuple(sorted(candidates))
    for key in keys:  # every value alone over the base: the settings' own message names key and value
        c = candidates[key]
        values: list[Any] = [c.min, c.max] if isinstance(c, Range) else c
        for value in values:
            _settings(path, base_raw, {key: value})
    for key in spec.surface:
        if key not in candidates:
            raise GridError(f"{path}: sweep.surface: {key!r} is not a key of [grid] ({', '.join(keys)})")
    points = _expand(path, spec, keys, candidates)
    settings = tuple(_settings(path, base_raw, p) for p in points)
    return Grid(spec=spec, keys=keys, points=points, settings=settings, base=base_raw, folder=str(path.parent))


def _check_spec(path: Path, s: SweepSpec) -> None:
    if s.walk_forward < 0:
        raise GridError(f"{path}: sweep.walk_forward = {s.walk_forward}: must be >= 0 (0: no walk-forward)")
    if not 0.0 < s.oos_fraction < 1.0:
        raise GridError(f"{path}: sweep.oos_fraction = {s.oos_fraction!r}: must be between 0 and 1")
    if s.max_drawdown_pct < 0:
        raise GridError(f"{path}: sweep.max_drawdown_pct = {s.max_drawdown_pct!r}: must be >= 0 (0: no limit)")
    if s.mode == "random" and s.samples < 1:
        raise GridError(f"{path}: sweep.samples = {s.samples}: random mode needs >= 1 sample")
    if s.mode == "grid" and s.samples:
        raise GridError(f'{path}: sweep.samples = {s.samples}: only for mode = "random"')
    if s.top < 1:
        raise GridError(f"{path}: sweep.top = {s.top}: must be >= 1")
    if len(s.surface) not in (0, 2) or len(set(s.surface)) != len(s.surface):
        raise GridError(f"{path}: sweep.surface = {list(s.surface)}: give two different [grid] keys")


def _base_settings(path: Path, spec: SweepSpec) -> dict[str, Any]:
    if not spec.settings:
        return {}
    base = path.parent / spec.settings
    try:
        raw = tomllib.loads(base.read_text())
    except OSError as exc:
        raise GridError(f"{path}: sweep.settings: cannot read {base}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{path}: sweep.settings: {base}: invalid TOML: {exc}") from None
    _settings(path, raw, {})
    return raw


def _candidates(path: Path, grid: Any) -> dict[str, list[Any] | Range]:
    """[grid] flattened: "section.key" -> candidate list, or a Range (random mode)."""
    if not isinstance(grid, dict) or not grid:
        raise GridError(f"{path}: [grid] is empty: give at least one settings key and its values")
    out: dict[str, list[Any] | Range] = {}
    for top, value in grid.items():
        # [grid.voter] threshold = [...] is the same as [grid] "voter.threshold" = [...]
        inner = value.items() if isinstance(value, dict) and not _is_range(value) else [(None, value)]
        for sub, v in inner:
            key = f"{top}.{sub}" if sub is not None else top
            if key.count(".") != 1:
                raise GridError(f"{path}: grid key {key!r}: a settings key is section.key (e.g. voter.threshold)")
            if isinstance(v, dict):
                try:
                    out[key] = msgspec.convert(v, Range, strict=True)
                except msgspec.ValidationError as exc:
                    raise GridError(f"{path}: grid.{key} = {v!r}: a range is {{ min = A, max = B }} ({exc})") from None
                if out[key].min > out[key].max:  # type: ignore[union-attr]
                    raise GridError(f"{path}: grid.{key}: min {v['min']!r} is above max {v['max']!r}")
            elif isinstance(v, list):
                if not v:
                    raise GridError(f"{path}: grid.{key} = []: no value to try")
                out[key] = v
            else:
                raise GridError(f"{path}: grid.{key} = {v!r}: give a list of values to try, e.g. [{v!r}]")
    return out


def _is_range(v: dict[str, Any]) -> bool:
    return set(v) == {"min", "max"}


def _expand(
    path: Path, spec: SweepSpec, keys: tuple[str, ...], cands: dict[str, list[Any] | Range]
) -> tuple[dict[str, Any], ...]:
    if spec.mode == "grid":
        ranges = [k for k in keys if isinstance(cands[k], Range)]
        if ranges:
            raise GridError(f'{path}: grid.{ranges[0]}: a {{min, max}} range is only for mode = "random"')
        lists = [cands[k] for k in keys]
        return tuple(dict(zip(keys, combo, strict=True)) for combo in itertools.product(*lists))  # type: ignore[arg-type]
    # Seeded draws, made here before any work is split: the points never depend on the workers.
    rng = random.Random(spec.random_seed)
    points = []
    for _ in range(spec.samples):
        point = {}
        for k in keys:
            c = cands[k]
            if isinstance(c, Range):
                both_int = isinstance(c.min, int) and isinstance(c.max, int)
                point[k] = rng.randint(int(c.min), int(c.max)) if both_int else round(rng.uniform(c.min, c.max), 6)
            else:
                point[k] = c[rng.randrange(len(c))]
        points.append(point)
    return tuple(points)


def _settings(path: Path, base: dict[str, Any], point: dict[str, Any]) -> Settings:
    raw = {section: dict(table) if isinstance(table, dict) else table for section, table in base.items()}
    for key, value in point.items():
        section, name = key.split(".", 1)
        table = raw.setdefault(section, {})
        if isinstance(table, dict):
            table[name] = value
    try:
        return settings_from_dict(raw)
    except SettingsError as exc:
        where = ", ".join(f"{k} = {v!r}" for k, v in point.items())
        raise GridError(f"{path}: {exc}" + (f" (point {where})" if len(point) > 1 else "")) from None
