"""The dashboard's access token and the CSRF token derived from it.

One bearer token guards every request. It comes from the
STOCKADE_DASHBOARD_TOKEN environment variable or systemd credential if set,
else from a file (default `<data dir>/dashboard.token`) that is generated at
first start with mode 0600, written whole and then linked into place (never
over an existing file), so no other process can slip in a file of its own and
a crash mid-write leaves no empty token behind. A file readable by anyone
but its owner is refused: the token can move money.

The CSRF token is an HMAC of the access token: stable across restarts (a tab
left open keeps working), useless without the access token, and never the
token itself, so the page that carries it does not carry the secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from stockade.config.secrets import read_secret

TOKEN_NAME = "STOCKADE_DASHBOARD_TOKEN"
TOKEN_FILE = "dashboard.token"
MIN_TOKEN_CHARS = 24


class TokenError(RuntimeError):
    """The token cannot be read or made (bad mode, unreadable file, too short)."""


def token_path(setting: str, data: Path) -> Path:
    """Where the token file is: `dashboard.token_file` (relative: under the data dir) or the default."""
    if not setting:
        return data / TOKEN_FILE
    p = Path(setting).expanduser()
    return p if p.is_absolute() else data / p


def load_or_create(path: Path) -> tuple[str, str]:
    """(token, where it came from). Environment/credential first, then the file, made if missing."""
    given = read_secret(TOKEN_NAME)
    if given:
        _check_strength(given, TOKEN_NAME)
        return given, TOKEN_NAME
    if path.exists() or path.is_symlink():
        return _read_private(path), str(path)
    # Written whole under a temporary name, then linked into place: a crash or
    # a full disk mid-write never leaves an empty token file that every later
    # start would refuse, and a racing start reads the winner's token.
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a crashed start that had this pid: no live process owns it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask did
            os.write(fd, (token + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    except FileExistsError:
        if not path.exists() and not path.is_symlink():
            raise TokenError(f"dashboard token: cannot create {path}: {tmp} is in the way") from None
        return _read_private(path), str(path)
    except OSError as exc:
        raise TokenError(f"dashboard token: cannot create {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return token, str(path)


def _read_private(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise TokenError(f"dashboard token: cannot read {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TokenError(f"dashboard token: {path} is not a regular file")
        if st.st_mode & 0o077:
            raise TokenError(
                f"dashboard token: {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                "it must be readable by its owner only (chmod 600)"
            )
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    token = raw.decode("utf-8", "replace").strip()
    _check_strength(token, str(path))
    return token


def _check_strength(token: str, where: str) -> None:
    # Name where it came from, never the value.
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenError(f"dashboard token from {where} must be at least {MIN_TOKEN_CHARS} characters, no spaces")


def csrf_for(token: str) -> str:
    """The CSRF token the page echoes in the X-CSRF-Token header of every POST."""
    return hmac.new(token.encode(), b"stockade-dashboard-csrf", hashlib.sha256).hexdigest()


def session_for(token: str) -> str:
    """The cookie value: derived, so the cookie jar never holds the token itself."""
    return hmac.new(token.encode(), b"stockade-dashboard-session", hashlib.sha256).hexdigest()


def same(a: str | None, b: str) -> bool:
    """Constant-time comparison (a timing side channel must not leak the token)."""
    return a is not None and hmac.compare_digest(a.encode(), b.encode())
