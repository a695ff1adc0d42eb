"""`python run.py venue`: the Alpaca-compatible paper venue on its own.

    python run.py venue [--host 127.0.0.1] [--port N] [--seed S] [--data-dir D]
                        [--api-key K --api-secret S] [--symbols A,B]
                        [--quote-rate HZ] [--clock always_open|nyse] [--settings FILE]
                        [--tls-cert PEM --tls-key PEM | --tls-self-signed DIR] [--no-access-log]

The key pair comes from the flags or APCA_API_KEY_ID / APCA_API_SECRET_KEY.
`--settings` may hold a `[venue]` table whose keys are VenueConfig's field
names; flags win over it. Prints one line with the URLs to use (never the
secret), runs until SIGINT/SIGTERM, exits 0. Usage or settings errors exit 2.
With TLS the URLs are https:// and wss://; `--tls-self-signed DIR` writes the
CA a client must trust to DIR/ca.pem. Each request is logged at INFO (method,
path, status, latency) unless `--no-access-log` (or `access_log = false`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from stockade.venue.config import VenueConfig

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad flags or settings: one line for the operator, exit 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py venue", description="Alpaca-compatible paper venue")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--data-dir")
    p.add_argument("--api-key")
    p.add_argument("--api-secret")
    p.add_argument("--symbols", help="comma-separated, e.g. AAPL,MSFT")
    p.add_argument("--quote-rate", type=float, help="quotes per second per symbol")
    p.add_argument("--clock", choices=("always_open", "nyse"))
    p.add_argument("--settings", help="TOML file; its [venue] table gives defaults")
    p.add_argument("--tls-cert", help="serve TLS with this certificate chain (PEM); needs --tls-key")
    p.add_argument("--tls-key", help="the private key (PEM) of --tls-cert")
    p.add_argument(
        "--tls-self-signed",
        metavar="DIR",
        help="serve TLS with a fresh self-signed pair; its CA is written to DIR/ca.pem",
    )
    p.add_argument(
        "--no-access-log", dest="access_log", action="store_false", default=None, help="do not log each request"
    )
    return p


def _settings_table(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"cannot read settings file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"settings file {path} is not valid TOML: {exc}") from None
    table = doc.get("venue", {})
    if not isinstance(table, dict):
        raise UsageError(f"settings file {path}: [venue] must be a table")
    return table


def build_config(args: argparse.Namespace, env: dict[str, str]) -> VenueConfig:
    """VenueConfig from settings file, environment and flags (flags win)."""
    values: dict[str, Any] = dict(_settings_table(args.settings))

    def flag(name: str) -> Any:
        return getattr(args, name, None)  # flags added later are optional

    values.pop("api_secret", None)  # secrets never come from a settings file
    values.pop("api_key", None)
    flags = {
        "host": args.host,
        "port": args.port,
        "seed": args.seed,
        "data_dir": args.data_dir,
        "quote_rate_hz": args.quote_rate,
        "clock": args.clock,
        "tls_cert_file": flag("tls_cert"),
        "tls_key_file": flag("tls_key"),
        "tls_self_signed_dir": flag("tls_self_signed"),
        "access_log": flag("access_log"),
    }
    values.setdefault("access_log", True)  # on for the standalone venue, off when embedded
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.symbols is not None:
        symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
        if not symbols:
            raise UsageError("--symbols: give at least one symbol, e.g. --symbols AAPL,MSFT")
        values["symbols"] = symbols
    key = args.api_key or env.get("APCA_API_KEY_ID")
    secret = args.api_secret or env.get("APCA_API_SECRET_KEY")
    if not key or not secret:
        raise UsageError(
            "venue: no API key pair: give --api-key and --api-secret or set APCA_API_KEY_ID and APCA_API_SECRET_KEY"
        )
    values["api_key"], values["api_secret"] = key, secret
    try:
        config = msgspec.convert(values, VenueConfig)
    except msgspec.ValidationError as exc:
        raise UsageError(f"venue: bad setting: {exc}") from None
    if not 0 <= config.port <= 65535:
        raise UsageError(f"venue: bad setting: port = {config.port}")
    if config.quote_rate_hz <= 0:
        raise UsageError(f"venue: bad setting: quote_rate_hz = {config.quote_rate_hz}")
    return config


def main(argv: list[str]) -> int:
    """Entry point of `python run.py venue`; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, bad flags 2
        return int(exc.code or 0)
    try:
        config = build_config(args, dict(os.environ))
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from stockade.venue.server import VenueHandle, serve_forever
    from stockade.venue.tls import CA_FILE

    def announce(handle: VenueHandle) -> None:
        print(
            f"venue listening: rest={handle.base_url} trading_stream={handle.trading_stream_url} "
            f"data_stream={handle.data_stream_url('iex')} key_id={config.api_key}"
            + (f" ca_file={Path(config.tls_self_signed_dir) / CA_FILE}" if config.tls_self_signed_dir else ""),
            flush=True,
        )

    try:
        serve_forever(config, on_ready=announce)
    except Exception as exc:
        print(f"venue: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
