"""Alert delivery over the real protocols: HTTP webhooks and SMTP (STARTTLS, implicit TLS, AUTH).

The receivers are real servers on loopback (tests/ops/alert_servers.py);
the SMTP client verifies the server certificate against a throwaway CA.
"""

import logging
import random
import ssl
import threading
from email import message_from_bytes

import pytest
from alert_servers import Receiver, SmtpServer, Tls
from waiting import wait_for

from stockade.codecs.messages import Alert
from stockade.ops.alerts.channels import (
    ChannelError,
    Redactor,
    SmtpChannel,
    WebhookChannel,
)
from stockade.ops.alerts.delivery import DeliveryWorker

PASSWORD = "Sm7pPassw0rd-FAKE-0451"
TOKEN = "T0KEN-FAKE-9f8e7d6c5b4a"


def alert(
    level="CRITICAL", key="risk-limit:daily-loss", text="daily loss limit hit: -2.1%", ts_ns=1_700_000_000_000_000_000
):
    return Alert(level=level, key=key, text=text, source="risk_guard", ts_ns=ts_ns)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def tls(tmp_path):
    return Tls(tmp_path)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def smtp(tls, mode="starttls"):
    return SmtpServer(tls, mode, users={"alerts": PASSWORD})


# ---- SMTP -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_smtp_tls_auth_delivers_and_verifies_the_server(tls, mode):
    server = smtp(tls, mode)
    try:
        ch = SmtpChannel(
            "127.0.0.1",
            server.port,
            "stockade@example.org",
            ["ops@example.org", "oncall@example.org"],
            user="alerts",
            password=PASSWORD,
            timeout_s=5,
            security=mode,
            ca_file=str(tls.ca_file),
            redact=Redactor([PASSWORD]),
        )
        ch.send(alert(text=f"daily loss limit hit; do not print {PASSWORD}"), suppressed=2)
        assert server.logins == [("alerts", True, True)]  # logged in, over TLS
        (env,) = server.messages
        assert env.mail_from == "stockade@example.org"
        assert env.rcpt_tos == ["ops@example.org", "oncall@example.org"]
        msg = message_from_bytes(env.original_content)
        assert msg["Subject"] == "[stockade] CRITICAL risk-limit:daily-loss"
        body = msg.get_payload(decode=True).decode()
        assert "daily loss limit hit; do not print [REDACTED]" in body and "(+2 similar suppressed)" in body
        assert PASSWORD not in env.original_content.decode()
    finally:
        server.close()


def test_smtp_refuses_an_untrusted_certificate(tls, tmp_path):
    server = smtp(tls)
    try:
        (tmp_path / "other").mkdir()
        other = Tls(tmp_path / "other")  # a different CA: the server's certificate must not verify
        ch = SmtpChannel(
            "127.0.0.1",
            server.port,
            "a@example.org",
            ["b@example.org"],
            user="alerts",
            password=PASSWORD,
            timeout_s=5,
            ca_file=str(other.ca_file),
        )
        with pytest.raises(ChannelError, match="SSLCertVerificationError") as ei:
            ch.send(alert())
        assert not ei.value.retryable
        assert server.logins == [] and server.messages == []  # the password never left
    finally:
        server.close()


def test_smtp_wrong_password_is_permanent_and_not_echoed(tls):
    server = smtp(tls)
    try:
        wrong = "Wr0ngPassw0rd-FAKE-1234"
        ch = SmtpChannel(
            "127.0.0.1",
            server.port,
            "a@example.org",
            ["b@example.org"],
            user="alerts",
            password=wrong,
            timeout_s=5,
            ca_file=str(tls.ca_file),
        )
        with pytest.raises(ChannelError, match="SMTPAuthenticationError: 535") as ei:
            ch.send(alert())
        assert not ei.value.retryable and wrong not in str(ei.value)
        # smtplib tries each mechanism the server offers (PLAIN, LOGIN): all refused, all over TLS.
        assert server.logins and set(server.logins) == {("alerts", False, True)} and server.messages == []
    finally:
        server.close()


def test_smtp_plain_server_gets_nothing_when_starttls_is_required(tls):
    server = SmtpServer(None, "plain", users={"alerts": PASSWORD})
    try:
        ch = SmtpChannel(
            "127.0.0.1",
            server.port,
            "a@example.org",
            ["b@example.org"],
            user="alerts",
            password=PASSWORD,
            timeout_s=5,
            ca_file=str(tls.ca_file),
        )
        with pytest.raises(ChannelError, match="SMTPNotSupportedError"):
            ch.send(alert())
        assert server.logins == [] and server.messages == []
    finally:
        server.close()


# ---- webhook payloads --------------------------------------------------------------------


def test_webhook_payloads_exact(receiver):
    url = f"{receiver.base}/hooks/{TOKEN}"
    red = Redactor([TOKEN])
    a = alert(level="WARNING", key="order-rejected:AAPL", text="rejected: insufficient buying power")
    WebhookChannel(url, "generic", redact=red).send(a, suppressed=3)
    WebhookChannel(url, "slack", redact=red).send(a)
    WebhookChannel(url, "discord", redact=red).send(a)
    WebhookChannel(url, "discord", redact=red).send(alert(text="é" * 3000))
    line = "[WARNING] order-rejected:AAPL: rejected: insufficient buying power (risk_guard)"
    generic, slack, discord, long_discord = receiver.bodies()
    assert generic == {
        "level": "WARNING",
        "key": "order-rejected:AAPL",
        "text": "rejected: insufficient buying power",
        "source": "risk_guard",
        "ts": "2023-11-14T22:13:20.000+00:00",
        "suppressed": 3,
        "summary": line + " (+3 similar suppressed)",
    }
    assert slack == {"text": line}
    assert discord == {"content": line}
    assert set(long_discord) == {"content"} and len(long_discord["content"]) == 2000
    assert long_discord["content"].endswith("…")
    path, headers, _ = receiver.posts[0]
    assert path == f"/hooks/{TOKEN}" and headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (403, False), (404, False), (408, True), (429, True), (500, True), (503, True)],
)
def test_webhook_status_classification(status, retryable):
    r = Receiver([status])
    try:
        with pytest.raises(ChannelError) as ei:
            WebhookChannel(f"{r.base}/hooks/{TOKEN}", "slack").send(alert())
        assert str(ei.value) == f"webhook (slack): HTTP {status}" and ei.value.retryable is retryable
    finally:
        r.close()


def test_webhook_timeout_is_bounded_and_hides_the_url():
    r = Receiver()
    r.hold = threading.Event()
    try:
        with pytest.raises(ChannelError) as ei:
            WebhookChannel(f"{r.base}/hooks/{TOKEN}", "generic", timeout_s=0.3).send(alert())
        assert ei.value.retryable and TOKEN not in str(ei.value)
    finally:
        r.close()


# ---- the delivery worker: retries, isolation, bounded queue -------------------------------


def test_retries_with_backoff_then_delivers(caplog):
    r = Receiver([503, 429, 500])
    try:
        worker = DeliveryWorker(
            WebhookChannel(f"{r.base}/h/{TOKEN}", "slack", redact=Redactor([TOKEN])),
            attempts=4,
            retry_initial_s=0.01,
            retry_max_s=0.05,
            rng=random.Random(7),
        ).start()
        with caplog.at_level(logging.WARNING, logger="stockade.ops.alerts.delivery"):
            worker.submit(alert())
            wait_for(lambda: worker.stats()["sent"] == 1, 10, what="delivery after 3 failures")
        assert worker.stats() == {"sent": 1, "failed": 0, "dropped": 0, "retries": 3, "queued": 0}
        assert len(r.posts) == 4
        assert [rec.getMessage().split(" in ")[0] for rec in caplog.records] == [
            "alerts: webhook failed (webhook (slack): HTTP 503); retry 1/3",
            "alerts: webhook failed (webhook (slack): HTTP 429); retry 2/3",
            "alerts: webhook failed (webhook (slack): HTTP 500); retry 3/3",
        ]
        worker.stop(2)
    finally:
        r.close()


def test_retries_are_bounded_and_permanent_errors_not_retried(caplog):
    r = Receiver([500] * 10)
    try:
        worker = DeliveryWorker(
            WebhookChannel(f"{r.base}/h/{TOKEN}", "slack"),
            attempts=3,
            retry_initial_s=0.01,
            retry_max_s=0.02,
            rng=random.Random(1),
        ).start()
        worker.submit(alert())
        wait_for(lambda: worker.stats()["failed"] == 1, 10, what="giving up")
        assert len(r.posts) == 3 and worker.stats()["retries"] == 2
        r.statuses = [404]
        worker.submit(alert())
        wait_for(lambda: worker.stats()["failed"] == 2, 10, what="permanent failure")
        assert len(r.posts) == 4  # one try only
        assert "not delivered by webhook after 1 attempt(s): webhook (slack): HTTP 404" in caplog.text
        assert TOKEN not in caplog.text
        worker.stop(2)
    finally:
        r.close()


def test_backoff_delays_grow_and_are_jittered():
    delays = []

    class Recording(random.Random):
        def uniform(self, a, b):
            delays.append(b)
            return super().uniform(a, b)

    worker = DeliveryWorker(
        WebhookChannel("http://127.0.0.1:9/h", "slack"),
        attempts=5,
        retry_initial_s=0.5,
        retry_max_s=3.0,
        rng=Recording(3),
    )
    b = worker._backoff
    draws = [b.next_delay() for _ in range(5)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]  # ceilings double up to the cap
    assert all(0 <= d <= c for d, c in zip(draws, delays, strict=True)) and len(set(draws)) == 5


def test_queue_is_bounded_drops_oldest_and_submit_never_blocks(caplog):
    r = Receiver()
    r.hold = threading.Event()
    try:
        worker = DeliveryWorker(WebhookChannel(f"{r.base}/h", "generic", timeout_s=10), attempts=1, queue_max=3).start()
        worker.submit(alert(key="k:0"))
        assert r.arrived.wait(5)  # k:0 is in flight, held by the receiver
        with caplog.at_level(logging.ERROR, logger="stockade.ops.alerts.delivery"):
            for i in range(1, 7):
                worker.submit(alert(key=f"k:{i}"))  # returns at once although the channel hangs
        assert worker.stats()["dropped"] == 3 and worker.stats()["queued"] == 3
        # One log line for the burst (then at most one per DROP_LOG_EVERY_S), not one per drop.
        assert [m for m in caplog.messages if "queue full" in m] == [
            "alerts: webhook queue full (3): dropped CRITICAL k:1 (1 dropped so far)"
        ]
        r.hold.set()
        wait_for(lambda: worker.stats()["sent"] == 4, 10, what="the rest delivered")
        assert [b["key"] for b in r.bodies()] == ["k:0", "k:4", "k:5", "k:6"]
        worker.stop(2)
    finally:
        r.close()


def test_a_hanging_channel_does_not_delay_another(tls):
    hanging = Receiver()
    hanging.hold = threading.Event()
    server = smtp(tls)
    try:
        hook = DeliveryWorker(WebhookChannel(f"{hanging.base}/h", "slack", timeout_s=10), attempts=1).start()
        mail = DeliveryWorker(
            SmtpChannel(
                "127.0.0.1",
                server.port,
                "a@example.org",
                ["b@example.org"],
                user="alerts",
                password=PASSWORD,
                timeout_s=5,
                ca_file=str(tls.ca_file),
            ),
            attempts=1,
        ).start()
        for w in (hook, mail):
            w.submit(alert())
        wait_for(lambda: len(server.messages) == 1, 10, what="mail while the webhook hangs")
        assert hook.stats()["sent"] == 0 and not hanging.posts  # still hanging
        hanging.hold.set()
        wait_for(lambda: hook.stats()["sent"] == 1, 10, what="webhook after release")
        for w in (hook, mail):
            w.stop(2)
    finally:
        hanging.close()
        server.close()


def test_stop_sends_what_is_queued_without_retry_waits():
    r = Receiver([503])
    try:
        worker = DeliveryWorker(
            WebhookChannel(f"{r.base}/h", "slack"), attempts=5, retry_initial_s=30, retry_max_s=60, rng=random.Random(2)
        ).start()
        worker.submit(alert(level="EMERGENCY", key="kill"))
        wait_for(lambda: worker.stats()["retries"] == 1, 10, what="first failure")
        worker.stop(5)  # would wait up to 30 s for the retry without the hurry
        assert not worker._thread.is_alive()
        assert worker.stats()["sent"] == 1 and len(r.posts) == 2
    finally:
        r.close()


def test_ssl_context_is_verifying_by_default():
    ch = SmtpChannel("127.0.0.1", 25, "a@b", ["c@d"])
    ctx = ch._context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
