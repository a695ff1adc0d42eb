import json
import os
import socket
import stat
import threading

import pytest
from waiting import wait_for

from stockade.ops import ctl
from stockade.ops.control import CommandError, ControlError, ControlServer, arg_float, arg_int, arg_str


def talk(path, payload: bytes, timeout=5.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        try:
            s.sendall(payload)
        except BrokenPipeError:
            pass  # refused connections are answered and closed at once
        return json.loads(read_line(s))


def read_line(s) -> bytes:
    buf = b""
    while b"\n" not in buf:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0]


def req(cmd, **args) -> bytes:
    return json.dumps({"cmd": cmd, "args": args}).encode() + b"\n"


@pytest.fixture
def server(short_dir):
    srv = ControlServer(short_dir / "run" / "control.sock", max_request_bytes=1024, read_timeout_s=5.0)
    srv.register("echo", lambda args: args, "return the args", usage="echo [key=value...]")

    def boom(args):
        raise RuntimeError("handler blew up")

    def refuse(args):
        raise CommandError("not now: " + arg_str(args, "why"))

    srv.register("boom", boom, "always raises")
    srv.register("refuse", refuse, "refuses")
    srv.register("unjsonable", lambda args: object(), "returns junk")
    srv.register("crash", lambda a: {**a, "name": arg_str(a, "name")}, "crash NAME")
    srv.register("hang", lambda a: {"name": arg_str(a, "name"), "seconds": arg_float(a, "seconds", minimum=0)}, "hang")
    srv.register("alerts", lambda a: {"n": arg_int(a, "n", 20, minimum=1)}, "alerts")
    srv.start()
    yield srv
    assert srv.stop(timeout=5.0)


def test_socket_mode_and_dir(server):
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.path.parent).st_mode) == 0o700
    assert [p.name for p in server.path.parent.iterdir() if p.name.startswith(".c")] == []  # bind dir removed


def test_ok_and_error_replies_and_server_survives(server):
    p = server.path
    assert talk(p, req("echo", a=1)) == {"ok": True, "result": {"a": 1}}
    r = talk(p, req("boom"))
    assert r == {"ok": False, "error": "boom failed: RuntimeError: handler blew up"}
    assert talk(p, req("refuse", why="halted")) == {"ok": False, "error": "not now: halted"}
    assert talk(p, req("refuse")) == {"ok": False, "error": "missing argument 'why'"}
    assert talk(p, b"{not json\n")["error"].startswith("malformed JSON")
    assert talk(p, b"[1, 2]\n")["error"].startswith("bad request")
    assert talk(p, b'{"args": {}}\n')["error"].startswith("bad request")
    assert talk(p, b'{"cmd": "echo", "args": [1]}\n')["error"].startswith("bad request")
    assert talk(p, req("nope")) == {"ok": False, "error": "unknown command 'nope' (try: help)"}
    assert talk(p, req("unjsonable"))["error"].startswith("reply not JSON-serialisable")
    assert talk(p, req("hang", name="x", seconds="abc")) == {
        "ok": False,
        "error": "argument 'seconds' must be a number, got 'abc'",
    }
    assert talk(p, req("alerts")) == {"ok": True, "result": {"n": 20}}
    assert talk(p, b"\xff\xfe\n")["ok"] is False
    assert talk(p, req("echo", still="alive")) == {"ok": True, "result": {"still": "alive"}}


def test_oversize_request_gets_error_and_server_carries_on(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(server.path))
        s.sendall(b'{"cmd": "echo", "args": {"x": "' + b"a" * 4000 + b'"}}\n')
        reply = json.loads(read_line(s))
        assert reply == {"ok": False, "error": "request too large (max 1024 bytes)"}
        try:
            assert s.recv(10) == b""  # closed after the error
        except ConnectionResetError:
            pass  # closed with part of our oversize request unread: also closed
    assert talk(server.path, req("echo"))["ok"] is True


def test_several_requests_on_one_connection_and_half_close(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(server.path))
        s.sendall(req("echo", n=1) + b"\n" + req("echo", n=2))
        f = s.makefile("rb")
        assert json.loads(f.readline())["result"] == {"n": 1}
        assert json.loads(f.readline())["result"] == {"n": 2}
        s.sendall(json.dumps({"cmd": "echo", "args": {"n": 3}}).encode())  # no newline
        s.shutdown(socket.SHUT_WR)
        assert json.loads(f.readline())["result"] == {"n": 3}


def test_help_lists_commands(server):
    r = talk(server.path, req("help"))
    assert r["ok"]
    assert r["result"]["echo"] == "echo [key=value...]: return the args"
    assert set(r["result"]) >= {"help", "echo", "boom", "crash"}


def test_second_daemon_refused_and_socket_kept(server):
    other = ControlServer(server.path)
    with pytest.raises(ControlError, match="another stockade daemon is running"):
        other.start()
    assert talk(server.path, req("echo"))["ok"]  # the first one still serves


def test_live_listener_without_lock_is_not_replaced(short_dir):
    path = short_dir / "control.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    try:
        with pytest.raises(ControlError, match="answers on"):
            ControlServer(path).start()
        assert path.exists()
    finally:
        live.close()


def test_stale_socket_removed(short_dir):
    path = short_dir / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: a crashed daemon's leftover
    srv = ControlServer(path)
    srv.start()
    try:
        assert talk(path, req("help"))["ok"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        assert srv.stop()
    assert not path.exists()


def test_non_socket_file_is_not_removed(short_dir):
    path = short_dir / "control.sock"
    path.write_text("precious")
    with pytest.raises(ControlError, match="not a socket"):
        ControlServer(path).start()
    assert path.read_text() == "precious"


def test_connection_limit_and_idle_timeout(short_dir):
    srv = ControlServer(short_dir / "c.sock", max_connections=1, read_timeout_s=0.3)
    srv.start()
    try:
        first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        first.settimeout(5)
        first.connect(str(srv.path))
        first.sendall(req("help"))
        assert json.loads(read_line(first))["ok"]  # the first holds the only slot
        busy = talk(srv.path, req("help"))
        assert busy == {"ok": False, "error": "busy: too many control connections"}
        assert first.recv(10) == b""  # idle past read_timeout_s: closed by the server
        first.close()
        assert wait_for(lambda: talk(srv.path, req("help"))["ok"], timeout=5, what="slot freed")
    finally:
        assert srv.stop()


def test_peer_uid_checked(short_dir):
    srv = ControlServer(short_dir / "c.sock", allowed_uids={os.geteuid() + 12345})
    srv.start()
    try:
        assert talk(srv.path, req("help")) == {"ok": False, "error": "permission denied"}
        code = ctl.main(["status", "--socket", str(srv.path)])
        assert code == 1
    finally:
        assert srv.stop()


def test_stop_with_idle_client_connected(short_dir):
    srv = ControlServer(short_dir / "c.sock", read_timeout_s=60)
    srv.start()
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(str(srv.path))
    c.sendall(req("help"))
    read_line(c)
    assert srv.stop(timeout=5)
    assert not srv.path.exists()
    c.close()
    srv.start()  # the lock was released: restartable
    assert srv.stop()


def test_handler_can_be_slow_without_blocking_others(short_dir):
    gate = threading.Event()
    srv = ControlServer(short_dir / "c.sock")
    srv.register("slow", lambda a: gate.wait(10), "waits")
    srv.start()
    try:
        results = []
        t = threading.Thread(target=lambda: results.append(talk(srv.path, req("slow"))))
        t.start()
        assert talk(srv.path, req("help"))["ok"]
        gate.set()
        t.join(10)
        assert results == [{"ok": True, "result": True}]
    finally:
        assert srv.stop()


# ---- the ctl client -------------------------------------------------------------------


def run_ctl(capsys, *argv):
    code = ctl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ctl_ok_and_error_exit_codes(server, capsys):
    code, out, err = run_ctl(capsys, "echo", "a=1", "b=x", "c=true", "--socket", str(server.path))
    assert code == 0
    assert json.loads(out) == {"ok": True, "result": {"a": 1, "b": "x", "c": True}}
    code, out, err = run_ctl(capsys, "boom", "--socket", str(server.path))
    assert code == 1
    assert json.loads(out)["ok"] is False
    assert "handler blew up" in err
    code, out, _ = run_ctl(capsys, "nope", "--socket", str(server.path))
    assert code == 1 and json.loads(out)["error"].startswith("unknown command")


def test_ctl_positional_args(server, capsys):
    p = str(server.path)
    assert json.loads(run_ctl(capsys, "crash", "Analyzer-SPY", "--socket", p)[1])["result"] == {"name": "Analyzer-SPY"}
    assert json.loads(run_ctl(capsys, "hang", "Voter", "2.5", "--socket", p)[1])["result"] == {
        "name": "Voter",
        "seconds": 2.5,
    }
    assert json.loads(run_ctl(capsys, "alerts", "5", "--socket", p)[1])["result"] == {"n": 5}
    assert ctl.build_args("reject", ["p-12", "too", "risky"]) == {"id": "p-12", "reason": "too risky"}
    assert ctl.build_args("approve", ["12"]) == {"id": "12"}
    assert ctl.build_args("kill", ["fat", "finger"]) == {"reason": "fat finger"}
    assert ctl.build_args("status", []) == {}


def test_ctl_crash_options_become_args(server, capsys):
    p = str(server.path)
    assert json.loads(run_ctl(capsys, "crash", "order_manager", "--times", "4", "--socket", p)[1])["result"] == {
        "name": "order_manager",
        "times": 4,
    }
    assert json.loads(run_ctl(capsys, "crash", "--on-next-message", "reconciler", "--socket", p)[1])["result"] == {
        "name": "reconciler",
        "on_next_message": True,
    }
    for argv in (
        ("status", "--times", "2"),
        ("hang", "x", "1", "--on-next-message"),
        ("crash", "x", "--times", "0"),
        ("crash", "x", "--times", "3", "--on-next-message"),
    ):
        code, _, err = run_ctl(capsys, *argv, "--socket", p)
        assert code == 2 and ("--times" in err or "--on-next-message" in err), (argv, err)


def test_ctl_usage_errors(server, capsys):
    p = str(server.path)
    assert run_ctl(capsys, "crash", "--socket", p)[0] == 2
    assert run_ctl(capsys, "hang", "x", "--socket", p)[0] == 2
    assert run_ctl(capsys, "hang", "x", "soon", "--socket", p)[0] == 2
    assert run_ctl(capsys, "status", "extra", "--socket", p)[0] == 2
    assert run_ctl(capsys, "alerts", "many", "--socket", p)[0] == 2
    assert run_ctl(capsys)[0] == 2
    assert run_ctl(capsys, "status", "--timeout", "0", "--socket", p)[0] == 2


def test_ctl_finds_socket_like_the_daemon(short_dir, capsys, monkeypatch):
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    data = short_dir / "data"
    srv = ControlServer(data / "control.sock")
    srv.start()
    try:
        code, out, _ = run_ctl(capsys, "help", "--data-dir", str(data))
        assert code == 0 and "help" in json.loads(out)["result"]
        monkeypatch.setenv("STATE_DIRECTORY", str(data))
        code, out, _ = run_ctl(capsys, "help")
        assert code == 0
        settings = short_dir / "s.toml"
        settings.write_text(f'[control]\nsocket = "{data / "control.sock"}"\n')
        monkeypatch.delenv("STATE_DIRECTORY")
        assert run_ctl(capsys, "help", "--settings", str(settings))[0] == 0
    finally:
        assert srv.stop()


def test_ctl_not_running_and_bad_settings(short_dir, capsys, monkeypatch):
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    code, out, err = run_ctl(capsys, "status", "--data-dir", str(short_dir))
    assert code == 1 and out == ""
    assert err.strip() == f"stockade is not running (no socket at {short_dir / 'control.sock'})"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(short_dir / "control.sock"))
    dead.close()
    code, _, err = run_ctl(capsys, "status", "--data-dir", str(short_dir))
    assert code == 1 and "stale socket" in err
    bad = short_dir / "bad.toml"
    bad.write_text("[risk]\nmax_position_pct = -5\n")
    code, _, err = run_ctl(capsys, "status", "--settings", str(bad))
    assert code == 2 and "risk.max_position_pct = -5" in err


def test_every_command_is_audited_in_the_log_by_its_decoded_name(server, caplog):
    import logging

    server.register("status", lambda args: {"state": "ACTIVE"}, "read-only")
    with caplog.at_level(logging.DEBUG, logger="stockade.ops.control"):
        assert talk(server.path, b'{"cmd": "crash", "args": {"name": "x", "cmd": "status"}}\n')["ok"]
        assert talk(server.path, b'{"cmd" : "status"}\n')["ok"]
        assert not talk(server.path, b'{"cmd": "nope"}\n')["ok"]
    audit = [r.getMessage() for r in caplog.records if r.getMessage().startswith("control audit:")]
    me = f"uid {os.geteuid()} pid {os.getpid()}"
    # One line per request, the command as decoded (not as spelled in the JSON), at INFO
    # for successes (reads included: the issue wants every command in the log), WARNING for errors.
    assert audit == [
        f'control audit: {me}: crash {{"name":"x","cmd":"status"}} -> ok',
        f"control audit: {me}: status {{}} -> ok",
        f"control audit: {me}: nope {{}} -> error: unknown command 'nope' (try: help)",
    ]
    levels = [r.levelno for r in caplog.records if r.getMessage().startswith("control audit:")]
    assert levels == [logging.INFO, logging.INFO, logging.WARNING]


# ---- group access and the audit trail ------------------------------------------------


def audited_server(path, **kwargs):
    records = []
    srv = ControlServer(path, max_request_bytes=1024, read_timeout_s=5.0, audit=records.append, **kwargs)
    srv.register("echo", lambda args: args, "return the args")
    srv.register("refuse", lambda args: (_ for _ in ()).throw(CommandError("not now")), "refuses")
    return srv, records


def test_every_request_and_refusal_is_audited_with_peer_credentials(short_dir):
    srv, records = audited_server(short_dir / "control.sock")
    srv.start()
    try:
        assert talk(srv.path, req("echo", reason="test", api_key="PKSHOULDNOTAPPEAR", password="hunter2"))["ok"]
        assert talk(srv.path, req("refuse")) == {"ok": False, "error": "not now"}
        assert talk(srv.path, b"{junk\n")["ok"] is False
        assert talk(srv.path, b'{"cmd": "echo", "args": {"x": "' + b"a" * 2000 + b'"}}\n')["ok"] is False
    finally:
        assert srv.stop(timeout=5.0)
    me = (os.geteuid(), os.getpid(), os.getegid())
    assert [(r.uid, r.pid, r.gid) for r in records] == [me] * 4
    assert [(r.cmd, r.ok, r.error) for r in records] == [
        ("echo", True, ""),
        ("refuse", False, "not now"),
        ("(malformed)", False, records[2].error),
        ("(oversize)", False, "request too large (max 1024 bytes)"),
    ]
    assert records[2].error.startswith("malformed JSON")
    # Secret-named args are never recorded, whatever their value.
    assert json.loads(records[0].args) == {"reason": "test", "api_key": "***", "password": "***"}
    assert all(r.ts_ns > 0 and r.duration_ms >= 0 for r in records)


def test_registered_secrets_are_redacted_from_audit_args_and_error_replies(short_dir):
    from stockade.broker.rest import register_secret

    register_secret("SECRETVALUE-1b9c7e")
    srv, records = audited_server(short_dir / "control.sock")
    srv.register("boom", lambda args: (_ for _ in ()).throw(RuntimeError("bad token SECRETVALUE-1b9c7e")), "raises")
    srv.start()
    try:
        assert talk(srv.path, req("echo", note="x SECRETVALUE-1b9c7e y"))["ok"]
        reply = talk(srv.path, req("boom"))
    finally:
        assert srv.stop(timeout=5.0)
    assert reply == {"ok": False, "error": "boom failed: RuntimeError: bad token ***"}
    assert json.loads(records[0].args) == {"note": "x *** y"}
    assert "SECRETVALUE" not in records[1].error


def test_refused_uid_is_audited_and_told_permission_denied(short_dir):
    srv, records = audited_server(short_dir / "control.sock", allowed_uids={os.geteuid() + 4242})
    srv.start()
    try:
        assert talk(srv.path, req("echo")) == {"ok": False, "error": "permission denied"}
    finally:
        assert srv.stop(timeout=5.0)
    assert [(r.cmd, r.ok, r.error, r.uid) for r in records] == [("(connect)", False, "permission denied", os.geteuid())]


def test_a_failing_audit_sink_does_not_stop_the_command(short_dir, caplog):
    def broken(record):
        raise OSError("disk full")

    srv = ControlServer(short_dir / "control.sock", audit=broken)
    srv.register("echo", lambda args: args, "")
    srv.start()
    try:
        assert talk(srv.path, req("echo", a=1)) == {"ok": True, "result": {"a": 1}}
    finally:
        assert srv.stop(timeout=5.0)
    assert any("could not store the audit record of echo" in r.getMessage() for r in caplog.records)


def test_group_socket_is_0660_with_that_group_and_admits_members(short_dir):
    import grp

    own_group = grp.getgrgid(os.getegid()).gr_name
    # Our uid is not in allowed_uids: only the group membership lets us in.
    srv, records = audited_server(short_dir / "control.sock", group=own_group, allowed_uids={os.geteuid() + 4242})
    srv.start()
    try:
        st = os.stat(srv.path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getegid()
        assert talk(srv.path, req("echo", a=1)) == {"ok": True, "result": {"a": 1}}
    finally:
        assert srv.stop(timeout=5.0)
    assert [r.ok for r in records] == [True]


def test_peer_check_without_and_with_group(short_dir):
    import grp

    me, my_gid = os.geteuid(), os.getegid()
    stranger_uid, stranger_gid = me + 4242, my_gid + 4242
    plain = ControlServer(short_dir / "a.sock")
    assert plain.peer_allowed(me, my_gid) and plain.peer_allowed(0, 0)
    assert not plain.peer_allowed(stranger_uid, my_gid)  # same group is not enough without control.group
    grouped = ControlServer(short_dir / "b.sock", group=grp.getgrgid(my_gid).gr_name)
    assert grouped.peer_allowed(stranger_uid, my_gid)  # primary group matches
    assert not grouped.peer_allowed(stranger_uid, stranger_gid)  # unknown uid, other group


def test_unknown_group_is_a_clear_error(short_dir):
    from stockade.config.settings import SettingsError, settings_from_dict

    with pytest.raises(ControlError, match="control.group 'no-such-group-xyz': no such group"):
        ControlServer(short_dir / "c.sock", group="no-such-group-xyz")
    with pytest.raises(SettingsError, match=r'^settings: control.group = "no-such-group-xyz": no such group'):
        settings_from_dict({"control": {"group": "no-such-group-xyz"}})


def test_audit_records_land_in_storage_and_survive_reopen(short_dir):
    from stockade.storage.store import Store

    store = Store.open(short_dir / "data")
    srv = ControlServer(short_dir / "control.sock", audit=lambda r: store.audit.add(r))
    srv.register("halt", lambda args: {"state": "HALTED"}, "")
    srv.start()
    try:
        assert talk(srv.path, req("halt", reason="audit test"))["ok"]
    finally:
        assert srv.stop(timeout=5.0)
        store.close()
    with Store.open(short_dir / "data", readonly=True) as again:
        (record,) = again.audit.latest(10)
    assert (record.cmd, record.ok, json.loads(record.args), record.uid) == (
        "halt",
        True,
        {"reason": "audit test"},
        os.geteuid(),
    )
