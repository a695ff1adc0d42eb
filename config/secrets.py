"""Secrets: from the environment or systemd credentials, never from settings.toml.

Each secret has one name, used both as the environment variable and as the
systemd credential name (`LoadCredential=APCA_API_KEY_ID:/etc/stockade/...`
shows up as `$CREDENTIALS_DIRECTORY/APCA_API_KEY_ID`). The environment wins,
so a developer's shell export overrides nothing surprising under systemd
(where the environment normally has no keys when credentials are used).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from stockade.config.settings import SettingsError

ALPACA_KEY_ID = "APCA_API_KEY_ID"
ALPACA_SECRET_KEY = "APCA_API_SECRET_KEY"
SMTP_PASSWORD = "STOCKADE_SMTP_PASSWORD"
# Slack and Discord webhook URLs carry their token in the path, so the URL
# itself is a secret; this overrides alerts.webhook_url.
WEBHOOK_URL = "STOCKADE_WEBHOOK_URL"

ALL_NAMES = (ALPACA_KEY_ID, ALPACA_SECRET_KEY, SMTP_PASSWORD, WEBHOOK_URL)


class SecretsError(SettingsError):
    """A secret that is present but unusable (unreadable file, half a key pair)."""


def read_secret(name: str, env: Mapping[str, str] = os.environ) -> str | None:
    """`$name` if set and non-empty, else `$CREDENTIALS_DIRECTORY/name`, else None."""
    value = env.get(name, "").strip()
    if value:
        return value
    cred_dir = env.get("CREDENTIALS_DIRECTORY", "")
    if not cred_dir:
        return None
    path = Path(cred_dir) / name
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        # Name the file, never the content.
        raise SecretsError(f"secrets: cannot read credential {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return value or None


def alpaca_keys(env: Mapping[str, str] = os.environ) -> tuple[str, str] | None:
    """(key id, secret key), or None when neither is configured.

    Half a pair is an error: silently falling back to the embedded venue
    because one variable has a typo would hide a broken deployment.
    """
    key = read_secret(ALPACA_KEY_ID, env)
    secret = read_secret(ALPACA_SECRET_KEY, env)
    if key and secret:
        return key, secret
    if key or secret:
        have, missing = (ALPACA_KEY_ID, ALPACA_SECRET_KEY) if key else (ALPACA_SECRET_KEY, ALPACA_KEY_ID)
        raise SecretsError(f"secrets: {have} is set but {missing} is not")
    return None


def smtp_password(env: Mapping[str, str] = os.environ) -> str | None:
    """The SMTP login password, or None (no login)."""
    return read_secret(SMTP_PASSWORD, env)


def webhook_url(env: Mapping[str, str] = os.environ) -> str | None:
    """A webhook URL kept as a secret (it overrides alerts.webhook_url), or None."""
    return read_secret(WEBHOOK_URL, env)


def known_secret_values(env: Mapping[str, str] = os.environ) -> list[str]:
    """Every configured secret value, for redaction of outgoing text.

    A webhook URL's path is listed on its own as well: HTTP errors quote the
    path without the host ("... with url: /services/T0/B0/token").
    """
    values = []
    for name in ALL_NAMES:
        try:
            value = read_secret(name, env)
        except SecretsError:
            continue
        if value:
            values.append(value)
            path = urlsplit(value).path if name == WEBHOOK_URL else ""
            if len(path.strip("/")) >= 8:
                values.append(path)
    return values
