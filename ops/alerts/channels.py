"""Alert delivery channels: log, JSONL file, webhook (generic/Slack/Discord), SMTP.

A channel delivers one alert or raises `ChannelError` (saying whether a
retry could help); it does no dedup (`alert_policy`) and no retry
(`alert_delivery`). Network channels are blocking with a timeout, so the
Alerter runs each on its own `DeliveryWorker` thread.
Every text leaving the process goes through a `Redactor` first: a secret
must never end up in a chat room or a mailbox.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import smtplib
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

import msgspec

from stockade.config import secrets
from stockade.ops.alerts.policy import LEVEL_RANK

log = logging.getLogger(__name__)
alert_log = logging.getLogger("stockade.alerts")

_LOG_LEVELS = {
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "CRITICAL": logging.CRITICAL,
    "EMERGENCY": logging.CRITICAL,
}
DISCORD_MAX = 2000  # Discord rejects longer `content`
REDACTED = "[REDACTED]"


class ChannelError(Exception):
    """Delivery failed; the message never contains a secret (no webhook URL).

    `retryable` is False when trying again cannot help (the receiver refused
    the request itself: HTTP 4xx, SMTP 5xx), so no retry budget is spent.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class AlertLike(Protocol):
    """What a channel needs of an alert (`stockade.codecs.messages.Alert` fits).

    Read-only members, so frozen structs (an Alert, an AlertRecord) fit."""

    @property
    def level(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def ts_ns(self) -> int: ...


class Redactor:
    """Replace known secret values in outgoing text."""

    def __init__(self, values: Iterable[str]) -> None:
        # Very short values would redact ordinary words; longest first so a
        # secret containing another is replaced whole.
        self._values = sorted({v for v in values if v and len(v) >= 6}, key=len, reverse=True)

    def adding(self, *values: str | None) -> Redactor:
        """A redactor that also hides `values` (a channel's own URL or password)."""
        return Redactor([*self._values, *(v for v in values if v)])

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> Redactor:
        return cls(secrets.known_secret_values(env))

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


def _iso(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).isoformat(timespec="milliseconds")


def one_line(alert: AlertLike, suppressed: int = 0) -> str:
    """`[LEVEL] key: text (source) (+N similar suppressed)`."""
    extra = f" (+{suppressed} similar suppressed)" if suppressed else ""
    return f"[{alert.level}] {alert.key}: {alert.text} ({alert.source}){extra}"


class Channel:
    """Base: `name`, `min_level`, and `send(alert, suppressed)`."""

    name = "channel"

    def __init__(self, min_level: str = "INFO", redact: Redactor | None = None) -> None:
        self.min_level = min_level
        self.redact = redact or Redactor(())

    def accepts(self, level: str) -> bool:
        return LEVEL_RANK.get(level, 0) >= LEVEL_RANK[self.min_level]

    def send(self, alert: AlertLike, suppressed: int = 0) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class LogChannel(Channel):
    """The daemon log (journald under systemd), with the alert level mapped."""

    name = "log"

    def send(self, alert: AlertLike, suppressed: int = 0) -> None:
        alert_log.log(
            _LOG_LEVELS.get(alert.level, logging.WARNING), "ALERT %s", self.redact(one_line(alert, suppressed))
        )


class JsonlChannel(Channel):
    """One JSON object per line, appended to a 0600 file (opened per alert, so logrotate works)."""

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str], min_level: str = "INFO", redact: Redactor | None = None) -> None:
        super().__init__(min_level, redact)
        self.path = Path(path)
        self._lock = threading.Lock()

    def send(self, alert: AlertLike, suppressed: int = 0) -> None:
        record = {
            "ts": _iso(alert.ts_ns),
            "ts_ns": alert.ts_ns,
            "level": alert.level,
            "key": self.redact(alert.key),
            "source": alert.source,
            "text": self.redact(alert.text),
            "suppressed": suppressed,
        }
        line = msgspec.json.encode(record) + b"\n"
        try:
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    os.fchmod(fd, 0o600)  # a file created earlier with a wider mode is narrowed
                    os.write(fd, line)  # one write per line: lines never interleave
                finally:
                    os.close(fd)
        except OSError as exc:
            raise ChannelError(f"jsonl: cannot append to {self.path}: {exc.strerror or exc}") from None


class WebhookChannel(Channel):
    """POST the alert as JSON: generic object, Slack `{"text"}` or Discord `{"content"}`."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        kind: str = "generic",
        min_level: str = "WARNING",
        timeout_s: float = 5.0,
        redact: Redactor | None = None,
    ) -> None:
        super().__init__(min_level, redact)
        self._url = url  # may carry a token: never logged, never in errors
        self._hide = self.redact.adding(url, urllib.parse.urlsplit(url).path)
        self.kind = kind
        self.timeout_s = timeout_s

    def payload(self, alert: AlertLike, suppressed: int = 0) -> dict[str, Any]:
        text = self.redact(one_line(alert, suppressed))
        if self.kind == "slack":
            return {"text": text}
        if self.kind == "discord":
            return {"content": text if len(text) <= DISCORD_MAX else text[: DISCORD_MAX - 1] + "…"}
        return {
            "level": alert.level,
            "key": self.redact(alert.key),
            "text": self.redact(alert.text),
            "source": alert.source,
            "ts": _iso(alert.ts_ns),
            "suppressed": suppressed,
            "summary": text,
        }

    def send(self, alert: AlertLike, suppressed: int = 0) -> None:
        req = urllib.request.Request(
            self._url,
            data=msgspec.json.encode(self.payload(alert, suppressed)),
            headers={"Content-Type": "application/json", "User-Agent": "stockade-alerts"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read(4096)
        except urllib.error.HTTPError as exc:
            # 4xx: the receiver refuses this request (bad token, bad payload);
            # only "too many requests" and "timeout" may pass later.
            retryable = exc.code >= 500 or exc.code in (408, 429)
            raise ChannelError(f"webhook ({self.kind}): HTTP {exc.code}", retryable=retryable) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ChannelError(f"webhook ({self.kind}): {type(reason).__name__}: {self._hide(str(reason))}") from None


class SmtpChannel(Channel):
    """E-mail through an SMTP server: `security` "starttls", "tls" (implicit) or "none".

    The server certificate is verified (system CAs, plus `ca_file`); the
    password (secrets.smtp_password) is only ever sent over TLS.
    """

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        to: Iterable[str],
        *,
        user: str = "",
        password: str | None = None,
        min_level: str = "CRITICAL",
        timeout_s: float = 5.0,
        redact: Redactor | None = None,
        security: str = "starttls",
        ca_file: str = "",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(min_level, redact)
        if security not in ("starttls", "tls", "none"):
            raise ValueError(f"smtp security must be starttls, tls or none, got {security!r}")
        self.host, self.port, self.sender, self.to = host, port, sender, list(to)
        self.user, self._password = user, password
        self._hide = self.redact.adding(password)
        self.timeout_s = timeout_s
        self.security = security
        self.ca_file = ca_file
        self._ssl = ssl_context

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # Verifying (hostname and chain) context; a private CA is added, never a bypass.
            ctx = ssl.create_default_context()
            if self.ca_file:
                ctx.load_verify_locations(cafile=self.ca_file)
            self._ssl = ctx
        return self._ssl

    def message(self, alert: AlertLike, suppressed: int = 0) -> EmailMessage:
        msg = EmailMessage()
        # One line whatever the key holds: a newline in a header is an injection.
        msg["Subject"] = " ".join(self.redact(f"[stockade] {alert.level} {alert.key}").split())
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        body = (
            f"{self.redact(one_line(alert, suppressed))}\n\n"
            f"level:  {alert.level}\nkey:    {self.redact(alert.key)}\nsource: {alert.source}\n"
            f"time:   {_iso(alert.ts_ns)}\n\n{self.redact(alert.text)}\n"
        )
        msg.set_content(body)
        return msg

    def send(self, alert: AlertLike, suppressed: int = 0) -> None:
        msg = self.message(alert, suppressed)
        if self.user and self._password and self.security == "none":
            raise ChannelError(f"smtp: refusing to send the password without TLS (port {self.port})", retryable=False)
        try:
            ctx = self._context() if self.security != "none" else None
            if self.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=ctx)
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            with client:
                if self.security == "starttls":
                    client.starttls(context=ctx)  # raises if the server does not offer it: no silent downgrade
                if self.user and self._password:
                    client.login(self.user, self._password)
                client.send_message(msg)
        except smtplib.SMTPResponseException as exc:
            # 5xx: permanent (bad credentials, recipient refused); 4xx: try later.
            raise ChannelError(
                f"smtp {self.host}:{self.port}: {type(exc).__name__}: {exc.smtp_code} "
                f"{self._hide(_text(exc.smtp_error))}",
                retryable=exc.smtp_code < 500,
            ) from None
        except (smtplib.SMTPException, OSError, ssl.SSLError, ValueError) as exc:
            # No STARTTLS, a certificate that does not verify, every recipient
            # refused: configuration problems that retrying cannot fix.
            permanent = isinstance(
                exc, (smtplib.SMTPNotSupportedError, smtplib.SMTPRecipientsRefused, ssl.SSLCertVerificationError)
            )
            raise ChannelError(
                f"smtp {self.host}:{self.port}: {type(exc).__name__}: {self._hide(str(exc))}", retryable=not permanent
            ) from None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def build_channels(alerts_settings: Any, data_dir: Path, env: Mapping[str, str] = os.environ) -> list[Channel]:
    """The channels the `[alerts]` settings ask for, sharing one redactor."""
    cfg = alerts_settings
    redact = Redactor.from_environment(env)
    channels: list[Channel] = [LogChannel("INFO", redact)]
    if cfg.jsonl:
        from stockade.config.paths import alerts_jsonl_path

        channels.append(JsonlChannel(alerts_jsonl_path(data_dir), "INFO", redact))
    url = secrets.webhook_url(env) or cfg.webhook_url
    if url:
        channels.append(WebhookChannel(url, cfg.webhook_kind, cfg.min_level_webhook, cfg.timeout_s, redact))
    if cfg.smtp_host:
        channels.append(
            SmtpChannel(
                cfg.smtp_host,
                cfg.smtp_port,
                cfg.smtp_from,
                cfg.smtp_to,
                user=cfg.smtp_user,
                password=secrets.smtp_password(env),
                min_level=cfg.min_level_smtp,
                timeout_s=cfg.timeout_s,
                redact=redact,
                security=cfg.smtp_security,
                ca_file=cfg.smtp_ca_file,
            )
        )
    return channels
