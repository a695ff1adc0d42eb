"""`python run.py check [--settings FILE]`: validate settings, print the effective ones as JSON."""

from __future__ import annotations

import argparse
import sys

import msgspec

from stockade.ops.settings import SettingsError, load_settings, resolve_venue_mode


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python run.py check", description="Validate a settings file.")
    parser.add_argument("--settings", help="settings TOML file (partial files allowed)")
    parser.add_argument("--data-dir", help="accepted for symmetry with the other commands; unused")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    try:
        settings = load_settings(args.settings)
        mode = resolve_venue_mode(settings)
    except SettingsError as exc:
        print(f"stockade: {exc}", file=sys.stderr)
        return 2
    print(msgspec.json.format(msgspec.json.encode({"venue_mode": mode, "settings": settings}), indent=2).decode())
    return 0
