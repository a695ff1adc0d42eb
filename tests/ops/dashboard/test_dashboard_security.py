"""The dashboard's security, against the real server on a free loopback port:
authentication, CSRF, read-only mode, bind rules, the token file, secrets kept
out of every answer, request bounds."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time

import pytest

from stockade.broker.rest import register_secret
from stockade.codecs.records import AlertRecord
from stockade.config.settings import DashboardSettings, SettingsError, load_settings
from stockade.ops.dashboard import DashboardError, DashboardServer, events, tokens

READS = (
    "/",
    "/api/v1/overview",
    "/api/v1/status",
    "/api/v1/tree",
    "/api/v1/decisions",
    "/api/v1/pending",
    "/api/v1/alerts",
    "/api/v1/equity",
    "/api/v1/report",
    "/api/v1/orders",
    "/api/v1/audit",
    "/api/v1/session",
    "/metrics",
)


def test_no_token_is_401_everywhere(make_dash):
    dash = make_dash()
    for path in READS:
        assert dash.get(path, auth=False).status == 401, path
        assert dash.get(path, headers={"Authorization": "Bearer " + "x" * 43}).status == 401, path
        assert dash.get(path).status == 200, path
    assert dash.get("/login?token=wrong", auth=False).status == 401
    assert dash.post("/api/v1/control/halt", {"reason": "x"}, auth=False).status == 401
    assert dash.svc.trading_state().state == "ACTIVE"
    # The assets carry no data: they load without a session (the login page needs its styles).
    assert dash.get("/static/app.js", auth=False).status == 200


def test_login_url_sets_a_session_cookie_not_the_token(make_dash):
    dash = make_dash()
    r = dash.get(f"/login?token={dash.token}", auth=False)
    assert r.status == 303 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert dash.token not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert dash.get("/api/v1/overview", headers={"Cookie": cookie.split(";")[0]}).status == 200


def test_csrf_is_checked_on_cookie_posts(make_dash):
    dash = make_dash(control=True)
    cookie = dash.login_cookie()
    csrf = dash.get("/api/v1/session").json()["csrf"]
    assert csrf != dash.token and dash.token not in csrf
    headers = {"Cookie": cookie}
    assert dash.post("/api/v1/control/halt", {"reason": "a"}, headers=headers).status == 403
    assert (
        dash.post("/api/v1/control/halt", {"reason": "b"}, headers={**headers, "X-CSRF-Token": "0" * 64}).status == 403
    )
    assert (
        dash.post(
            "/api/v1/control/halt",
            {"reason": "c"},
            headers={**headers, "X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        ).status
        == 403
    )
    assert dash.svc.trading_state().state == "ACTIVE"
    ok = dash.post(
        "/api/v1/control/halt",
        {"reason": "d"},
        headers={**headers, "X-CSRF-Token": csrf, "Origin": f"http://127.0.0.1:{dash.port}"},
    )
    assert ok.status == 200 and ok.json()["ok"]
    assert dash.svc.trading_state().state == "HALTED"


def test_control_goes_through_the_audited_control_path(make_dash):
    dash = make_dash(control=True)
    assert dash.post("/api/v1/control/reduce", {"reason": "audit me"}).json()["ok"]
    assert dash.svc.trading_state().state == "REDUCING"
    refused = dash.post("/api/v1/control/approve", {})  # the control handler's own refusal, audited too
    assert refused.status == 409 and "missing argument 'id'" in refused.json()["error"]
    records = dash.store.audit.latest(10)
    assert [(r.cmd, r.ok, r.via) for r in reversed(records)] == [
        ("reduce", True, "dashboard 127.0.0.1"),
        ("approve", False, "dashboard 127.0.0.1"),
    ]
    assert dash.get("/api/v1/audit").json()[0]["cmd"] == "approve"
    # The kill switch needs its confirmation, in the API as in the page.
    r = dash.post("/api/v1/control/kill", {"reason": "no confirm"})
    assert r.status == 400 and "confirm" in r.json()["error"]
    assert dash.post("/api/v1/control/crash", {"name": "root"}).status == 404  # not a dashboard action


def test_read_only_mode_refuses_control(make_dash):
    dash = make_dash(control=False)
    for cmd, body in (
        ("halt", {}),
        ("reduce", {}),
        ("resume", {}),
        ("kill", {"confirm": "kill"}),
        ("approve", {"id": "x"}),
        ("reject", {"id": "x"}),
    ):
        r = dash.post(f"/api/v1/control/{cmd}", body)
        assert r.status == 403 and "read-only" in r.json()["error"], cmd
    assert dash.svc.trading_state().state == "ACTIVE"
    assert dash.audit == []
    assert dash.get("/api/v1/session").json()["control"] is False


def _settings_file(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_non_loopback_bind_needs_tls_or_a_proxy_acknowledgement(tmp_path, make_dash):
    with pytest.raises(SettingsError, match=r"dashboard.host = \"0.0.0.0\": is not loopback"):
        load_settings(_settings_file(tmp_path, '[dashboard]\nhost = "0.0.0.0"\n'))
    assert load_settings(_settings_file(tmp_path, '[dashboard]\nhost = "0.0.0.0"\nbehind_proxy = true\n'))
    with pytest.raises(SettingsError, match="dashboard.tls_cert"):
        load_settings(
            _settings_file(
                tmp_path, '[dashboard]\nhost = "0.0.0.0"\ntls_cert = "/nonexistent.pem"\ntls_key = "/nonexistent.key"\n'
            )
        )
    # A section built by hand refuses too (it checks itself), so no server is ever given one.
    with pytest.raises(SettingsError, match=r"dashboard.host = \"0.0.0.0\": is not loopback"):
        DashboardSettings(host="0.0.0.0", port=0)


def test_token_file_is_0600_and_a_readable_one_is_refused(make_dash):
    dash = make_dash()
    path = dash.data / tokens.TOKEN_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().strip() == dash.token and len(dash.token) >= tokens.MIN_TOKEN_CHARS
    # The same token at the next start (an open tab keeps its session).
    assert tokens.load_or_create(path)[0] == dash.token
    os.chmod(path, 0o644)
    with pytest.raises(tokens.TokenError, match="mode 0644"):
        tokens.load_or_create(path)


def test_token_from_the_environment_or_a_credential(tmp_path, monkeypatch):
    monkeypatch.setenv(tokens.TOKEN_NAME, "t" * 40)
    assert tokens.load_or_create(tmp_path / "x.token") == ("t" * 40, tokens.TOKEN_NAME)
    assert not (tmp_path / "x.token").exists()
    monkeypatch.delenv(tokens.TOKEN_NAME)
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / tokens.TOKEN_NAME).write_text("c" * 30 + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert tokens.load_or_create(tmp_path / "x.token")[0] == "c" * 30
    (tmp_path / "creds" / tokens.TOKEN_NAME).write_text("short")
    with pytest.raises(tokens.TokenError, match="at least"):
        tokens.load_or_create(tmp_path / "x.token")


def test_no_secret_in_any_answer(make_dash):
    dash = make_dash(control=True)
    api_key, smtp_password = "PKSECRETKEYID123456", "smtp-pass-word-42-xyz"
    register_secret(api_key, smtp_password, dash.token)
    now = time.time_ns()
    dash.store.add_alert(
        AlertRecord(
            level="WARNING",
            key="order-rejected:AAPL",
            source="test",
            ts_ns=now,
            text=f"login failed with {api_key} / {smtp_password}",
        )
    )
    dash.svc.stats["alerts"] = {"smtp_password": smtp_password}
    bodies = [dash.get(p).body for p in READS]
    bodies.append(dash.post("/api/v1/control/halt", {"reason": f"pasted {smtp_password}"}).body)
    bodies.append(dash.get("/api/v1/overview").body)
    for body in bodies:
        for secret in (api_key, smtp_password, dash.token, dash.svc.broker.secret):
            assert secret.encode() not in body
    assert b"login failed with ***" in dash.get("/api/v1/alerts").body


def test_answers_are_json_or_text_with_strict_headers(make_dash):
    dash = make_dash()
    r = dash.get("/api/v1/overview")
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["Cache-Control"] == "no-store"
    page = dash.get("/")
    assert page.headers["Content-Type"].startswith("text/html")
    assert b"<script>" not in page.body  # all script is in the shipped file (CSP: 'self' only)


def test_markup_in_stored_strings_is_data_not_html(make_dash):
    dash = make_dash(control=True)
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    assert dash.post("/api/v1/control/halt", {"reason": hostile}).json()["ok"]
    overview = dash.get("/api/v1/overview")
    assert overview.json()["trading_state_reason"] == hostile  # kept verbatim, as JSON data
    assert overview.headers["Content-Type"].startswith("application/json")
    # The page writes every value with textContent, never innerHTML (the browser test checks the result).
    js = dash.get("/static/app.js").body.decode()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js


def test_huge_bodies_are_refused_before_reading(make_dash):
    dash = make_dash(control=True, max_body_bytes=2048)
    big = json.dumps({"reason": "x" * 100_000}).encode()
    r = dash.request("POST", "/api/v1/control/halt", body=big, headers={"Content-Type": "application/json"})
    assert r.status == 413
    # Chunked (no length to check first): refused too.
    with socket.create_connection(("127.0.0.1", dash.port), timeout=10) as s:
        s.sendall(
            (
                f"POST /api/v1/control/halt HTTP/1.1\r\nHost: 127.0.0.1:{dash.port}\r\n"
                f"Authorization: Bearer {dash.token}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        assert s.recv(100).startswith(b"HTTP/1.1 413")
    assert dash.svc.trading_state().state == "ACTIVE"


def test_foreign_host_header_is_refused(make_dash):
    dash = make_dash()
    r = dash.get("/api/v1/overview", headers={"Host": "attacker.example:80", "Authorization": f"Bearer {dash.token}"})
    assert r.status == 421
    assert (
        dash.get(
            "/api/v1/overview", headers={"Host": f"localhost:{dash.port}", "Authorization": f"Bearer {dash.token}"}
        ).status
        == 200
    )


def test_request_flood_gets_429_then_service_resumes(make_dash):
    dash = make_dash(requests_per_s=5.0)
    codes = [dash.get("/api/v1/tree").status for _ in range(30)]
    assert 429 in codes and codes[0] == 200
    deadline = time.monotonic() + 30
    while dash.get("/api/v1/tree").status != 200:
        assert time.monotonic() < deadline, "never answered again after the flood"
        time.sleep(0.2)  # the bucket refills with time: waiting is the point here


def _open_stream(dash) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", dash.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(
        (
            f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{dash.port}\r\nAuthorization: Bearer {dash.token}\r\n\r\n"
        ).encode()
    )
    return s


def test_event_streams_are_capped_and_a_never_read_one_is_dropped(make_dash, monkeypatch):
    monkeypatch.setattr(events, "WRITE_TIMEOUT_S", 1.0)
    dash = make_dash(max_event_streams=2, update_interval_s=0.05)
    # Make each update big (the reason is in every update), so an unread socket fills quickly.
    dash.svc.set_trading_state("ACTIVE", "r" * 300_000, "test")
    streams = [_open_stream(dash), _open_stream(dash)]
    live = dash.server.api.live
    deadline = time.monotonic() + 30
    while live.streams < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert dash.get("/api/v1/events").status == 503  # the cap
    deadline = time.monotonic() + 60
    while live.dropped < 2:  # neither socket is read: both are dropped, nothing piles up
        assert time.monotonic() < deadline, f"streams not dropped (streams={live.streams}, dropped={live.dropped})"
        time.sleep(0.05)
    assert live.streams == 0
    for s in streams:
        s.close()
    assert dash.get("/api/v1/tree").status == 200


@pytest.mark.parametrize(
    "text, key",
    [
        ("[dashboard]\nport = 70000\n", "dashboard.port = 70000"),
        ('[dashboard]\nhost = ""\n', 'dashboard.host = ""'),
        ('[dashboard]\ntls_cert = "/etc/hostname"\n', "dashboard.tls_key"),
        ("[dashboard]\nmax_body_bytes = 10\n", "dashboard.max_body_bytes = 10"),
        ("[dashboard]\nrequests_per_s = 0\n", "dashboard.requests_per_s = 0"),
        ("[dashboard]\ncontrol = 1\n", "dashboard.control"),
    ],
)
def test_bad_dashboard_settings_name_key_and_value(tmp_path, text, key):
    with pytest.raises(SettingsError, match=re.escape(key)):
        load_settings(_settings_file(tmp_path, text))


def test_status_is_the_control_sockets_status(make_dash):
    dash = make_dash()
    st = dash.get("/api/v1/status").json()
    assert st["trading_state"] == "ACTIVE" and st["actors"][0]["name"] == "root" and "orders_placed" in st


def test_kill_gets_through_a_request_flood(make_dash):
    # Anyone on the machine can flood the port (no token needed to be refused):
    # the budget then refuses reads, but never the operator's kill switch.
    dash = make_dash(control=True, requests_per_s=0.01)  # one token, the next in 100 s
    flood = [dash.get("/api/v1/tree", auth=False).status for _ in range(10)]
    assert flood[0] == 401 and set(flood[1:]) == {429}
    assert dash.get("/api/v1/tree").status == 429  # spent for the operator too
    r = dash.post("/api/v1/control/kill", {"confirm": "kill", "reason": "flooded"})
    assert r.status != 429 and r.status != 503, r
    assert dash.svc.trading_state().state == "HALTED"
    assert [(a.cmd, a.via) for a in dash.audit] == [("kill", "dashboard 127.0.0.1")]
    # Still authenticated: the exemption is from the load limits only.
    assert dash.post("/api/v1/control/kill", {"confirm": "kill"}, auth=False).status == 401


def test_kill_gets_through_when_every_request_slot_is_taken(make_dash):
    dash = make_dash(control=True, max_concurrent_requests=1)
    dash.server._guard.in_hand = 1  # a slow request holds the only slot
    assert dash.get("/api/v1/tree").status == 503
    r = dash.post("/api/v1/control/kill", {"confirm": "kill", "reason": "busy"})
    assert r.status != 503, r
    assert dash.svc.trading_state().state == "HALTED"


def test_a_token_write_that_fails_leaves_no_empty_token_behind(tmp_path, monkeypatch):
    # A full disk (or a crash) between creating the file and writing the token
    # left an empty token file that every later start refused.
    path = tmp_path / tokens.TOKEN_FILE
    real_write = os.write

    def full_disk(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(tokens.TokenError, match="No space left"):  # a clean refusal: the daemon trades on
        tokens.load_or_create(path)
    monkeypatch.setattr(os, "write", real_write)
    assert list(tmp_path.iterdir()) == []
    token, where = tokens.load_or_create(path)
    assert where == str(path) and len(token) >= tokens.MIN_TOKEN_CHARS
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.read_text().strip() == token
    assert tokens.load_or_create(path)[0] == token
    assert list(tmp_path.iterdir()) == [path]


def test_public_origin_passes_behind_a_host_rewriting_proxy(make_dash):
    """A proxy serves the page from https://dash.example.com and sends Host: 127.0.0.1:port."""
    dash = make_dash(control=True, public_origin="https://Dash.Example.com:443/")
    headers = {"Cookie": dash.login_cookie()}
    headers["X-CSRF-Token"] = dash.get("/api/v1/session", headers=headers).json()["csrf"]
    for foreign in ("https://evil.example", "http://dash.example.com", "https://dash.example.com:8443"):
        refused = dash.post("/api/v1/control/halt", {"reason": "x"}, headers={**headers, "Origin": foreign})
        assert refused.status == 403, foreign
    assert dash.svc.trading_state().state == "ACTIVE"
    ok = dash.post(
        "/api/v1/control/halt", {"reason": "proxied"}, headers={**headers, "Origin": "https://dash.example.com"}
    )
    assert ok.status == 200 and ok.json()["ok"]
    assert dash.svc.trading_state().state == "HALTED"


@pytest.mark.parametrize(
    "value",
    ["dash.example.com", "ftp://dash.example.com", "https://dash.example.com/app", "https://x:99999", "https://"],
)
def test_public_origin_must_be_an_origin(tmp_path, value):
    with pytest.raises(SettingsError, match=r"dashboard.public_origin = .*must be an origin"):
        load_settings(_settings_file(tmp_path, f'[dashboard]\npublic_origin = "{value}"\n'))
    assert load_settings(_settings_file(tmp_path, '[dashboard]\npublic_origin = "https://dash.example.com"\n'))


def test_a_failed_start_closes_its_event_loop(make_dash):
    dash = make_dash()
    taken = DashboardServer(
        DashboardSettings(port=dash.port), dash.svc, dash.tree, dash.control, dash.data
    )  # the port the first one holds
    with pytest.raises(DashboardError, match="cannot serve"):
        taken.start()
    taken._thread.join(10)
    assert not taken._thread.is_alive()
    assert taken._loop is not None and taken._loop.is_closed()
