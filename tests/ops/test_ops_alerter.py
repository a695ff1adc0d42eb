"""The Alerter actor in a real supervision tree, with a real webhook receiver and SMTP server.

Checks the whole path of an alert (policy, local and remote channels,
history and counts in lmdb, the `alerts` report), that secrets from the
environment appear nowhere, and that a hanging webhook leaves the actor's
heartbeat healthy.
"""

import json
import logging
import threading
import time

import msgspec
import pytest
from alert_servers import Receiver, SmtpServer, Tls
from waiting import wait_for

from stockade.actors.alerter import Alerter
from stockade.actors.services import BrokerAccess, Services
from stockade.broker.rest import BrokerEndpoints
from stockade.codecs.messages import Alert
from stockade.codecs.records import EquitySnapshot
from stockade.config.paths import alerts_jsonl_path
from stockade.config.settings import AlertsSettings, Settings
from stockade.ops.alerts import report as alert_report
from stockade.ops.alerts.machinery import Alerting
from stockade.storage.store import Store
from stockade.supervisors.faults import FaultInjector
from stockade.supervisors.runtime import start_tree
from stockade.supervisors.spec import ChildSpec, RestartPolicy

PASSWORD = "Sm7pPassw0rd-FAKE-0451"
TOKEN = "T0KEN-FAKE-9f8e7d6c5b4a"
NS = 1_700_000_000_000_000_000


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("STOCKADE_SMTP_PASSWORD", PASSWORD)
    return monkeypatch


@pytest.fixture
def servers(tmp_path):
    tls = Tls(tmp_path)
    receiver = Receiver()
    smtp = SmtpServer(tls, "starttls", users={"alerts": PASSWORD})
    yield tls, receiver, smtp
    receiver.close()
    smtp.close()


class Running:
    def __init__(self, data_dir, alerts: AlertsSettings, actor=Alerter):
        self.data_dir = data_dir
        self.store = Store.open(data_dir)
        endpoints = BrokerEndpoints("http://127.0.0.1:9", "http://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9")
        broker = BrokerAccess("embedded", endpoints, "PKFAKEKEY", "FAKESECRET")
        self.svc = Services(
            settings=Settings(alerts=alerts),
            store=self.store,
            broker=broker,
            faults=FaultInjector(),
            alerting=Alerting(),
        )
        policy = RestartPolicy(heartbeat_interval_s=0.1, heartbeat_timeout_s=0.3, jitter_seed=1)
        self.tree = start_tree(
            policy,
            [ChildSpec(name="alerter", start=actor.start)],
            extras={"services": self.svc, "data_dir": str(data_dir)},
        )
        wait_for(lambda: self.actor()["alive"], 10, what="alerter started")

    def actor(self):
        return next(msgspec.to_builtins(a) for a in self.tree.snapshot() if a.name == "alerter")

    def tell(self, level, key, text, i=0):
        assert self.tree.router.tell("alerter", Alert(level, key, text, "test", NS + i), "test")

    def close(self):
        self.tree.stop(timeout=10)
        self.store.close()


def settings_for(tls, receiver, smtp, **over):
    base = dict(
        webhook_kind="slack",
        min_level_webhook="WARNING",
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_user="alerts",
        smtp_from="stockade@example.org",
        smtp_to=("ops@example.org",),
        min_level_smtp="CRITICAL",
        smtp_ca_file=str(tls.ca_file),
        timeout_s=5.0,
        retry_attempts=3,
        retry_initial_s=0.01,
        retry_max_s=0.05,
        daily_summary=False,
    )
    base.update(over)
    return AlertsSettings(**base)


def test_alert_path_history_counts_and_no_secret_anywhere(tmp_path, servers, env, caplog):
    tls, receiver, smtp = servers
    env.setenv("STOCKADE_WEBHOOK_URL", f"{receiver.base}/hooks/{TOKEN}")
    run = Running(tmp_path / "data", settings_for(tls, receiver, smtp))
    try:
        with caplog.at_level(logging.DEBUG):
            run.tell("INFO", "fill:c-1", "filled 10 AAPL @ 190.00", 1)
            run.tell("WARNING", "order-rejected:AAPL", f"rejected; client said key={PASSWORD}", 2)  # a careless sender
            run.tell("WARNING", "order-rejected:AAPL", "rejected again", 3)  # duplicate: stored, not sent
            run.tell("CRITICAL", "risk-limit:daily-loss", "daily loss limit hit: -2.1%", 4)
            run.tell("EMERGENCY", "kill", f"liquidating via {receiver.base}/hooks/{TOKEN}", 5)
            wait_for(lambda: len(smtp.messages) == 2 and len(receiver.posts) == 3, 15, what="deliveries")
            wait_for(
                lambda: run.svc.stats.get("alerts", {}).get("channels", {}).get("smtp", {}).get("sent") == 2,
                10,
                what="delivery stats",
            )

        # Webhook (slack payloads) got WARNING and up, minus the duplicate; e-mail got CRITICAL and up.
        assert [b["text"].split(":")[0] for b in receiver.bodies()] == [
            "[WARNING] order-rejected",
            "[CRITICAL] risk-limit",
            "[EMERGENCY] kill",
        ]
        assert receiver.posts[0][0] == f"/hooks/{TOKEN}"
        subjects = [env_.original_content.split(b"Subject: ")[1].split(b"\r\n")[0] for env_ in smtp.messages]
        assert subjects == [b"[stockade] CRITICAL risk-limit:daily-loss", b"[stockade] EMERGENCY kill"]
        assert set(smtp.logins) == {("alerts", True, True)}

        # History: every alert, secrets redacted; counts kept on write.
        history = run.store.alerts.latest(10)
        assert [a.key for a in history] == [
            "kill",
            "risk-limit:daily-loss",
            "order-rejected:AAPL",
            "order-rejected:AAPL",
            "fill:c-1",
        ]
        report = alert_report.report(run.store, run.svc.stats.get("alerts"), limit=10)
        counts = report["counts"]["all"]
        assert counts["total"] == 5
        assert counts["by_level"] == {"INFO": 1, "WARNING": 2, "CRITICAL": 1, "EMERGENCY": 1}
        assert counts["by_kind"] == {"order-rejected": 2, "fill": 1, "kill": 1, "risk-limit": 1}
        assert report["counts"]["today"]["total"] == 0  # the test's alerts are dated 2023-11-14 (UTC)
        assert run.store.alert_counts.get("2023-11-14").total == 5
        assert report["delivery"]["channels"]["webhook"]["sent"] == 3 and report["delivery"]["suppressed"] == 1
        crit = alert_report.report(run.store, None, min_level="CRITICAL")["alerts"]
        assert [a["key"] for a in crit] == ["kill", "risk-limit:daily-loss"]
        assert len(alert_report.report(run.store, None, kind="order-rejected")["alerts"]) == 2
        assert [a["key"] for a in alert_report.report(run.store, None, limit=1)["alerts"]] == ["kill"]

        jsonl = alerts_jsonl_path(run.data_dir).read_text()
        assert len(jsonl.splitlines()) == 4  # the duplicate is not delivered anywhere

        # The secrets: nowhere.
        places = {
            "logs": caplog.text,
            "jsonl": jsonl,
            "webhook": json.dumps(receiver.bodies()),
            "email": b"".join(e.original_content for e in smtp.messages).decode(),
            "history": json.dumps([msgspec.to_builtins(a) for a in history]),
            "report": json.dumps(report),
        }
        for where, text in places.items():
            assert PASSWORD not in text, where
            assert TOKEN not in text, where
        assert "[REDACTED]" in places["history"] and "[REDACTED]" in places["webhook"]
    finally:
        run.close()


def test_heartbeat_stays_healthy_while_the_webhook_hangs(tmp_path, servers, env):
    tls, receiver, smtp = servers
    receiver.hold = threading.Event()
    env.setenv("STOCKADE_WEBHOOK_URL", f"{receiver.base}/hooks/{TOKEN}")
    # The webhook hangs for its whole 1 s timeout, twice per alert: far past the 0.3 s heartbeat limit.
    run = Running(
        tmp_path / "data",
        settings_for(tls, receiver, smtp, timeout_s=1.0, retry_attempts=2, queue_max=4, dedup_window_s=0),
    )
    try:
        generation = run.actor()["generation"]
        for i in range(12):
            run.tell("CRITICAL", f"unprotected:S{i}", "position without a stop", i)

        def channel(name):
            return run.svc.stats.get("alerts", {}).get("channels", {}).get(name, {})

        # The actor stored everything at once, and e-mail went out, while the webhook hangs.
        wait_for(lambda: run.store.alerts.count() == 12, 5, what="history written")
        mail = wait_for(
            lambda: (s := channel("smtp")) and s["sent"] + s["dropped"] == 12 and s,
            15,
            what="e-mail done despite the hanging webhook",
        )
        assert mail["sent"] == len(smtp.messages) >= 5 and not receiver.posts
        hook = wait_for(
            lambda: (s := channel("webhook")) and s["failed"] >= 1 and s, 15, what="a webhook delivery timing out"
        )
        assert hook["dropped"] >= 7  # 12 alerts, 1 in flight, at most 4 queued: the rest dropped
        assert hook["sent"] == 0
        actor = run.actor()
        assert actor["alive"] and actor["restarts"] == 0 and actor["generation"] == generation
        assert run.tree.healthy(), run.tree.health_report()
    finally:
        receiver.hold.set()
        run.close()


class SummaryDue(Alerter):
    """The Alerter with its summary already due and checked often (the schedule itself is tested pure)."""

    def setup(self) -> None:
        super().setup()
        self.next_summary_ns = 1
        self.every(0.05, "daily-summary")


def test_daily_summary_is_built_off_the_actor_and_delivered(tmp_path, servers, env):
    tls, receiver, smtp = servers
    env.setenv("STOCKADE_WEBHOOK_URL", f"{receiver.base}/hooks/{TOKEN}")
    data = tmp_path / "data"
    with Store.open(data) as store:
        now = time.time_ns()
        store.equity.add(EquitySnapshot(ts_ns=now, equity=100_500.0, cash=0.0, last_equity=100_000.0))
    run = Running(
        data, settings_for(tls, receiver, smtp, daily_summary=True, min_level_webhook="INFO"), actor=SummaryDue
    )
    try:
        wait_for(lambda: receiver.posts, 15, what="the daily summary at the webhook")
        (body,) = receiver.bodies()
        assert body["text"].startswith("[INFO] daily-summary: ")
        assert "equity $100,500.00, day P&L +$500.00 (+0.50%); orders 0 (0 rejected), fills 0" in body["text"]
        (stored,) = run.store.alerts.latest(5)
        assert stored.key == "daily-summary" and stored.source == "alerter"
        assert run.actor()["restarts"] == 0 and not smtp.messages  # INFO is not e-mailed
    finally:
        run.close()
