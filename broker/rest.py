"""Alpaca REST client factories, endpoint resolution and secret redaction.

alpaca-py's `RESTClient` sends every request through a plain
`requests.Session` with *no timeout*, so a stalled TCP peer would block an
actor forever. The factories here swap in a session that applies a default
timeout to every request, and set the SDK's retry policy deliberately
(see `make_trading_client`).

Every request goes through `TimeoutSession.request`, which is also where an
actor's REST call meets its fence token (`supervisors.fence`): a replaced
(fenced) instance's request is refused before it is sent, and a request
declares the actor busy for its own bound (connect + read timeout, plus
`BUSY_MARGIN_S`), so a slow but answering broker is not taken for a hang.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import requests

from stockade.supervisors import fence

if TYPE_CHECKING:
    from alpaca.data.enums import DataFeed

PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
LIVE_TRADING_URL = "https://api.alpaca.markets"
DATA_URL = "https://data.alpaca.markets"
STREAM_DATA_BASE = "wss://stream.data.alpaca.markets/v2"
PAPER_TRADING_STREAM_URL = "wss://paper-api.alpaca.markets/stream"
LIVE_TRADING_STREAM_URL = "wss://api.alpaca.markets/stream"

# ---- redaction -----------------------------------------------------------------

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
# Values that follow a secret-bearing name, whatever the secret is: catches
# secrets that were never registered (e.g. echoed back in an error body).
_SECRET_FIELD = re.compile(
    r"""(?ix)
    (                                           # the name and its separator
      \b(?:secret(?:[_-]key)?|apca-api-secret-key|apca-api-key-id|key_id)["']?\s*[:=]\s*["']?
      | "key"\s*:\s*"                           # {"action":"auth","key":"..."}
    )
    ([^"'\s,}&]+)                               # the value
    """
)


def register_secret(*values: str | None) -> None:
    """Remember credentials so `redact` removes them from any text."""
    with _secrets_lock:
        for value in values:
            # Very short values would blank out ordinary words; they are not
            # real credentials anyway.
            if value and len(value) >= 4:
                _secrets.add(value)


def redact(text: object, extra: Iterable[str] = ()) -> str:
    """`text` with every registered (and `extra`) credential and every
    ``secret=...``-style value replaced by ``***``. Use before logging."""
    out = str(text)
    with _secrets_lock:
        values = sorted(_secrets.union(v for v in extra if v), key=len, reverse=True)
    for value in values:
        if value in out:
            out = out.replace(value, "***")
    return _SECRET_FIELD.sub(lambda m: m.group(1) + "***", out)


# ---- endpoints ------------------------------------------------------------------


class BrokerEndpoints(msgspec.Struct, frozen=True):
    """Where stockade talks to: REST for trading and data, and the two streams."""

    trading_url: str
    data_url: str
    stream_url: str  # market data, including the feed path (/v2/iex)
    trading_stream_url: str


def _norm_http(name: str, url: str) -> str:
    url = url.strip().rstrip("/")
    # alpaca-py appends "/v2" itself; people often put it in APCA_API_BASE_URL,
    # which would otherwise produce ".../v2/v2/orders" 404s.
    if url.endswith("/v2"):
        url = url[:-3]
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"{name} must be an http(s) URL, got {url!r}")
    return url


def _norm_ws(name: str, url: str) -> str:
    url = url.strip().rstrip("/")
    if not re.match(r"^wss?://[^/\s]+", url):
        raise ValueError(f"{name} must be a ws(s) URL, got {url!r}")
    return url


def _stream_from_trading(trading_url: str) -> str:
    """The trading stream lives on the trading host: https://h -> wss://h/stream."""
    if trading_url.startswith("https://"):
        return "wss://" + trading_url[len("https://") :] + "/stream"
    return "ws://" + trading_url[len("http://") :] + "/stream"


def resolve_endpoints(
    *,
    paper: bool = True,
    trading_url: str | None = None,
    data_url: str | None = None,
    stream_url: str | None = None,
    trading_stream_url: str | None = None,
    feed: str = "iex",
    env: Mapping[str, str] | None = None,
) -> BrokerEndpoints:
    """Resolve endpoints: a non-empty settings value wins, then the environment
    (``APCA_API_BASE_URL`` for trading), then Alpaca's paper or live defaults.

    When the trading URL comes from settings or the environment and no trading
    stream URL is given, the stream follows the trading host, so pointing
    APCA_API_BASE_URL at live cannot leave the order stream on paper.
    Raises ValueError naming the setting on a malformed URL.
    """
    env = os.environ if env is None else env
    if feed not in ("iex", "sip", "test", "delayed_sip", "boats", "overnight"):
        raise ValueError(f"feed must be one of iex, sip, test, delayed_sip, boats, overnight; got {feed!r}")
    explicit_trading = trading_url or env.get("APCA_API_BASE_URL") or ""
    if explicit_trading:
        trading = _norm_http("trading_url" if trading_url else "APCA_API_BASE_URL", explicit_trading)
    else:
        trading = PAPER_TRADING_URL if paper else LIVE_TRADING_URL
    data = _norm_http("data_url", data_url) if data_url else DATA_URL
    stream = _norm_ws("stream_url", stream_url) if stream_url else f"{STREAM_DATA_BASE}/{feed}"
    if trading_stream_url:
        tstream = _norm_ws("trading_stream_url", trading_stream_url)
    elif explicit_trading:
        tstream = _stream_from_trading(trading)
    else:
        tstream = PAPER_TRADING_STREAM_URL if paper else LIVE_TRADING_STREAM_URL
    return BrokerEndpoints(trading, data, stream, tstream)


def endpoints_for(alpaca: Any, env: Mapping[str, str] | None = None) -> BrokerEndpoints:
    """The endpoints an `[alpaca]` settings section resolves to.

    The one resolver used by the daemon, `run.py check` and the live/paper
    guard, so the guard judges exactly what the daemon will connect to.
    """
    return resolve_endpoints(
        paper=not alpaca.live,
        trading_url=alpaca.trading_url or None,
        data_url=alpaca.data_url or None,
        stream_url=alpaca.stream_url or None,
        trading_stream_url=alpaca.trading_stream_url or None,
        feed=alpaca.feed,
        env=env,
    )


# ---- REST clients ---------------------------------------------------------------


# Added to a request's connect + read timeout for its busy declaration:
# reading a small JSON body after the first byte, and a loaded machine.
BUSY_MARGIN_S = 1.0


def request_bound_s(timeout: float | tuple[float, float]) -> float:
    """How long one request with `timeout` (requests' float or (connect, read)) can keep its caller.

    requests' read timeout bounds each wait for bytes, not the whole body;
    Alpaca's answers are small JSON documents, read in one or two waits.
    """
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    return float(connect) + float(read) + BUSY_MARGIN_S


class TimeoutSession(requests.Session):
    """A `requests.Session` that gives every request a timeout unless one is passed,
    refuses requests from a fenced actor, and declares each request busy."""

    def __init__(self, timeout: float | tuple[float, float]) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method, url, *args, **kwargs):
        # `timeout` is the 7th positional parameter after `url`; alpaca-py
        # passes everything by keyword, but do not clobber a positional one.
        if kwargs.get("timeout") is None and len(args) < 7:
            kwargs["timeout"] = self.default_timeout
        fence.check("rest", method)  # a replaced actor reaches no broker
        timeout = kwargs.get("timeout") or self.default_timeout
        # Capped at fence's longest declaration: a read timeout set past it
        # (an operator's choice) must not turn every request into a ValueError.
        bound = min(request_bound_s(timeout), fence.MAX_BUSY_S)
        with fence.busy(bound, f"{method} {_path_of(url)}"):
            return super().request(method, url, *args, **kwargs)


def _path_of(url: str) -> str:
    """The path of `url`, for a busy declaration (no host, no query: nothing secret)."""
    rest = url.split("://", 1)[-1]
    path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return path.split("?", 1)[0]


def _configure(
    client,
    *,
    timeout_s: float,
    connect_timeout_s: float,
    retry_attempts: int,
    retry_wait_s: float,
    retry_codes: Iterable[int],
):
    # These are alpaca-py RESTClient internals (alpaca/common/rest.py). Check
    # they exist so an SDK upgrade that renames them fails at start-up instead
    # of silently running without timeouts.
    for attr in ("_session", "_retry", "_retry_wait", "_retry_codes"):
        if not hasattr(client, attr):
            raise RuntimeError(f"alpaca-py client has no {attr}: cannot configure timeouts/retries safely")
    if timeout_s <= 0 or connect_timeout_s <= 0 or retry_attempts < 0 or retry_wait_s < 0:
        raise ValueError("timeouts must be > 0 and retry settings >= 0")
    old = client._session
    client._session = TimeoutSession((connect_timeout_s, timeout_s))
    old.close()
    # The constructor arguments treat 0 as "use the default", so set the
    # attributes directly: 0 retries must really mean none.
    client._retry = int(retry_attempts)
    client._retry_wait = float(retry_wait_s)
    client._retry_codes = list(retry_codes)
    return client


def make_trading_client(
    key: str,
    secret: str,
    url: str | None = None,
    paper: bool = True,
    *,
    timeout_s: float = 10.0,
    connect_timeout_s: float = 5.0,
    retry_attempts: int = 2,
    retry_wait_s: float = 1.0,
    retry_codes: Iterable[int] = (429,),
):
    """An alpaca-py `TradingClient` with a timeout on every call.

    Retry policy (the SDK sleeps in the calling thread between attempts):
    only 429 is retried, because a rate-limited request was refused before
    it did anything, so resending is safe for every method. 504 (the SDK's
    default) is *not* retried here: a gateway timeout on ``POST /orders`` may
    have placed the order, and the OrderManager, which knows the
    client_order_id and can look the order up, owns that decision. Two short
    retries bound the time an actor can spend asleep in the SDK to ~2 s.
    Timeouts raise `requests.exceptions.Timeout`, not `APIError`.
    """
    from alpaca.trading.client import TradingClient

    register_secret(key, secret)
    client = TradingClient(api_key=key, secret_key=secret, paper=paper, url_override=url or None)
    return _configure(
        client,
        timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
        retry_attempts=retry_attempts,
        retry_wait_s=retry_wait_s,
        retry_codes=retry_codes,
    )


def data_feed(feed: str) -> DataFeed | None:
    """The REST data feed for an `[alpaca] feed` setting; None (the account's
    default) for "test", the streams' test feed, which REST does not serve."""
    from alpaca.data.enums import DataFeed

    return DataFeed(feed) if feed in {f.value for f in DataFeed} else None


def make_data_client(
    key: str,
    secret: str,
    url: str | None = None,
    *,
    timeout_s: float = 15.0,
    connect_timeout_s: float = 5.0,
    retry_attempts: int = 3,
    retry_wait_s: float = 1.0,
    retry_codes: Iterable[int] = (429, 500, 502, 503, 504),
    raw_data: bool = False,
):
    """An alpaca-py `StockHistoricalDataClient` with a timeout on every call.

    Market-data calls are reads, so retrying server errors as well as 429 is
    safe; they run at warm-up, off the order path, so a longer timeout is fine.
    `raw_data`: answers as the wire's dicts rather than pydantic models
    (alpaca-py's own switch).
    """
    from alpaca.data.historical.stock import StockHistoricalDataClient

    register_secret(key, secret)
    client = StockHistoricalDataClient(api_key=key, secret_key=secret, url_override=url or None, raw_data=raw_data)
    return _configure(
        client,
        timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
        retry_attempts=retry_attempts,
        retry_wait_s=retry_wait_s,
        retry_codes=retry_codes,
    )
