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
from stockade.ops.alert_channels import (
    ChannelError,
    JsonlChannel,
    LogChannel,
    Redactor,
    SmtpChannel,
    WebhookChannel,
    build_channels,
)
from stockade.ops.alert_policy import AlertPolicy
from stockade.ops.settings import AlertsSettings

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
    assert SECRET not in Redactor.from_environment({"APCA_API_SECRET_KEY": SECRET, "APCA_API_KEY_ID": "PKID0000000"})(SECRET)


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
    ch = SmtpChannel("127.0.0.1", port, "stockade@example.org", ["ops@example.org", "oncall@example.org"],
                     timeout_s=5, redact=Redactor([SECRET]))
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
    ch = SmtpChannel("127.0.0.1", port, "a@b", ["c@d"], user="u", password="hunter2hunter2", timeout_s=5)
    with pytest.raises(ChannelError, match="refusing to send the password without TLS"):
        ch.send(alert("CRITICAL"))
    assert smtp_server.mails == []


def test_smtp_unreachable():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on that port now
    with pytest.raises(ChannelError, match=r"smtp 127.0.0.1:\d+: ConnectionRefusedError"):
        SmtpChannel("127.0.0.1", port, "a@b", ["c@d"], timeout_s=2).send(alert("CRITICAL"))


def test_build_channels(tmp_path):
    cfg = AlertsSettings(webhook_url="https://example.org/h", smtp_host="mail", smtp_from="a@b", smtp_to=("c@d",))
    chans = build_channels(cfg, tmp_path, env={"STOCKADE_WEBHOOK_URL": "https://hooks.slack.com/services/XYZSECRETXYZ"})
    assert [c.name for c in chans] == ["log", "jsonl", "webhook", "smtp"]
    webhook = chans[2]
    assert webhook._url.startswith("https://hooks.slack.com")  # the secret overrides settings
    assert webhook.min_level == "WARNING" and not webhook.accepts("INFO") and webhook.accepts("EMERGENCY")
    assert chans[3].min_level == "CRITICAL"
    assert [c.name for c in build_channels(AlertsSettings(jsonl=False), tmp_path, env={})] == ["log"]
