"""The log formats (text, json, the journal's native protocol): one printable
line per record whatever the text holds, the context fields, secret
redaction, and how the output is chosen (terminal, systemd, journal socket)."""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import random
import re
import socket
import sys

import pytest
from journal_receiver import JournalReceiver, parse
from waiting import wait_for

from stockade.broker.rest import register_secret
from stockade.config.settings import LoggingSettings, SettingsError, settings_from_dict
from stockade.ops.control import ControlServer
from stockade.ops.daemon import RedactingFilter
from stockade.ops.logs import context as log_context
from stockade.ops.logs import setup as log_setup
from stockade.ops.logs.format import printable, rfc3339
from stockade.ops.logs.journal import JournalHandler, encode, stderr_is_journal

SECRET = "LogFormatSecret-7f3a9c"
# Characters a client or a broker can put in text that must never reach a log raw.
NASTY = [
    "\n",
    "\r",
    "\x00",
    "\x1b",
    "\x1b[2J",
    "\x07",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "\t",
    "\x0b",
    "\x0c",
    "\ufeff",
    "\u202e",
    "\U000e0001",
    "\udcff",
    '"',
    "\\",
    "}",
    "{",
    "é",
    "漢",
]


def fuzz_text(rng: random.Random, n: int = 12) -> str:
    return "".join(rng.choice(NASTY) if rng.random() < 0.5 else rng.choice("abcXYZ 0123:=") for _ in range(n))


class Msg:
    """A message as the actor base sees it (symbol, intent id)."""

    def __init__(self, symbol: str, intent_id: str = "") -> None:
        self.symbol, self.intent_id = symbol, intent_id


def logger_to(handler: logging.Handler, name: str) -> logging.Logger:
    lg = logging.getLogger(f"stockade.test.{name}")
    lg.handlers[:] = [handler]
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    return lg


def stream_handler(fmt: str) -> tuple[logging.Handler, io.StringIO]:
    out = io.StringIO()
    handler, _ = log_setup.make_handler(LoggingSettings(format=fmt), [RedactingFilter()], env={}, stream=out)
    return handler, out


@pytest.fixture(autouse=True)
def _secret():
    register_secret(SECRET)


def test_printable_escapes_every_unprintable_character():
    assert printable("plain text: AAPL 12.5") == "plain text: AAPL 12.5"
    assert printable("a\nb\r\x00\x1b[31m\x7f\u2028") == "a\\nb\\r\\x00\\x1b[31m\\x7f\\u2028"
    rng = random.Random(7)
    for _ in range(500):
        out = printable(fuzz_text(rng, 30))
        assert out.isprintable(), repr(out)


def test_rfc3339_utc_with_microseconds():
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000000Z"
    moment = datetime.datetime(2026, 12, 3, 15, 48, 9, 123456, tzinfo=datetime.UTC)
    assert rfc3339(moment.timestamp()) == "2026-12-03T15:48:09.123456Z"
    assert rfc3339(moment.timestamp() + 0.9999996) == "2026-12-03T15:48:10.123456Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", rfc3339(1796308089.0))


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_fuzzed_messages_stay_one_printable_line(fmt):
    handler, out = stream_handler(fmt)
    lg = logger_to(handler, f"fuzz.{fmt}")
    rng = random.Random(11)
    sent = []
    for _ in range(300):
        text = fuzz_text(rng)
        sent.append(text)
        lg.warning("control audit: %s -> %s", text, fuzz_text(rng, 4))
    lines = out.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == 301  # one line per record, nothing else
    for line, text in zip(lines[:-1], sent, strict=True):
        assert line.isprintable(), repr(line)
        if fmt == "json":
            record = json.loads(line)
            assert record["message"].startswith(f"control audit: {text} -> ")  # the original text, unescaped
        else:
            assert printable(text) in line


def test_json_record_fields_context_and_exception():
    handler, out = stream_handler("json")
    lg = logger_to(handler, "json.fields")
    slot = log_context.Handling("order_manager")
    token = log_context.enter(slot, Msg("AAPL", intent_id="i-42"))
    try:
        try:
            raise ValueError(f"broker said: bad\nrequest {SECRET}")
        except ValueError:
            lg.exception("submit failed for %s", "AAPL", extra={"attempt": 3})
    finally:
        log_context.leave(token)
    lg.info("outside any handler")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert list(first)[:4] == ["time", "level", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["time"])
    assert first["level"] == "ERROR" and first["logger"] == "stockade.test.json.fields"
    assert first["message"] == "submit failed for AAPL"
    assert first["actor"] == "order_manager" and first["symbol"] == "AAPL"
    assert first["client_order_id"] == "stk-i-42"  # derived from the intent id, as on the span
    assert first["attempt"] == 3
    assert first["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: broker said: bad\nrequest ***" in first["exception"] and SECRET not in out.getvalue()
    assert "trace_id" not in first  # tracing off: no trace to point at
    assert set(second) == {"time", "level", "logger", "message"}


def test_trace_and_span_ids_of_the_current_span(monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from stockade.ops import telemetry

    tracer = TracerProvider().get_tracer("t")
    monkeypatch.setattr(telemetry, "ACTIVE", object())  # tracing on: the filter looks at the current span
    handler, out = stream_handler("json")
    text_handler, text_out = stream_handler("text")
    lg = logger_to(handler, "json.trace")
    lg.addHandler(text_handler)
    with tracer.start_as_current_span("control status") as span:
        lg.info("inside a span")
    sc = span.get_span_context()
    # The handler's span from the slot wins (the base sets it; it is kept for the failure line).
    handler_span = NonRecordingSpan(SpanContext(0xABC, 0xDEF, False, TraceFlags(1)))
    slot = log_context.Handling("risk_guard")
    token = log_context.enter(slot, Msg("MSFT"))
    slot.span = handler_span
    lg.info("in a handler")
    log_context.leave(token)
    a, b = (json.loads(line) for line in out.getvalue().splitlines())
    assert a["trace_id"] == f"{sc.trace_id:032x}" and a["span_id"] == f"{sc.span_id:016x}"
    assert b["trace_id"] == f"{0xABC:032x}" and b["span_id"] == f"{0xDEF:016x}" and b["actor"] == "risk_guard"
    first_text = text_out.getvalue().splitlines()[0]
    assert f" trace={sc.trace_id:032x}"[:14] in first_text and first_text.endswith(": inside a span")


def test_text_traceback_lines_cannot_pass_for_records():
    handler, out = stream_handler("text")
    lg = logger_to(handler, "text.tb")
    try:
        raise RuntimeError("line one\n2026-12-03 15:48:09,123 CRITICAL forged: everything is fine\x1b[2J")
    except RuntimeError:
        lg.error("handler failed", exc_info=True)
    lines = out.getvalue().splitlines()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR   stockade.test.text.tb: handler failed$", lines[0])
    assert len(lines) > 3 and all(line.startswith("  | ") and line.isprintable() for line in lines[1:])


# ---- the journal's native protocol ----------------------------------------------------------


def test_encode_uses_the_binary_safe_form_only_for_newlines():
    payload = encode([("MESSAGE", "hello = world"), ("EXCEPTION_TEXT", "a\nb"), ("EMPTY", "")])
    assert payload == (
        b"MESSAGE=hello = world\n" + b"EXCEPTION_TEXT\n" + (3).to_bytes(8, "little") + b"a\nb\n" + b"EMPTY=\n"
    )
    assert parse(payload) == [("MESSAGE", b"hello = world"), ("EXCEPTION_TEXT", b"a\nb"), ("EMPTY", b"")]


@pytest.fixture
def journal(short_dir):
    receiver = JournalReceiver(short_dir / "journal.sock")
    yield receiver
    receiver.stop()


def test_journal_handler_sends_native_entries_with_the_fields(short_dir, journal):
    # As the daemon sets it up: stderr is the journal's stream, its socket is there.
    stderr = open(short_dir / "stderr", "w")  # closed at the end
    st = os.fstat(stderr.fileno())
    handler, _ = log_setup.make_handler(
        LoggingSettings(journal_socket=journal.path),
        [RedactingFilter()],
        env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
        stream=stderr,
    )
    assert isinstance(handler, JournalHandler)
    lg = logger_to(handler, "journal.fields")
    slot = log_context.Handling("order_manager")
    token = log_context.enter(slot, Msg("NV\nDA", intent_id="i-7"))
    try:
        try:
            raise KeyError(f"no such order\x1b[2J {SECRET}")
        except KeyError:
            lg.exception("fill for %s\nnot matched", "i-7")
    finally:
        log_context.leave(token)
    lg.info("x" * 300_000)  # bigger than a datagram: sent as a sealed memfd
    entries = wait_for(lambda: len(journal.entries()) == 2 and journal.entries(), 10, 0.02, "two journal entries")
    first, big = entries
    assert first["MESSAGE"] == "fill for i-7\\nnot matched"
    assert first["PRIORITY"] == "3" and first["SYSLOG_IDENTIFIER"] == "stockade"
    assert first["LOGGER"] == "stockade.test.journal.fields" and first["CODE_FUNC"].startswith("test_journal")
    assert first["CODE_FILE"] == __file__ and int(first["CODE_LINE"]) > 0 and first["THREAD_NAME"]
    assert first["ACTOR"] == "order_manager" and first["SYMBOL"] == "NV\\nDA" and first["CLIENT_ORDER_ID"] == "stk-i-7"
    tb = first["EXCEPTION_TEXT"]
    assert tb.startswith("Traceback (most recent call last):\n") and "\\x1b[2J ***" in tb and SECRET not in tb
    assert b"EXCEPTION_TEXT\n" in journal.raw[0]  # the binary-safe form
    assert big["MESSAGE"] == "x" * 300_000 and big["PRIORITY"] == "6"
    assert journal.memfd_entries == 1 and journal.sealed
    stderr.close()
    assert handler.sent == 2 and (short_dir / "stderr").read_text() == ""


def test_journal_handler_falls_back_to_stderr_when_the_journal_is_gone(short_dir):
    fallback, out = stream_handler("json")
    handler = JournalHandler(str(short_dir / "no-journal.sock"), fallback)
    lg = logger_to(handler, "journal.gone")
    lg.warning("still written")
    lg.warning("and again")
    notice, *records = (json.loads(line) for line in out.getvalue().splitlines())
    assert "no-journal.sock refused a record" in notice["message"] and "No such file" in notice["message"]
    assert [r["message"] for r in records] == ["still written", "and again"] and handler.fell_back == 2


def test_journal_handler_never_loses_a_record_when_the_journal_is_full_or_restarts(short_dir):
    path = str(short_dir / "stalled.sock")
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound, never read: its queue fills up
    stalled.bind(path)
    fallback, out = stream_handler("json")
    handler = JournalHandler(path, fallback)
    lg = logger_to(handler, "journal.full")
    n = 3000
    for i in range(n):
        lg.info("record %d", i)
    assert handler.fell_back > 0 and handler.sent + handler.fell_back == n
    written = [json.loads(line) for line in out.getvalue().splitlines()]
    assert written[0]["level"] == "WARNING" and "refused a record" in written[0]["message"]
    assert len(written) == handler.fell_back + 1  # every refused record, once, and one line saying why
    stalled.setblocking(False)
    got = []
    while True:
        try:
            got.append(dict(parse(stalled.recv(65536)))["MESSAGE"].decode())
        except BlockingIOError:
            break
    assert len(got) == handler.sent
    assert sorted(got + [r["message"] for r in written[1:]], key=lambda m: int(m.split()[1])) == [
        f"record {i}" for i in range(n)
    ]
    # journald restarts (a new socket at the same path): the handler connects again.
    stalled.close()
    os.unlink(path)
    lg.info("while it restarts")
    with JournalReceiver(short_dir / "stalled.sock") as journal:
        lg.info("after the restart")
        wait_for(lambda: [e["MESSAGE"] for e in journal.entries()] == ["after the restart"], 10, 0.02, "the entry")
    assert json.loads(out.getvalue().splitlines()[-1])["message"] == "while it restarts"


def test_a_full_journal_is_waited_for_even_on_a_descriptor_above_1024(short_dir):
    # select() raises "filedescriptor out of range" for fd >= 1024: the handler
    # then never waited for journald's queue and refused at once (ValueError).
    path = str(short_dir / "full.sock")
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound, never read: its queue fills up
    stalled.bind(path)
    spacers = []
    try:
        while (probe := os.dup(0)) < 1100:
            spacers.append(probe)
        os.close(probe)
        fallback, out = stream_handler("json")
        handler = JournalHandler(path, fallback)
        assert handler.sock.fileno() >= 1024
        lg = logger_to(handler, "journal.highfd")
        for i in range(3000):
            lg.info("record %d", i)
            if handler.fell_back:
                break
        assert handler.fell_back == 1 and handler.sent > 0
        why = json.loads(out.getvalue().splitlines()[0])["message"]
        assert "refused a record" in why and "out of range" not in why, why
        handler.close()
    finally:
        for fd in spacers:
            os.close(fd)
        stalled.close()


# ---- which output ---------------------------------------------------------------------------


def test_format_auto_text_on_a_terminal_json_under_systemd_or_a_pipe(short_dir):
    master, slave = os.openpty()
    with open(slave, "w", closefd=True) as tty, open(short_dir / "log", "w") as file:
        auto = "auto"
        assert log_setup.choose_format(auto, {}, tty) == "text"
        assert log_setup.choose_format(auto, {"INVOCATION_ID": "ab12"}, tty) == "json"
        assert log_setup.choose_format(auto, {}, file) == "json"
        assert log_setup.choose_format("text", {}, file) == "text"
        assert log_setup.choose_format(auto, {}, io.StringIO()) == "json"
    os.close(master)


def test_journal_only_when_stderr_is_the_journal_stream_and_its_socket_is_there(short_dir, journal):
    path = short_dir / "stderr"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(env, stream.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, stream.fileno())
        on = LoggingSettings(journal_socket=journal.path)
        handler, where = log_setup.make_handler(on, env=env, stream=stream)
        assert isinstance(handler, JournalHandler) and journal.path in where
        assert log_setup.choose_format("auto", env, stream) == "json"  # its fallback: under systemd
        handler.close()
        handler, _ = log_setup.make_handler(
            LoggingSettings(journal=False, journal_socket=journal.path), env=env, stream=stream
        )
        assert not isinstance(handler, JournalHandler)
        handler, _ = log_setup.make_handler(
            LoggingSettings(journal_socket=str(short_dir / "none.sock")), env=env, stream=stream
        )
        assert not isinstance(handler, JournalHandler)
        handler, _ = log_setup.make_handler(on, env={}, stream=stream)
        assert not isinstance(handler, JournalHandler)


def test_bad_logging_settings_name_the_key():
    with pytest.raises(SettingsError, match=r"logging\.format = .*xml"):
        settings_from_dict({"logging": {"format": "xml"}})
    with pytest.raises(SettingsError, match=r"logging\.journal_socket = .*relative.sock.*absolute"):
        settings_from_dict({"logging": {"journal_socket": "relative.sock"}})


# ---- a fuzzed control request leaves one printable line, in every format ------------------------


def _fuzzed_requests(rng: random.Random) -> list[bytes]:
    """Request lines as a hostile client could send them: raw control bytes (not JSON),
    and JSON whose strings hold newlines, ESC and NUL."""
    out = []
    for i in range(40):
        if i % 2:
            raw = fuzz_text(rng, 20).encode("utf-8", "surrogateescape").replace(b"\n", b"\r") + bytes([0, 27, 255])
        else:
            raw = json.dumps({"cmd": fuzz_text(rng, 8), "args": {fuzz_text(rng, 3): fuzz_text(rng, 10)}}).encode()
        out.append(raw + b"\n")
    return out


@pytest.mark.parametrize("fmt", ["text", "json", "journal"])
def test_fuzzed_control_requests_leave_one_printable_line_each(short_dir, fmt, journal):
    stream_path = short_dir / "stderr"
    with open(stream_path, "w") as stream:
        env = {}
        if fmt == "journal":
            st = os.fstat(stream.fileno())
            env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        cfg = LoggingSettings(format="json" if fmt == "journal" else fmt, journal_socket=journal.path)
        handler, _ = log_setup.make_handler(cfg, [RedactingFilter()], env=env, stream=stream)
        control_log = logging.getLogger("stockade.ops.control")
        saved = control_log.handlers[:], control_log.propagate
        control_log.handlers[:], control_log.propagate = [handler], False
        server = ControlServer(short_dir / "c.sock")
        server.start()
        try:
            requests = _fuzzed_requests(random.Random(5))
            for line in requests:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    s.connect(str(server.path))
                    s.sendall(line)
                    assert s.recv(65536).endswith(b"\n")  # answered: the audit line is written by then
        finally:
            server.stop(timeout=5)
            control_log.handlers[:], control_log.propagate = saved
            handler.close()
    if fmt == "journal":
        entries = wait_for(
            lambda: len(journal.entries()) >= len(requests) and journal.entries(), 10, 0.02, "an entry per request"
        )
        lines = [e["MESSAGE"] for e in entries if "control audit" in e["MESSAGE"]]
        assert stream_path.read_text() == ""
    else:
        lines = [line for line in stream_path.read_text().split("\n") if line]
    for line in lines:
        assert line.isprintable(), repr(line)
    if fmt == "json":
        lines = [json.loads(line)["message"] for line in lines]  # the client's text, faithfully
    audit = [line for line in lines if "control audit: uid" in line]
    assert len(audit) == len(requests), lines


def test_the_daemon_log_filter_still_runs_first_in_every_format():
    # RedactingFilter turns the exception into exc_text; every format must use it, not the raw exc_info.
    for fmt in ("text", "json"):
        handler, out = stream_handler(fmt)
        lg = logger_to(handler, f"redact.{fmt}")
        try:
            raise ValueError(SECRET)
        except ValueError:
            lg.exception("token %s", SECRET)
        assert SECRET not in out.getvalue() and "***" in out.getvalue()


def test_json_redacts_secrets_that_json_would_escape_in_extra_fields():
    # The JSON line was redacted only as a whole, after encoding: a secret
    # holding a quote, a backslash or a control byte appears escaped there
    # (\" \\ \u0001), did not match, and came back intact to a parser.
    quoted = 'smtp"pass\\word\x01-9e2'
    register_secret(quoted)
    handler, out = stream_handler("json")
    logger_to(handler, "redact.extra").warning(
        "login failed", extra={"detail": f"as {quoted}", "body": {"nested": [quoted]}}
    )
    [record] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert record["detail"] == "as ***" and record["body"] == {"nested": ["***"]}
    assert quoted not in json.dumps(record) and quoted not in repr(record)


def test_install_sends_warnings_and_uncaught_thread_exceptions_through_the_format(monkeypatch):
    import threading
    import warnings

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    out = io.StringIO()
    try:
        where = log_setup.install(LoggingSettings(format="json"), [RedactingFilter()], env={}, stream=out)
        assert where == "stderr (json)"
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("something odd\nwith two lines", UserWarning, stacklevel=1)

        def fail() -> None:
            raise RuntimeError(f"thread died {SECRET}")

        t = threading.Thread(target=fail, name="worker-1")
        t.start()
        t.join(5)
    finally:
        logging.captureWarnings(False)
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert any(r["logger"] == "py.warnings" and "something odd\nwith two lines" in r["message"] for r in records)
    died = next(r for r in records if r["message"] == "uncaught exception in thread worker-1")
    assert "RuntimeError: thread died ***" in died["exception"] and SECRET not in out.getvalue()
