"""Where the daemon's log goes and in which format (`[logging]` settings).

- `format = "auto"` (the default): `text` when stderr is a terminal and we
  are not under systemd, else `json`. Under systemd means `$INVOCATION_ID`
  is set (systemd sets it for every service) or stderr is the journal's
  stream (`$JOURNAL_STREAM`).
- Under systemd with stderr connected to the journal (`$JOURNAL_STREAM`
  names stderr) and the journal's socket there (`journal_socket`), records
  go to the journal in its native protocol, with stockade's fields as
  journal fields (`ops/logs/journal.py`); `journal = false` keeps them on stderr.
  Anything else: stderr in the chosen format.

Each handler first stamps the record with the message's context
(`log_context.ContextFilter`), then applies the filters it is given (the
daemon's secret redaction).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import IO, Any

from stockade.ops.logs.context import ContextFilter
from stockade.ops.logs.format import JsonLineFormatter, TextFormatter
from stockade.ops.logs.journal import JournalHandler, is_socket, stderr_is_journal

# Chatty libraries: their INFO lines are noise next to ours.
QUIET_LOGGERS = ("aiohttp.access", "websockets", "urllib3", "alpaca")


def under_systemd(env: Mapping[str, str], fd: int = 2) -> bool:
    return bool(env.get("INVOCATION_ID")) or stderr_is_journal(env, fd)


def choose_format(setting: str, env: Mapping[str, str], stream: IO[str]) -> str:
    """`setting`, or for "auto": text on a terminal outside systemd, json otherwise."""
    if setting != "auto":
        return setting
    try:
        fd = stream.fileno()
        terminal = os.isatty(fd)
    except (AttributeError, OSError, ValueError):
        fd, terminal = 2, False
    return "text" if terminal and not under_systemd(env, fd) else "json"


def use_journal(cfg: Any, env: Mapping[str, str], stream: IO[str]) -> bool:
    """True when records should go to the journal's socket (see the module docstring)."""
    if not cfg.journal:
        return False
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return stderr_is_journal(env, fd) and is_socket(cfg.journal_socket)


def make_handler(
    cfg: Any, filters: Iterable[logging.Filter] = (), env: Mapping[str, str] = os.environ, stream: IO[str] = sys.stderr
) -> tuple[logging.Handler, str]:
    """The handler for `[logging]` settings `cfg`, and one line saying what it is."""
    fmt = choose_format(cfg.format, env, stream)
    handler: logging.Handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter() if fmt == "json" else TextFormatter())
    filters = [ContextFilter(), *filters]
    for f in filters:
        handler.addFilter(f)
    where = f"stderr ({fmt})"
    if use_journal(cfg, env, stream):
        fallback = handler
        handler = JournalHandler(cfg.journal_socket, fallback)
        for f in filters:
            handler.addFilter(f)
        where = f"the journal at {cfg.journal_socket} (native protocol; stderr in {fmt} if it refuses)"
    return handler, where


def install(
    cfg: Any, filters: Iterable[logging.Filter] = (), env: Mapping[str, str] = os.environ, stream: IO[str] = sys.stderr
) -> str:
    """Replace the root logger's handlers with the one for `cfg`; returns where logs go."""
    handler, where = make_handler(cfg, filters, env, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, cfg.level, logging.INFO))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Warnings and uncaught exceptions would print raw (multi-line) text
    # between the records: send them through the same handler.
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception
    sys.excepthook = _log_uncaught
    return where


def _log_uncaught(exc_type: Any, exc: BaseException, tb: Any) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("stockade").critical("uncaught exception: the daemon stops", exc_info=(exc_type, exc, tb))


def _log_thread_exception(args: Any) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("stockade").error(
        "uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )
