"""The two stderr log formats, `text` (for a person at a terminal) and `json`
(one object per line, for journald, Loki, Vector, Elastic ...).

Every record is one printable line in either: newlines, control bytes
(NUL, ESC ...) and other unprintable characters in text a client, a broker
or a symbol can put in a message are escaped, so nobody can forge a log
line or drive a terminal through the log. Text escapes them Python-style
(`\\n`, `\\x1b`, `\\u2028`); JSON escapes them as JSON (`\\n`, `\\u001b`),
so a parser gets the original text back. In text, a traceback follows its
record on lines that start with `  | ` (each escaped the same way), so a
record always starts with its timestamp.

JSON fields: `time` (RFC 3339, UTC, microseconds), `level`, `logger`,
`message`, then when known `trace_id`, `span_id`, `actor`, `symbol`,
`client_order_id` (see `log_context`), `exception` (the traceback, one
string), and whatever a call site passed as `extra`. The encoding is
python-json-logger's (extra fields of any type, exceptions, stack info);
every string field and then the encoded line are redacted of registered
secrets, a last line of defence for fields no other filter sees.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pythonjsonlogger.core import merge_record_extra
from pythonjsonlogger.json import JsonFormatter

from stockade.ops.logs.context import CONTEXT_FIELDS

# Jaeger's UI shows this many leading hex digits of a trace id beside each trace.
SHORT_TRACE_ID = 7


def _escape_char(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii")  # \n, \t, \x1b, \u2028, \U000e0001


def printable(text: str) -> str:
    """`text` with every unprintable character escaped Python-style; one line, safe on a terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


def printable_lines(text: str) -> list[str]:
    """A multi-line text (a traceback) as lines, each made `printable`."""
    return [printable(line) for line in text.rstrip("\n").split("\n")]


def rfc3339(created: float) -> str:
    """A `time.time()` value as RFC 3339 in UTC with microseconds, e.g. 2026-12-03T15:48:09.123456Z."""
    seconds, micros = divmod(round(created * 1_000_000), 1_000_000)  # exact below 2**53 us (year 2255)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


class TextFormatter(logging.Formatter):
    """`2026-12-03 15:48:09,123 INFO    stockade.actors.order_manager trace=4bf92f3: message`"""

    FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(trace)s: %(message)s"

    def __init__(self) -> None:
        super().__init__(self.FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = printable(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        trace_id = record.__dict__.get("trace_id")
        line = self.FORMAT % {**record.__dict__, "trace": f" trace={trace_id[:SHORT_TRACE_ID]}" if trace_id else ""}
        extra = []
        exc_text = _exception_text(self, record)
        if exc_text:
            extra.extend(printable_lines(exc_text))
        if record.stack_info:
            extra.extend(printable_lines(self.formatStack(record.stack_info)))
        if extra:
            line += "".join("\n  | " + part for part in extra)
        return line


# What json.dumps leaves raw that is not printable: DEL, C1 controls, line separators ...
def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code > 0xFFFF:  # JSON spells these as a surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def _printable_json(line: str) -> str:
    # Outside strings a JSON line is ASCII, so every character escaped here is inside a string.
    if line.isprintable():
        return line
    return "".join(ch if ch.isprintable() else _json_escape(ch) for ch in line)


def _redact_values(data: Any, redact: Any) -> Any:
    """Every string in `data` (dicts and lists walked) redacted, before JSON escapes them."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {key: _redact_values(value, redact) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_redact_values(value, redact) for value in data]
    return data


def _dumps(data: Any, **kwargs: Any) -> str:
    from stockade.broker.rest import redact

    # Values first: in the encoded line a secret with a quote, a backslash or
    # a control byte is spelled escaped and would not match. The line too:
    # `default=` may have turned an object into text.
    return redact(_printable_json(json.dumps(_redact_values(data, redact), **kwargs)))


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record, on one printable line (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(json_serializer=_dumps, json_ensure_ascii=False)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = rfc3339(record.created)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        fields = record.__dict__
        for key in CONTEXT_FIELDS:
            value = fields.get(key)
            if value:
                log_data[key] = value
        exc = message_dict.pop("exc_info", None)
        if exc:
            log_data["exception"] = exc
        stack = message_dict.pop("stack_info", None)
        if stack:
            log_data["stack"] = stack
        log_data.update(message_dict)
        merge_record_extra(record, log_data, reserved=_NOT_EXTRA)


# Record attributes that are not `extra` fields; an extra never replaces one of the fields above.
_NOT_EXTRA = frozenset(
    JsonFormatter().reserved_attrs
    | set(CONTEXT_FIELDS)
    | {"message", "asctime", "time", "level", "logger", "exception", "stack"}
)
