"""`python run.py check`: is this deployment ready to trade? One row per part.

    settings | broker | clock | data feed | control socket

Each row is `name | ok/FAIL | detail`; `--json` prints the rows as JSON
instead. Exit 0 when every row is ok, 1 when any is FAIL, 2 when the
settings themselves are bad (nothing else can be checked then).

The broker rows use the same clients the daemon does (alpaca-py against the
configured endpoints, every call with a timeout and no retries). With no
Alpaca keys the daemon would run the embedded paper venue, so the check
starts one in-process on loopback (a free port, a throw-away data dir and
key pair), checks it the same way and stops it: that exercises the real code
path without touching the daemon's own data. `--print-settings` also prints
the effective settings as JSON. No secret is ever printed.
"""

from __future__ import annotations

import argparse
import json
import secrets as pysecrets
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import msgspec

from stockade.config import secrets as ops_secrets
from stockade.config.settings import Settings, SettingsError, load_settings, resolve_venue_mode

EXIT_OK, EXIT_FAIL, EXIT_SETTINGS = 0, 1, 2


class Row(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    detail: str


class _Target(msgspec.Struct, frozen=True):
    """What to check against: the configured broker, or a throw-away embedded venue."""

    venue: str
    trading_url: str
    data_url: str
    key: str
    secret: str


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python run.py check", description="Check settings, broker, clock, data feed and the control socket."
    )
    p.add_argument("--settings", help="settings TOML file (partial files allowed)")
    p.add_argument("--data-dir", help="data directory (to find the control socket; default as the daemon)")
    p.add_argument("--socket", help="control socket path (default: found as the daemon does)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for each network call (default 10)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--print-settings", action="store_true", help="also print the effective settings as JSON")
    return p


def main(argv: list[str]) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_SETTINGS if exc.code else EXIT_OK
    if not args.timeout > 0:
        print("check: --timeout must be > 0", file=sys.stderr)
        return EXIT_SETTINGS
    rows, settings = run_checks(args.settings, args.data_dir, args.socket, args.timeout)
    _print(rows, args.json)
    if args.print_settings and settings is not None:
        print(msgspec.json.format(msgspec.json.encode(settings), indent=2).decode())
    if settings is None:
        print(f"stockade: {rows[0].detail}", file=sys.stderr)  # the one line run.py would print
        return EXIT_SETTINGS
    return EXIT_OK if all(r.ok for r in rows) else EXIT_FAIL


def run_checks(
    settings_path: str | None, data_dir: str | None, socket_opt: str | None, timeout: float
) -> tuple[list[Row], Settings | None]:
    """Every row, in order; settings None when they did not load."""
    from stockade.broker.rest import register_secret

    # Whatever goes wrong below, a configured secret must not reach the output.
    register_secret(*ops_secrets.known_secret_values())
    try:
        settings = load_settings(settings_path)
        mode = resolve_venue_mode(settings)
        keys = ops_secrets.alpaca_keys()
        from stockade.ops.live_guard import check_trading_mode

        money = check_trading_mode(settings, mode)
    except SettingsError as exc:
        skipped = [
            Row(name, False, "not checked: the settings are bad")
            for name in ("broker", "clock", "data feed", "control socket")
        ]
        return [Row("settings", False, _clean(str(exc))), *skipped], None
    rows = [
        Row(
            "settings",
            True,
            f"valid; venue {mode}, {money} trading, {len(settings.trading.symbols)} symbols "
            f"({', '.join(settings.trading.symbols)})",
        )
    ]
    with ExitStack() as stack:
        try:
            target = _target(settings, mode, keys, stack, timeout)
        except Exception as exc:
            rows += [
                Row(name, False, _clean(f"no broker to check: {type(exc).__name__}: {exc}"))
                for name in ("broker", "clock", "data feed")
            ]
        else:
            rows += _broker_rows(settings, target, timeout)
    rows.append(_control_row(settings_path, data_dir, socket_opt, timeout))
    return rows, settings


def _target(settings: Settings, mode: str, keys: tuple[str, str] | None, stack: ExitStack, timeout: float) -> _Target:
    a = settings.alpaca
    if mode == "alpaca":
        assert keys is not None
        from stockade.broker.rest import endpoints_for

        ep = endpoints_for(a)
        return _Target("alpaca-live" if a.live else "alpaca-paper", ep.trading_url, ep.data_url, keys[0], keys[1])
    from stockade.venue.config import VenueConfig
    from stockade.venue.server import start_venue

    v = settings.venue
    key, secret = "PK" + pysecrets.token_hex(9).upper(), pysecrets.token_urlsafe(30)
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="stockade-check-"))
    handle = start_venue(
        VenueConfig(
            host=v.host,
            port=0,
            seed=v.seed,
            data_dir=str(Path(tmp) / "venue"),
            api_key=key,
            api_secret=secret,
            symbols=tuple(settings.trading.symbols),
            quote_rate_hz=v.quote_rate_hz,
            clock=v.clock,
            initial_cash=v.initial_cash,
        ),
        start_timeout=timeout,
    )
    stack.callback(handle.stop, timeout=timeout)
    return _Target("embedded (started on loopback for this check)", handle.base_url, handle.base_url, key, secret)


def _broker_rows(settings: Settings, t: _Target, timeout: float) -> list[Row]:
    from stockade.broker.rest import make_data_client, make_trading_client

    # No retries: a check should say what is wrong now, within its timeout.
    trading = make_trading_client(
        t.key, t.secret, t.trading_url, timeout_s=timeout, connect_timeout_s=min(timeout, 5.0), retry_attempts=0
    )
    rows = [_row("broker", lambda: _account(trading, t)), _row("clock", lambda: _clock(trading))]
    data = make_data_client(
        t.key, t.secret, t.data_url, timeout_s=timeout, connect_timeout_s=min(timeout, 5.0), retry_attempts=0
    )
    rows.append(_row("data feed", lambda: _quote(data, settings)))
    return rows


def _row(name: str, probe: Callable[[], tuple[bool, str]]) -> Row:
    try:
        ok, detail = probe()
    except Exception as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return Row(name, ok, _clean(detail))


def _account(client: Any, t: _Target) -> tuple[bool, str]:
    acct = client.get_account()
    status = str(getattr(acct.status, "value", acct.status))
    blocked = [name for name in ("trading_blocked", "account_blocked") if getattr(acct, name, False)]
    detail = (
        f"{t.venue} at {t.trading_url}: account {status}, equity {acct.equity}, "
        f"buying power {acct.buying_power}, trading_blocked {bool(acct.trading_blocked)}"
    )
    if blocked:
        detail += f" (blocked: {', '.join(blocked)})"
    return status == "ACTIVE" and not blocked, detail


def _clock(client: Any) -> tuple[bool, str]:
    clock = client.get_clock()
    return True, (
        f"market {'open' if clock.is_open else 'closed'}; next open {clock.next_open.isoformat()}, "
        f"next close {clock.next_close.isoformat()}"
    )


def _quote(client: Any, settings: Settings) -> tuple[bool, str]:
    from alpaca.data.requests import StockLatestQuoteRequest

    from stockade.broker.rest import data_feed

    symbol, feed = settings.trading.symbols[0], settings.alpaca.feed
    request = StockLatestQuoteRequest(symbol_or_symbols=symbol, feed=data_feed(feed))
    quote = client.get_stock_latest_quote(request)[symbol]
    ok = quote.bid_price > 0 or quote.ask_price > 0
    return ok, (
        f"{symbol} ({feed}): bid {quote.bid_price} x ask {quote.ask_price} at {quote.timestamp.isoformat()}"
        + ("" if ok else "; no price")
    )


def _control_row(settings_path: str | None, data_dir: str | None, socket_opt: str | None, timeout: float) -> Row:
    from stockade.ops.ctl import request, socket_candidates

    candidates = socket_candidates(socket_opt, settings_path, data_dir)
    path = next((c for c in candidates if c.exists()), None)
    if path is None:
        return Row("control socket", True, f"daemon not running (no socket at {candidates[0]})")
    try:
        reply = request(path, "status", {}, timeout)
    except ConnectionRefusedError:
        return Row("control socket", True, f"daemon not running (stale socket at {path})")
    except PermissionError:
        return Row("control socket", False, f"permission denied on {path} (run as the daemon's user or root)")
    except TimeoutError:
        return Row("control socket", False, f"no reply from {path} within {timeout:g}s")
    except (OSError, ValueError) as exc:
        return Row("control socket", False, _clean(f"talking to {path} failed: {exc}"))
    if not reply.get("ok"):
        return Row("control socket", False, _clean(f"{path}: status refused: {reply.get('error')}"))
    st = reply["result"]
    healthy = bool(st.get("healthy"))
    return Row(
        "control socket",
        healthy,
        f"daemon running at {path}: trading {st.get('trading_state')}, venue {st.get('venue')}, "
        f"{'healthy' if healthy else 'NOT healthy'}, up {st.get('uptime_s')}s",
    )


def _clean(text: str) -> str:
    from stockade.broker.rest import redact

    return redact(" ".join(str(text).split()))


def _print(rows: list[Row], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"ok": all(r.ok for r in rows), "checks": msgspec.to_builtins(rows)}, indent=2))
        return
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"{r.name:<{width}} | {'ok' if r.ok else 'FAIL':<4} | {r.detail}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
