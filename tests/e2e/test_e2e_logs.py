"""The daemon's structured logs join its traces: a real daemon subprocess
trades on the embedded venue, exports spans to an OTLP receiver started by
the test, and logs in json (to stderr) or to a journal socket the test
binds (the native protocol). The log lines of one quote-to-order trace carry
the trace id and span ids the receiver got; a hostile control request
leaves one printable line."""

from __future__ import annotations

import json
import random

from daemon_harness import DaemonProcess, JournalDaemon, settings_text, wait_orders
from journal_receiver import JournalReceiver
from test_e2e_control import _raw as send_raw
from test_e2e_traces import TRADE_OFTEN, HttpReceiver, attrs
from waiting import wait_for

# Request lines a hostile local client could send: raw control bytes, and JSON
# whose strings hold newlines, NUL and terminal escapes.
HOSTILE = [
    b"\x00\x1b[2J\x1b]0;pwned\x07\r2026-12-03 15:48:09,123 CRITICAL forged\x7f\xff\n",
    json.dumps(
        {
            "cmd": "status\n2026-12-03 15:48:09,123 INFO forged: all good\x1b[31m\x00",
            "args": {"why\r\n": "\u2028\x1b[2J\x85"},
        }
    ).encode()
    + b"\n",
]


def telemetry_to(receiver: HttpReceiver) -> dict:
    return {
        "enabled": True,
        "protocol": "http/protobuf",
        "otlp_endpoint": f"http://127.0.0.1:{receiver.server_port}",
        "quote_sample_ratio": 0.0,
    }


def fuzzed(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    nasty = ["\x00", "\x1b", "\r", "\x7f", "\u2028", "\x85", "\t", "\x0b", "é", '"', "\\n"]
    out = []
    for _ in range(n):
        text = "".join(rng.choice(nasty) if rng.random() < 0.5 else rng.choice("ab:= ") for _ in range(16))
        out.append(json.dumps({"cmd": "x" + text, "args": {"k\n" + text: text}}).encode() + b"\n")
    return out


def test_json_lines_parse_and_carry_the_ids_of_the_exported_trace(short_dir):
    receiver = HttpReceiver()
    settings = settings_text(None, voter=TRADE_OFTEN, telemetry=telemetry_to(receiver), logging={"format": "json"})
    daemon = DaemonProcess(short_dir / "data", settings)
    try:
        daemon.wait_ready()
        chain = wait_for(receiver.spans.fill_chain, 90, 0.25, "a fill whose trace reaches back to the quote")
        fill, order, proposal = chain[:3]
        trace_id = chain[0].trace_id.hex()

        def lines_of_trace() -> dict[str, dict] | None:
            by_message: dict[str, dict] = {}
            for line in daemon.log().splitlines():
                record = json.loads(line)
                if record.get("trace_id") == trace_id:
                    by_message.setdefault(record["message"].split(":")[0], record)
            return by_message if {"risk", "order placed", "order filled"} <= set(by_message) else None

        lines = wait_for(lines_of_trace, 30, 0.25, f"the risk, order and fill lines of trace {trace_id}")
        coid, symbol = attrs(order)["stockade.client_order_id"], attrs(order)["stockade.symbol"]
        risk, placed, filled = lines["risk"], lines["order placed"], lines["order filled"]
        assert risk["actor"] == "risk_guard" and risk["span_id"] == proposal.span_id.hex()
        assert placed["actor"] == "order_manager" and placed["span_id"] == order.span_id.hex()
        # Filled as the REST answer came back (the order's span) or from the trade stream (the fill's).
        assert filled["actor"] == "order_manager" and filled["span_id"] in {order.span_id.hex(), fill.span_id.hex()}
        for record in (risk, placed, filled):
            assert record["symbol"] == symbol and record["level"] == "INFO"
        assert placed["client_order_id"] == filled["client_order_id"] == coid and coid in placed["message"]

        for line in HOSTILE + fuzzed(3, 10):
            assert send_raw(daemon.socket, line)["ok"] is False
    finally:
        code = daemon.stop()
        receiver.stop()
    assert code == 0
    text = daemon.log()
    records = [json.loads(line) for line in text.splitlines()]  # every line parses
    assert all(line.isprintable() for line in text.splitlines())
    assert len(records) > 20 and records[-1]["message"].startswith("stockade stopped")
    audits = [r for r in records if r["message"].startswith("control audit:") and r["level"] == "WARNING"]
    assert len(audits) == len(HOSTILE) + 10  # one record per hostile request, nothing forged
    assert not [r for r in records if "forged" in r["message"] and not r["message"].startswith("control audit:")]


def test_journal_gets_native_entries_with_the_trace_fields(short_dir):
    journal = JournalReceiver(short_dir / "journal.sock")
    receiver = HttpReceiver()
    settings = settings_text(
        None, voter=TRADE_OFTEN, telemetry=telemetry_to(receiver), logging={"journal_socket": journal.path}
    )
    daemon = JournalDaemon(short_dir / "data", settings, journal)
    try:
        daemon.wait_ready()
        wait_orders(daemon, 1, timeout=90)

        def placed() -> dict | None:
            return next(
                (e for e in journal.entries() if e["MESSAGE"].startswith("order placed") and e.get("TRACE_ID")), None
            )

        entry = wait_for(placed, 60, 0.25, "an 'order placed' entry with its trace id")
        assert entry["ACTOR"] == "order_manager" and entry["CLIENT_ORDER_ID"] in entry["MESSAGE"]
        assert entry["SYMBOL"] in entry["MESSAGE"] and len(entry["SPAN_ID"]) == 16
        # `journalctl TRACE_ID=...` finds that trace's spans in the receiver, and its risk decision in the journal.
        wait_for(
            lambda: any(s.trace_id.hex() == entry["TRACE_ID"] for s in receiver.spans.all()),
            30,
            0.25,
            "the entry's trace at the OTLP receiver",
        )
        same_trace = [e for e in journal.entries() if e.get("TRACE_ID") == entry["TRACE_ID"]]
        assert any(e["ACTOR"] == "risk_guard" for e in same_trace), same_trace

        # A crash: its traceback is one field in the binary-safe form.
        assert daemon.ok("crash", name="analyzer:SPY")["crash"] == "analyzer:SPY"
        crash = wait_for(
            lambda: next(
                (e for e in journal.entries() if e.get("EXCEPTION_TEXT") and e.get("ACTOR") == "analyzer:SPY"), None
            ),
            30,
            0.25,
            "the crash entry",
        )
        assert crash["PRIORITY"] == "3" and "InjectedCrash" in crash["EXCEPTION_TEXT"]
        assert crash["EXCEPTION_TEXT"].startswith("Traceback (most recent call last):\n")
        assert any(raw.startswith(b"MESSAGE=") and b"\nEXCEPTION_TEXT\n" in raw for raw in journal.raw)
        for line in HOSTILE:
            assert send_raw(daemon.socket, line)["ok"] is False
    finally:
        code = daemon.stop()
        receiver.stop()
        journal.stop()
    assert code == 0
    entries = journal.entries()  # every datagram parses
    for e in entries:
        assert e["SYSLOG_IDENTIFIER"] == "stockade" and e["PRIORITY"] in "234567" and e["LOGGER"]
        assert e["CODE_FILE"] and e["CODE_LINE"].isdigit() and e["MESSAGE"].isprintable()
    assert entries[-1]["MESSAGE"].startswith("stockade stopped")
    assert len([e for e in entries if e["MESSAGE"].startswith("control audit:") and e["PRIORITY"] == "4"]) == 2
    assert "stockade ready" not in daemon.stderr()  # the records went to the journal, not to stderr
