"""Where stockade keeps its files: data dir, control socket, models, alerts.

Precedence is the same for the daemon and `ctl`, so both find one socket:
data dir = `--data-dir` > $STATE_DIRECTORY (systemd; first entry) > ./var;
socket = settings `control.socket` > $RUNTIME_DIRECTORY/control.sock >
<data dir>/control.sock.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from stockade.config.settings import Settings

SOCKET_NAME = "control.sock"
# Where systemd puts RuntimeDirectory=stockade; `ctl` run from an operator's
# shell (no $RUNTIME_DIRECTORY) falls back to it (see ops/ctl.py).
SYSTEMD_RUNTIME_SOCKET = Path("/run/stockade") / SOCKET_NAME


def data_dir(cli_value: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """The data directory, absolute (not created: see `ensure_private_dir`)."""
    if cli_value:
        return Path(cli_value).expanduser().absolute()
    # systemd passes one path per StateDirectory= entry, colon-separated.
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state).absolute()
    return Path("var").absolute()


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create `path` and its missing parents with mode 0700; existing dirs are left as they are."""
    p = Path(path)
    missing = []
    q = p
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    # Path.mkdir(parents=True) gives parents the default mode; ours are private too.
    # The mode is filtered by the umask, which can only narrow it.
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
    if not p.is_dir():
        raise NotADirectoryError(f"{p} exists and is not a directory")
    return p


def control_socket_path(settings: Settings, data: Path, env: Mapping[str, str] = os.environ) -> Path:
    """The control socket the daemon binds (a relative control.socket is under the data dir)."""
    if settings.control.socket:
        p = Path(settings.control.socket).expanduser()
        return p if p.is_absolute() else data / p
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime) / SOCKET_NAME
    return data / SOCKET_NAME


def models_dir(data: Path) -> Path:
    """`python run.py train` writes ONNX models and manifest.json here."""
    return data / "models"


def alerts_jsonl_path(data: Path) -> Path:
    return data / "alerts.jsonl"
