import http.server
import json
import logging
import os
import socketserver
import stat
import threading
from email import message_from_bytes

import pytest

from stockade.codecs.messages import Alert
from stockade.config.settings import AlertsSettings
from stockade.ops.alerts.channels import (
    ChannelError,
    JsonlChannel,
    LogChannel,
    Redactor,
    SmtpChannel,
    WebhookChannel,
    build_channels,
)
from stockade.ops.alerts.policy import AlertPolicy

SECRET = "PKTESTSECRETKEY123456"


def alert(level="WARNING", key="stream.silent", text="no quotes for 15s", ts_ns=1_700_000_000_000_000_000):
    return Alert(level=level, key=key, text=text, source="QuoteStreamer", ts_ns=ts_ns)


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


# ---- policy ---------------------------------------------------------------------------


def test_dedup_within_window_then_count_reported():
    clock = FakeClock()
    p = AlertPolicy(dedup_window_s=60, max_per_key_per_hour=100, clock=clock)
    assert p.decide("k", "WARNING").deliver
    clock.t += 10
    d = p.decide("k", "WARNING")
    assert (d.deliver, d.reason, d.suppressed) == (False, "duplicate", 1)
    assert not p.decide("k", "INFO").deliver
    assert p.decide("other", "WARNING").deliver  # per key
    assert p.pending_suppressed() == {"k": 2}
    clock.t += 60
    d = p.decide("k", "WARNING")
    assert d.deliver and d.suppressed == 2
    assert p.pending_suppressed() == {}


def test_higher_level_and_emergency_get_through():
    clock = FakeClock()
    p = AlertPolicy(dedup_window_s=60, max_per_key_per_hour=1, clock=clock)
    assert p.decide("k", "WARNING").deliver
    clock.t += 1
    d = p.decide("k", "CRITICAL")  # escalation, but the hourly limit (1) is spent
    assert not d.deliver and d.reason == "rate limit"
    for _ in range(5):
        assert p.decide("k", "EMERGENCY").deliver  # never suppressed
    p2 = AlertPolicy(dedup_window_s=60, max_per_key_per_hour=10, clock=clock)
    assert p2.decide("k", "WARNING").deliver
    assert p2.decide("k", "CRITICAL").deliver
    assert not p2.decide("k", "CRITICAL").deliver
    assert not p2.decide("k", "WARNING").deliver


def test_rate_limit_per_rolling_hour():
    clock = FakeClock()
    p = AlertPolicy(dedup_window_s=0, max_per_key_per_hour=3, clock=clock)
    delivered = []
    for _ in range(10):
        delivered.append(p.decide("k", "WARNING").deliver)
        clock.t += 60
    assert delivered == [True, True, True] + [False] * 7
    clock.t = 1000.0 + 3600  # the first delivery leaves the window
    d = p.decide("k", "WARNING")
    assert d.deliver and d.suppressed == 7
    assert p.take_suppressed("k") == 0


def test_key_memory_is_bounded():
    clock = FakeClock()
    p = AlertPolicy(dedup_window_s=60, max_per_key_per_hour=10, clock=clock, max_keys=100)
    for i in range(1000):
        clock.t += 1
        p.decide(f"order.{i}", "INFO")
    assert len(p._keys) <= 100


# ---- channels ---------------------------------------------------------------------------


def test_redactor():
    r = Redactor([SECRET, "abc", ""])
    assert r(f"auth failed for {SECRET}!") == "auth failed for [REDACTED]!"
    assert r("abc stays: too short to be a secret") == "abc stays: too short to be a secret"
    assert SECRET not in Redactor.from_environment({"APCA_API_SECRET_KEY": SECRET, "APCA_API_KEY_ID": "PKID0000000"})(
        SECRET
    )


def test_log_channel_maps_levels(caplog):
    ch = LogChannel(redact=Redactor([SECRET]))
    with caplog.at_level(logging.INFO, logger="stockade.alerts"):
        ch.send(alert("CRITICAL", text=f"key {SECRET} rejected"), suppressed=3)
        ch.send(alert("INFO"))
    assert caplog.records[0].levelno == logging.CRITICAL
    assert caplog.records[1].levelno == logging.INFO
    msg = caplog.records[0].getMessage()
    assert SECRET not in msg and "[REDACTED]" in msg and "(+3 similar suppressed)" in msg


def test_jsonl_channel(tmp_path):
    path = tmp_path / "alerts.jsonl"
    ch = JsonlChannel(path, redact=Redactor([SECRET]))
    ch.send(alert())
    ch.send(alert("EMERGENCY", key="kill", text=f"liquidating; key {SECRET}"), suppressed=2)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "WARNING" and first["key"] == "stream.silent"
    assert first["ts"] == "2023-11-14T22:13:20.000+00:00"
    assert second["suppressed"] == 2 and SECRET not in lines[1]
    os.chmod(path, 0o644)
    ch.send(alert())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # narrowed again


def test_jsonl_channel_error(tmp_path):
    with pytest.raises(ChannelError, match="cannot append"):
        JsonlChannel(tmp_path / "missing" / "a.jsonl").send(alert())


class Hook:
    def __init__(self, status=200):
        self.posts = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append((self.path, self.headers["Content-Type"], json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T0KEN-{SECRET}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_webhook_generic_slack_discord(hook):
    red = Redactor([SECRET])
    WebhookChannel(hook.url, "generic", redact=red).send(alert(text=f"oops {SECRET}"), suppressed=1)
    WebhookChannel(hook.url, "slack", redact=red).send(alert())
    WebhookChannel(hook.url, "discord", redact=red).send(alert(text="x" * 5000))
    (p1, ct, generic), (_, _, slack), (_, _, discord) = hook.posts
    assert p1.startswith("/hooks/") and ct == "application/json"
    assert generic["level"] == "WARNING" and generic["suppressed"] == 1 and generic["text"] == "oops [REDACTED]"
    assert slack == {"text": "[WARNING] stream.silent: no quotes for 15s (QuoteStreamer)"}
    assert set(discord) == {"content"} and len(discord["content"]) == 2000


def test_webhook_errors_do_not_leak_the_url():
    h = Hook(status=500)
    try:
        with pytest.raises(ChannelError) as ei:
            WebhookChannel(h.url, "slack").send(alert())
        assert str(ei.value) == "webhook (slack): HTTP 500"
    finally:
        h.close()
    with pytest.raises(ChannelError) as ei:  # nothing listens there any more
        WebhookChannel(h.url, "generic", timeout_s=2).send(alert())
    assert "T0KEN" not in str(ei.value)


class MiniSmtp(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: EHLO, MAIL, RCPT, DATA, QUIT."""

    def handle(self):
        self.wfile.write(b"220 mini ESMTP\r\n")
        env = {"rcpt": []}
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250-mini\r\n250 8BITMIME\r\n")
            elif verb == b"MAIL":
                env["from"] = line.decode().strip()
                self.wfile.write(b"250 OK\r\n")
            elif verb == b"RCPT":
                env["rcpt"].append(line.decode().strip())
                self.wfile.write(b"250 OK\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go ahead\r\n")
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    chunk = self.rfile.readline()
                    if not chunk:
                        return
                    data += chunk
                env["data"] = data[:-5]
                self.server.mails.append(dict(env))
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"502 not implemented\r\n")


@pytest.fixture
def smtp_server():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), MiniSmtp)
    srv.daemon_threads = True
    srv.mails = []
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(5)


def test_smtp_channel_against_a_local_server(smtp_server):
    port = smtp_server.server_address[1]
    ch = SmtpChannel(
        "127.0.0.1",
        port,
        "stockade@example.org",
        ["ops@example.org", "oncall@example.org"],
        timeout_s=5,
        redact=Redactor([SECRET]),
        security="none",
    )
    ch.send(alert("CRITICAL", key="daily_loss", text=f"daily loss limit hit ({SECRET})"), suppressed=4)
    (mail,) = smtp_server.mails
    assert "stockade@example.org" in mail["from"]
    assert len(mail["rcpt"]) == 2
    msg = message_from_bytes(mail["data"])
    assert msg["Subject"] == "[stockade] CRITICAL daily_loss"
    body = msg.get_payload(decode=True).decode()
    assert "daily loss limit hit ([REDACTED])" in body and "(+4 similar suppressed)" in body
    assert SECRET not in mail["data"].decode()


def test_smtp_refuses_password_without_tls(smtp_server):
    port = smtp_server.server_address[1]
    ch = SmtpChannel(
        "127.0.0.1", port, "a@b", ["c@d"], user="u", password="hunter2hunter2", timeout_s=5, security="none"
    )
    with pytest.raises(ChannelError, match="refusing to send the password without TLS") as ei:
        ch.send(alert("CRITICAL"))
    assert not ei.value.retryable and "hunter2" not in str(ei.value)
    assert smtp_server.mails == []


def test_smtp_starttls_is_not_silently_skipped(smtp_server):
    """A server that offers no STARTTLS gets no mail (and no password) in the clear."""
    port = smtp_server.server_address[1]
    ch = SmtpChannel("127.0.0.1", port, "a@b", ["c@d"], user="u", password="hunter2hunter2", timeout_s=5)
    with pytest.raises(ChannelError, match="SMTPNotSupportedError") as ei:
        ch.send(alert("CRITICAL"))
    assert not ei.value.retryable and "hunter2" not in str(ei.value)
    assert smtp_server.mails == []


def test_smtp_unreachable():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on that port now
    with pytest.raises(ChannelError, match=r"smtp 127.0.0.1:\d+: ConnectionRefusedError"):
        SmtpChannel("127.0.0.1", port, "a@b", ["c@d"], timeout_s=2, security="none").send(alert("CRITICAL"))


def test_build_channels(tmp_path):
    cfg = AlertsSettings(webhook_url="https://example.org/h", smtp_host="mail", smtp_from="a@b", smtp_to=("c@d",))
    chans = build_channels(cfg, tmp_path, env={"STOCKADE_WEBHOOK_URL": "https://hooks.slack.com/services/XYZSECRETXYZ"})
    assert [c.name for c in chans] == ["log", "jsonl", "webhook", "smtp"]
    webhook = chans[2]
    assert webhook._url.startswith("https://hooks.slack.com")  # the secret overrides settings
    assert webhook.min_level == "WARNING" and not webhook.accepts("INFO") and webhook.accepts("EMERGENCY")
    assert chans[3].min_level == "CRITICAL"
    assert [c.name for c in build_channels(AlertsSettings(jsonl=False), tmp_path, env={})] == ["log"]


# ---- policy edges -------------------------------------------------------------------------


def test_dedup_window_edge_is_exclusive():
    clock = FakeClock()
    p = AlertPolicy(dedup_window_s=60, max_per_key_per_hour=100, clock=clock)
    assert p.decide("k", "WARNING").deliver
    clock.t += 59.999
    assert not p.decide("k", "WARNING").deliver
    clock.t = 1000.0 + 60  # exactly the window later: a new delivery
    d = p.decide("k", "WARNING")
    assert d.deliver and d.suppressed == 1


def test_rate_limit_edge_exactly_max_then_exactly_an_hour():
    clock = FakeClock()
    p = AlertPolicy(dedup_window_s=0, max_per_key_per_hour=2, clock=clock)
    assert p.decide("k", "INFO").deliver  # t=1000
    clock.t = 1001.0
    assert p.decide("k", "INFO").deliver  # the 2nd: still allowed
    clock.t = 4599.999
    assert p.decide("k", "INFO").reason == "rate limit"  # the 3rd within the hour
    clock.t = 4600.0  # the first left the rolling hour exactly now
    d = p.decide("k", "INFO")
    assert d.deliver and d.suppressed == 1
    assert p.decide("k", "INFO").reason == "rate limit"  # 1001 and 4600 fill the hour again
    assert p.decide("other", "INFO").deliver  # other keys are not affected


# ---- counts, report -------------------------------------------------------------------------


def test_counts_by_level_and_kind_bounded():
    from stockade.codecs.records import AlertRecord
    from stockade.storage import alert_counts

    rec = AlertRecord(level="WARNING", key="order-rejected:AAPL", text="t", source="s", ts_ns=5)
    c = alert_counts.bump(None, "all", rec)
    c = alert_counts.bump(c, "all", AlertRecord(level="CRITICAL", key="circuit-breaker", text="t", source="s", ts_ns=9))
    assert (c.total, c.by_level, c.by_kind, c.first_ns, c.last_ns) == (
        2,
        {"WARNING": 1, "CRITICAL": 1},
        {"order-rejected": 1, "circuit-breaker": 1},
        5,
        9,
    )
    assert alert_counts.kind_of("fill:abc:def") == "fill" and alert_counts.kind_of(":x") == ":x"
    for i in range(alert_counts.MAX_KINDS + 50):
        c = alert_counts.bump(c, "all", AlertRecord(level="INFO", key=f"k{i}", text="t", source="s", ts_ns=10))
    assert len(c.by_kind) == alert_counts.MAX_KINDS + 1 and c.by_kind[alert_counts.OTHER_KIND] == 52


def test_alerts_count_under_the_exchange_date():
    from stockade.storage.alert_counts import period_of

    # 2026-11-24 02:30 UTC is still the evening of the 23rd in New York: the
    # same day the daily counters and the daily summary use.
    assert period_of(1_795_487_400 * 10**9) == "2026-11-23"
    assert period_of(1_795_487_400 * 10**9 + 3 * 3600 * 10**9) == "2026-11-24"  # 00:30 in New York


def test_store_add_alert_keeps_counts_with_history(tmp_path):
    from stockade.codecs.records import AlertRecord
    from stockade.ops.alerts import report as alert_report
    from stockade.storage.store import Store

    day = 1_700_000_000_000_000_000  # 2023-11-14 UTC
    with Store.open(tmp_path / "d") as store:
        for i, (level, key) in enumerate(
            [
                ("INFO", "fill:1"),
                ("WARNING", "market-data:stale"),
                ("WARNING", "market-data:disconnected"),
                ("CRITICAL", "kill"),
            ]
        ):
            store.add_alert(AlertRecord(level=level, key=key, text="t", source="s", ts_ns=day + i))
        next_day = day + 86_400 * 10**9
        store.add_alert(AlertRecord(level="INFO", key="daily-summary", text="t", source="s", ts_ns=next_day))
        assert store.alerts.count() == 5
        c = alert_report.counts(store, now_ns=day)
        assert c["all"]["total"] == 5 and c["all"]["by_kind"] == {
            "market-data": 2,
            "daily-summary": 1,
            "fill": 1,
            "kill": 1,
        }  # most first, then by name
        assert c["today"]["date"] == "2023-11-14" and c["today"]["total"] == 4
        assert c["today"]["by_level"] == {"INFO": 1, "WARNING": 2, "CRITICAL": 1}
        r = alert_report.report(store, None, limit=2, min_level="WARNING")
        assert [a["key"] for a in r["alerts"]] == ["kill", "market-data:disconnected"]
        with pytest.raises(ValueError, match="level must be one of"):
            alert_report.report(store, None, min_level="LOUD")


def test_ctl_alerts_arguments():
    from stockade.ops import ctl

    assert ctl.build_args("alerts", []) == {}
    assert ctl.build_args("alerts", ["50"]) == {"n": 50}
    assert ctl.build_args("alerts", ["critical", "5"]) == {"n": 5, "level": "CRITICAL"}
    assert ctl.build_args("alerts", ["5", "kind=order-rejected"]) == {"n": 5, "kind": "order-rejected"}
    for bad in (["many"], ["5", "6"], ["INFO", "WARNING"]):
        with pytest.raises(ctl.UsageError):
            ctl.build_args("alerts", bad)


# ---- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("retry_attempts = 0", "settings: alerts.retry_attempts = 0: must be >= 1"),
        ("retry_initial_s = 0.0", "settings: alerts.retry_initial_s = 0.0: must be > 0"),
        ("retry_max_s = 1.0", "settings: alerts.retry_max_s = 1.0: must be >= alerts.retry_initial_s (2)"),
        ("queue_max = 0", "settings: alerts.queue_max = 0: must be >= 1"),
        ("stale_quote_s = -1.0", "settings: alerts.stale_quote_s = -1.0: must be > 0"),
        ("daily_summary_time = '4pm'", 'settings: alerts.daily_summary_time = "4pm": must be HH:MM'),
        ("daily_summary_time = '24:00'", 'settings: alerts.daily_summary_time = "24:00": must be HH:MM'),
        (
            "smtp_ca_file = '/nonexistent/ca.pem'",
            'settings: alerts.smtp_ca_file = "/nonexistent/ca.pem": is not a readable file',
        ),
        ("smtp_user = 'u'\nsmtp_security = 'none'", 'settings: alerts.smtp_security = "none": must be starttls or tls'),
        ("smtp_security = 'ssl'", "alerts.smtp_security"),
    ],
)
def test_alert_settings_validation(tmp_path, toml, message):
    from stockade.config.settings import SettingsError, load_settings

    path = tmp_path / "s.toml"
    path.write_text(f"[alerts]\n{toml}\n")
    with pytest.raises(SettingsError) as ei:
        load_settings(str(path))
    assert message in str(ei.value)


# ---- market-data watch ------------------------------------------------------------------------


def test_feed_watch_disconnect_alerts_escalate_and_recover():
    from stockade.actors.quote_streamer import FeedWatch

    w = FeedWatch(("AAPL", "MSFT"), down_after_s=30, stale_after_s=300, now=0.0)
    assert w.status(True, "connected", 1.0) == []  # first connect: nothing to report
    assert w.status(False, "disconnected: boom; retry in 1s", 10.0) == []
    assert w.check(39.9) == []
    ((level, key, text),) = w.check(40.0)
    assert (level, key) == ("WARNING", "market-data:disconnected") and "30s" in text and "boom" in text
    assert w.check(100.0) == []  # said once per level
    ((level, key, _),) = w.check(310.0)
    assert (level, key) == ("CRITICAL", "market-data:disconnected")
    ((level, key, text),) = w.status(True, "connected", 320.0)
    assert (level, key, text) == ("INFO", "market-data:reconnected", "market data reconnected after 310s down")
    assert w.status(False, "x", 330.0) == [] and w.status(True, "y", 335.0) == []  # a blip: no alerts at all


def test_feed_watch_never_connected_and_market_closed():
    from stockade.actors.quote_streamer import FeedWatch

    w = FeedWatch(("AAPL",), down_after_s=30, stale_after_s=300, now=0.0)
    w.set_market_open(False, 0.0)
    assert w.check(1000.0) == []  # closed: silence is normal
    w.set_market_open(True, 1000.0)
    ((level, key, text),) = w.check(1030.0)
    assert (level, key) == ("WARNING", "market-data:disconnected") and "not connected yet" in text


def test_feed_watch_stale_symbols():
    from stockade.actors.quote_streamer import FeedWatch

    w = FeedWatch(("AAPL", "MSFT", "NVDA"), down_after_s=30, stale_after_s=300, now=0.0)
    w.status(True, "subscribed", 0.0)
    w.quote("AAPL", 100.0)
    w.quote("MSFT", 250.0)
    assert w.check(299.0) == []
    ((level, key, text),) = w.check(300.0)  # NVDA: no quote since the start
    assert (level, key) == ("WARNING", "market-data:stale") and text.endswith(": NVDA")
    # Reconnects do not reset the quiet time: a socket that reconnects without data still alerts.
    w.status(False, "silent socket", 350.0)
    w.status(True, "subscribed", 351.0)
    ((_, key, text),) = w.check(400.0)
    assert key == "market-data:stale" and text.endswith(": AAPL")  # NVDA is not repeated
    w.quote("NVDA", 401.0)
    w.quote("AAPL", 401.0)
    ((level, key, text),) = w.check(402.0)
    assert (level, key, text) == ("INFO", "market-data:fresh", "quotes flowing again: AAPL, NVDA")
    ((_, key, text),) = w.check(550.0)
    assert text.endswith(": MSFT")


# ---- daily summary ----------------------------------------------------------------------------


def _ny_ns(y, mo, d, h, mi):
    import datetime as dt
    from zoneinfo import ZoneInfo

    return int(dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo("America/New_York")).timestamp()) * 10**9


def test_next_summary_time_skips_closed_days_and_follows_dst():
    from stockade.ops.daily_summary import next_summary_ns

    # Friday 2024-11-29 10:00: the same day at 16:15 (an early-close day still trades).
    assert next_summary_ns(_ny_ns(2024, 11, 29, 10, 0), "16:15") == _ny_ns(2024, 11, 29, 16, 15)
    # Friday after the time: Monday (weekend skipped).
    assert next_summary_ns(_ny_ns(2024, 11, 29, 16, 15), "16:15") == _ny_ns(2024, 12, 2, 16, 15)
    # Wednesday before Thanksgiving (2024-11-28, closed): Friday.
    assert next_summary_ns(_ny_ns(2024, 11, 27, 17, 0), "16:15") == _ny_ns(2024, 11, 29, 16, 15)
    # Across the DST change (2024-03-10): 16:15 local, so 20:15 UTC after, 21:15 before.
    before = next_summary_ns(_ny_ns(2024, 3, 8, 9, 0), "16:15")  # Friday, EST
    after = next_summary_ns(_ny_ns(2024, 3, 8, 17, 0), "16:15")  # Monday, EDT
    assert (before // 10**9) % 86400 == 21 * 3600 + 15 * 60 and (after // 10**9) % 86400 == 20 * 3600 + 15 * 60


def test_summary_gather_and_text(tmp_path):
    from stockade.codecs.records import (
        AlertRecord,
        EquitySnapshot,
        FillRecord,
        OrderRecord,
    )
    from stockade.ops import daily_summary
    from stockade.storage.store import Store

    now = _ny_ns(2024, 11, 26, 16, 15)
    today, yesterday = _ny_ns(2024, 11, 26, 9, 45), _ny_ns(2024, 11, 25, 15, 0)

    def order(coid, created, state="filled", parent=None):
        return OrderRecord(
            client_order_id=coid,
            intent_id=coid,
            symbol="AAPL",
            side="buy",
            qty=10,
            order_type="market",
            state=state,
            created_ns=created,
            updated_ns=created,
            parent_id=parent,
        )

    with Store.open(tmp_path / "d") as store:
        for o in (
            order("old", yesterday),
            order("a", today),
            order("b", today, "rejected"),
            order("a-stop", today, "accepted", parent="a"),
        ):
            store.put_order(o)
        store.fills.put(
            "f0",
            FillRecord(
                exec_id="f0",
                client_order_id="old",
                broker_order_id=None,
                symbol="AAPL",
                side="buy",
                qty=10,
                price=1.0,
                ts_ns=yesterday,
            ),
        )
        for i, q in enumerate((6, 4)):
            store.fills.put(
                f"f{i + 1}",
                FillRecord(
                    exec_id=f"f{i + 1}",
                    client_order_id="a",
                    broker_order_id=None,
                    symbol="AAPL",
                    side="buy",
                    qty=q,
                    price=190.0,
                    ts_ns=today + i,
                ),
            )
        store.equity.add(EquitySnapshot(ts_ns=today, equity=101_234.5, cash=0.0, last_equity=100_000.0))
        store.add_alert(AlertRecord(level="WARNING", key="order-rejected:AAPL", text="t", source="s", ts_ns=today))
        store.add_alert(AlertRecord(level="CRITICAL", key="kill", text="t", source="s", ts_ns=today + 1))
        s = daily_summary.gather(store, now)
    assert s == daily_summary.DaySummary(
        date="2024-11-26",
        equity=101_234.5,
        day_pl=1_234.5,
        orders=2,
        rejected=1,
        fills=2,
        filled_shares=10,
        alerts=2,
        alerts_by_level={"WARNING": 1, "CRITICAL": 1},
    )
    assert daily_summary.summary_text(s) == (
        "2024-11-26: equity $101,234.50, day P&L +$1,234.50 (+1.23%); orders 2 (1 rejected), fills 2 (10 shares); "
        "alerts 2 (CRITICAL 1, WARNING 1)"
    )
    empty = daily_summary.summarize(date="2024-11-26", equity=None, orders=0, rejected=0, fill_qtys=[], counts=None)
    assert daily_summary.summary_text(empty) == (
        "2024-11-26: equity unknown, day P&L unknown; orders 0 (0 rejected), fills 0 (0 shares); alerts 0"
    )
    loss = daily_summary.summarize(
        date="d",
        equity=EquitySnapshot(ts_ns=1, equity=95_000.0, cash=0.0, last_equity=100_000.0),
        orders=0,
        rejected=0,
        fill_qtys=[],
        counts=None,
    )
    assert "day P&L -$5,000.00 (-5.00%)" in daily_summary.summary_text(loss)


def test_smtp_subject_is_one_line(smtp_server):
    port = smtp_server.server_address[1]
    ch = SmtpChannel("127.0.0.1", port, "a@example.org", ["c@example.org"], timeout_s=5, security="none")
    ch.send(alert("CRITICAL", key="gap:AAPL\r\nBcc: evil@example.org"))
    (mail,) = smtp_server.mails
    msg = message_from_bytes(mail["data"])
    assert msg["Subject"] == "[stockade] CRITICAL gap:AAPL Bcc: evil@example.org" and msg["Bcc"] is None
    assert len(mail["rcpt"]) == 1
