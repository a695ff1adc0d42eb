"""`python run.py ctl CMD [ARGS...]`: talk to a running daemon's control socket.

Positional ARGS become the request's args per command (`crash NAME
[--times N] [--on-next-message]`, `hang NAME SECONDS`, `approve ID`, `reject ID [REASON...]`, `alerts [N] [LEVEL]`, `audit [N]`,
`halt|reduce|kill [REASON...]`, `models [show|promote|rollback|retrain]`); `key=value` pairs work for any command
(values that parse as JSON numbers/booleans/null are sent as such).

Prints the reply JSON on stdout. Exit: 0 ok, 1 ok=false or daemon
unreachable, 2 usage or settings error.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stockade.config import paths
from stockade.config.names import ALERT_LEVELS
from stockade.config.settings import SettingsError, load_settings

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def _reason(rest: list[str]) -> dict[str, Any]:
    return {"reason": " ".join(rest)} if rest else {}


def _one(
    key: str, convert: Callable[[str], Any] = str, optional: bool = False
) -> Callable[[list[str]], dict[str, Any]]:
    def parse(rest: list[str]) -> dict[str, Any]:
        if len(rest) > 1 or (not rest and not optional):
            raise UsageError(f"expects {'[' if optional else ''}{key.upper()}{']' if optional else ''}")
        return {key: _convert(key, convert, rest[0])} if rest else {}

    return parse


def _convert(key: str, convert: Callable[[str], Any], value: str) -> Any:
    try:
        return convert(value)
    except ValueError:
        raise UsageError(f"{key.upper()} must be a {convert.__name__}, got {value!r}") from None


def _hang(rest: list[str]) -> dict[str, Any]:
    if len(rest) != 2:
        raise UsageError("expects NAME SECONDS")
    return {"name": rest[0], "seconds": _convert("seconds", float, rest[1])}


def _reject(rest: list[str]) -> dict[str, Any]:
    if not rest:
        raise UsageError("expects ID [REASON...]")
    return {"id": rest[0], **_reason(rest[1:])}


def _alerts(rest: list[str]) -> dict[str, Any]:
    """`alerts [N] [LEVEL]` in either order (a kind filter is `kind=order-rejected`)."""
    args: dict[str, Any] = {}
    value: int | str
    for word in rest:
        if word.isdigit():
            key, value = "n", int(word)
        elif word.upper() in ALERT_LEVELS:
            key, value = "level", word.upper()
        else:
            raise UsageError(f"expects [N] [LEVEL] (N a number, LEVEL {'/'.join(ALERT_LEVELS)}), got {word!r}")
        if key in args:
            raise UsageError("expects [N] [LEVEL], each at most once")
        args[key] = value
    return args


# How positional words map to args, per command. Commands not listed take
# key=value pairs only (the daemon may have more commands than ctl knows).
POSITIONAL: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "crash": _one("name"),
    "hang": _hang,
    "approve": _one("id"),
    "reject": _reject,
    "alerts": _alerts,
    "audit": _one("n", int, optional=True),
    "models": _one("action", optional=True),
    "halt": _reason,
    "reduce": _reason,
    "kill": _reason,
}


def build_args(cmd: str, words: Sequence[str]) -> dict[str, Any]:
    """The args dict for `cmd` from the words after it on the command line."""
    pairs: dict[str, Any] = {}
    positional: list[str] = []
    for word in words:
        key, eq, value = word.partition("=")
        if eq and key.isidentifier():
            pairs[key] = _json_or_str(value)
        else:
            positional.append(word)
    if positional:
        parse = POSITIONAL.get(cmd)
        if parse is None:
            raise UsageError(f"{cmd} takes no positional arguments (use key=value)")
        args = parse(positional)
    else:
        args = {}
        if cmd in ("crash", "approve", "reject", "hang") and not pairs:
            POSITIONAL[cmd]([])  # raises the usage message
    args.update(pairs)
    return args


def _json_or_str(value: str) -> Any:
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    # Only scalars: `x=[1]` is more likely a typo than a list argument.
    return parsed if isinstance(parsed, (int, float, bool)) or parsed is None else value


def socket_candidates(
    socket_opt: str | None,
    settings_path: str | None,
    data_dir: str | None,
    env: dict[str, str] | os._Environ[str] = os.environ,
) -> list[Path]:
    """Where to look for the daemon, first choice first."""
    if socket_opt:
        return [Path(socket_opt)]
    settings = load_settings(settings_path)
    primary = paths.control_socket_path(settings, paths.data_dir(data_dir, env), env)
    candidates = [primary]
    # An operator's shell has no $RUNTIME_DIRECTORY; the daemon under systemd
    # listens in /run/stockade. Only when nothing pins the location.
    if not settings.control.socket and not env.get("RUNTIME_DIRECTORY") and not data_dir:
        candidates.append(paths.SYSTEMD_RUNTIME_SOCKET)
    return candidates


# Commands that legitimately take long: kill waits until the broker says flat.
SLOW_COMMANDS = {"kill": 120.0}


def request(path: Path, cmd: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one request and return the decoded reply; OSError/ValueError on failure."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        try:
            sock.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # a refusing server (busy, wrong uid) replies and closes at once: read its reason
        buf = bytearray()
        while b"\n" not in buf:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    line = bytes(buf).split(b"\n", 1)[0]
    if not line:
        raise ConnectionError("the daemon closed the connection without a reply")
    reply = json.loads(line)
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ValueError(f"unexpected reply: {line[:200]!r}")
    return reply


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py ctl", description="Send a command to the running stockade daemon.")
    p.add_argument("cmd", help="command (try: help)")
    p.add_argument("args", nargs="*", help="positional ARGS or key=value pairs")
    p.add_argument("--socket", help="control socket path (default: found as the daemon does)")
    p.add_argument("--settings", help="settings file (for control.socket)")
    p.add_argument("--data-dir", help="data directory")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the reply (default 10; 120 for kill, which answers when flat)",
    )
    crash = p.add_argument_group("crash (fault injection)")
    crash.add_argument(
        "--times",
        type=int,
        default=None,
        metavar="N",
        help="crash NAME now and each of its next N-1 instances as it comes up (a restart-intensity drill)",
    )
    crash.add_argument(
        "--on-next-message",
        action="store_true",
        help="arm the crash for NAME's next message instead of crashing it now",
    )
    return p


def _crash_options(ns: argparse.Namespace) -> dict[str, Any]:
    """`--times` / `--on-next-message` as request args (crash only)."""
    out: dict[str, Any] = {}
    if ns.times is not None:
        if ns.times < 1:
            raise UsageError(f"--times must be >= 1, got {ns.times}")
        out["times"] = ns.times
    if ns.on_next_message:
        out["on_next_message"] = True
    if out and ns.cmd != "crash":
        raise UsageError("--times and --on-next-message are options of crash only")
    if ns.times is not None and ns.times > 1 and ns.on_next_message:
        raise UsageError("--times N crashes now; it does not combine with --on-next-message")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `run.py ctl`; returns the exit status."""
    parser = _parser()
    try:
        ns = parser.parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse has printed the usage
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    if ns.timeout is None:
        ns.timeout = SLOW_COMMANDS.get(ns.cmd, 10.0)
    if not ns.timeout > 0:
        print("ctl: --timeout must be > 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        args = build_args(ns.cmd, ns.args)
        args.update(_crash_options(ns))
    except UsageError as exc:
        print(f"ctl: {ns.cmd} {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        candidates = socket_candidates(ns.socket, ns.settings, ns.data_dir)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    path = next((c for c in candidates if c.exists()), None)
    if path is None:
        print(f"stockade is not running (no socket at {candidates[0]})", file=sys.stderr)
        return EXIT_FAIL
    try:
        reply = request(path, ns.cmd, args, ns.timeout)
    except ConnectionRefusedError:
        print(f"stockade is not running (stale socket at {path})", file=sys.stderr)
        return EXIT_FAIL
    except PermissionError:
        print(f"ctl: permission denied on {path} (run as the daemon's user or root)", file=sys.stderr)
        return EXIT_FAIL
    except TimeoutError:
        print(f"ctl: no reply from stockade on {path} within {ns.timeout:g}s", file=sys.stderr)
        return EXIT_FAIL
    except (OSError, ValueError) as exc:
        print(f"ctl: talking to {path} failed: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(json.dumps(reply, indent=2, sort_keys=False))
    if not reply.get("ok"):
        print(f"ctl: {ns.cmd}: {reply.get('error', 'failed')}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
