import os
import stat
from pathlib import Path

import pytest

from stockade.config import paths, secrets
from stockade.config.settings import Settings, settings_from_dict


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"STATE_DIRECTORY": "/var/lib/stockade:/var/lib/other"}
    assert paths.data_dir("/x/y", env) == Path("/x/y")
    assert paths.data_dir(None, env) == Path("/var/lib/stockade")
    assert paths.data_dir(None, {}) == tmp_path / "var"
    assert paths.data_dir("rel", {}) == tmp_path / "rel"
    assert paths.data_dir(None, {"STATE_DIRECTORY": ""}) == tmp_path / "var"


def test_socket_precedence(tmp_path):
    data = tmp_path / "data"
    s = Settings()
    assert paths.control_socket_path(s, data, {}) == data / "control.sock"
    assert paths.control_socket_path(s, data, {"RUNTIME_DIRECTORY": "/run/stockade"}) == Path(
        "/run/stockade/control.sock"
    )
    pinned = settings_from_dict({"control": {"socket": "/tmp/x.sock"}})
    assert paths.control_socket_path(pinned, data, {"RUNTIME_DIRECTORY": "/run/stockade"}) == Path("/tmp/x.sock")
    rel = settings_from_dict({"control": {"socket": "ctl/s.sock"}})
    assert paths.control_socket_path(rel, data, {}) == data / "ctl/s.sock"


def test_ensure_private_dir(tmp_path):
    d = paths.ensure_private_dir(tmp_path / "a" / "b")
    assert d.is_dir()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700
    paths.ensure_private_dir(d)  # idempotent
    (tmp_path / "f").write_text("")
    with pytest.raises((NotADirectoryError, FileExistsError)):
        paths.ensure_private_dir(tmp_path / "f")


def test_secrets_env_then_credentials(tmp_path):
    assert secrets.alpaca_keys({}) is None
    env = {"APCA_API_KEY_ID": "envkey", "APCA_API_SECRET_KEY": "envsecret"}
    assert secrets.alpaca_keys(env) == ("envkey", "envsecret")
    (tmp_path / "APCA_API_KEY_ID").write_text("credkey\n")
    (tmp_path / "APCA_API_SECRET_KEY").write_text("credsecret\n")
    (tmp_path / "STOCKADE_SMTP_PASSWORD").write_text("pw-from-cred\n")
    cred = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert secrets.alpaca_keys(cred) == ("credkey", "credsecret")
    assert secrets.alpaca_keys({**cred, **env}) == ("envkey", "envsecret")  # environment first
    assert secrets.smtp_password(cred) == "pw-from-cred"
    assert secrets.smtp_password({}) is None
    assert secrets.webhook_url({"STOCKADE_WEBHOOK_URL": "https://hooks/x"}) == "https://hooks/x"
    assert set(secrets.known_secret_values({**cred})) == {"credkey", "credsecret", "pw-from-cred"}


def test_half_a_key_pair_is_an_error():
    with pytest.raises(secrets.SecretsError, match="APCA_API_KEY_ID is set but APCA_API_SECRET_KEY is not"):
        secrets.alpaca_keys({"APCA_API_KEY_ID": "k"})


def test_unreadable_credential_names_file_not_content(tmp_path):
    (tmp_path / "APCA_API_KEY_ID").mkdir()  # reading a directory fails
    with pytest.raises(secrets.SecretsError, match="cannot read credential .*APCA_API_KEY_ID"):
        secrets.read_secret("APCA_API_KEY_ID", {"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_webhook_url_path_is_a_secret_of_its_own():
    env = {"STOCKADE_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/tokentoken"}
    assert secrets.known_secret_values(env) == [env["STOCKADE_WEBHOOK_URL"], "/services/T000/B000/tokentoken"]
    # A path too short to be a token is not listed (it would redact ordinary words).
    assert secrets.known_secret_values({"STOCKADE_WEBHOOK_URL": "https://example.com/hook"}) == [
        "https://example.com/hook"
    ]


def test_daemon_log_filter_redacts_messages_args_and_tracebacks():
    import logging

    from stockade.broker.rest import register_secret
    from stockade.ops.daemon import RedactingFilter

    register_secret("FILTERSECRET-42x")
    formatter = logging.Formatter("%(message)s")
    try:
        raise ValueError("token FILTERSECRET-42x rejected")
    except ValueError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "auth with %s failed", ("FILTERSECRET-42x",), exc_info)
    assert RedactingFilter().filter(record) is True
    text = formatter.format(record)
    assert "FILTERSECRET" not in text
    assert text.startswith("auth with *** failed\nTraceback") and "ValueError: token *** rejected" in text
    plain = logging.LogRecord("t", logging.INFO, __file__, 1, "nothing %d here", (5,), None)
    RedactingFilter().filter(plain)
    assert formatter.format(plain) == "nothing 5 here"


def test_a_secret_pasted_into_a_halt_reason_is_not_stored(tmp_path):
    from actor_probes import services

    from stockade.broker.rest import register_secret
    from stockade.storage.store import Store

    fake = "PKREASONLEAK0123456789"
    register_secret(fake)
    with Store.open(tmp_path / "data") as store:
        svc = services(Settings(), store)
        svc.set_trading_state("HALTED", f"halted, key was {fake}", "control")
        stored = svc.trading_state()
        assert stored.state == "HALTED" and fake not in stored.reason and "***" in stored.reason
        assert all(fake not in repr(event) for _, event in store.journal.read())
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert fake.encode() not in raw
