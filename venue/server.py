"""The paper venue's server: one aiohttp app on one port, run on its own loop thread.

REST under /v2 (trading here, market data from market_data_api), trade updates
at /stream (and /stream/, where alpaca-trade-api connects), market data
websockets at /v2/iex|sip|test (market_stream), and the fault knobs at
/admin/faults. Plain HTTP, or TLS (venue.tls) when the config names a
certificate or asks for a self-signed one. Middlewares, outermost first: the
access log (optional), errors (no handler exception takes the venue down),
auth, rate limit, faults, then persistence of whatever the handler changed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from stockade.venue import market_data_api, market_stream, trade_stream, trading_api
from stockade.venue.access_log import access_log_middleware
from stockade.venue.clock import MarketClock
from stockade.venue.config import VenueConfig
from stockade.venue.context import VenueContext
from stockade.venue.exchange import Exchange, VenueError
from stockade.venue.faults import Faults, RejectSpec
from stockade.venue.ledger_store import LedgerStore
from stockade.venue.market import MarketSimulator, SimQuote
from stockade.venue.tls import server_ssl_context

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MARKET_WS_PATHS = frozenset({"/v2/iex", "/v2/sip", "/v2/test"})
_DATA_PREFIXES = ("/v2/stocks", "/v1beta")  # Alpaca's data API has its own rate budget
TICK_INTERVAL_S = 1.0  # the exchange follows the clock even when no quote arrives


def _json_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status, headers=headers)


def _is_websocket(request: web.Request) -> bool:
    # By path only: an Upgrade header must not let a REST path skip auth.
    return request.path in MARKET_WS_PATHS or request.path in trade_stream.PATHS


# ---- middlewares ----------------------------------------------------------------


def _error_response(request: web.Request, exc: Exception) -> web.Response | None:
    """The Alpaca-shaped JSON error for `exc`, or None when it must propagate."""
    if isinstance(exc, VenueError):
        return web.json_response(exc.body(), status=exc.status)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return _json_error(413, 41300000, "request body too large")
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        code = {404: 40410000, 405: 40510000}.get(exc.status, exc.status * 100000)
        text = {404: "endpoint not found", 405: "method not allowed"}.get(exc.status, exc.reason)
        return _json_error(exc.status, code, text)
    if isinstance(exc, ConnectionResetError):
        return None
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return _json_error(500, 50010000, "internal server error occurred")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an Alpaca-shaped JSON error; nothing escapes to aiohttp."""
    try:
        return await handler(request)
    except Exception as exc:  # CancelledError is a BaseException: it passes through
        response = _error_response(request, exc)
        if response is None:
            raise
        return response


def make_auth_middleware(ctx: VenueContext):
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Websockets authenticate in-band, as Alpaca's do.
        if (request.path.startswith("/v2/") or request.path.startswith("/admin/")) and not _is_websocket(request):
            key = request.headers.get("APCA-API-KEY-ID")
            secret = request.headers.get("APCA-API-SECRET-KEY")
            if not ctx.check_keys(key, secret):
                return _json_error(401, 40110000, "request is not authorized")
        return await handler(request)

    return auth_middleware


class RateLimiter:
    """Alpaca's per-key request budget: `limit` per minute, fixed windows, reset time in headers."""

    def __init__(self, limit_per_min: int, now: Callable[[], float] = time.time) -> None:
        self.limit = limit_per_min
        self._now = now
        self._windows: dict[str, tuple[float, int]] = {}  # bucket -> (window start, used)

    def take(self, bucket: str) -> tuple[bool, dict[str, str]]:
        now = self._now()
        start, used = self._windows.get(bucket, (now, 0))
        if now - start >= 60.0:
            start, used = now, 0
        allowed = used < self.limit
        if allowed:
            used += 1
        self._windows[bucket] = (start, used)
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - used)),
            "X-RateLimit-Reset": str(int(start + 60.0)),
        }
        return allowed, headers


def make_rate_limit_middleware(ctx: VenueContext):
    limiter = RateLimiter(ctx.config.rate_limit_per_min)

    @web.middleware
    async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v2/") or _is_websocket(request):
            return await handler(request)
        api = "data" if request.path.startswith(_DATA_PREFIXES) else "trading"
        allowed, headers = limiter.take(f"{request.headers.get('APCA-API-KEY-ID', '')}/{api}")
        if not allowed:
            return _json_error(429, 42910000, "rate limit exceeded", headers=headers)
        try:
            response = await handler(request)
        except Exception as exc:  # errors carry the budget headers too, as Alpaca's do
            error = _error_response(request, exc)
            if error is None:
                raise
            response = error
        if not response.prepared:
            response.headers.update(headers)
        return response

    return rate_limit_middleware


def make_faults_middleware(ctx: VenueContext):
    @web.middleware
    async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v2/") or _is_websocket(request):
            return await handler(request)
        f = ctx.faults
        if f.latency_ms > 0:
            await asyncio.sleep(f.latency_ms / 1000.0)
        if f.burst_429 > 0:
            f.burst_429 -= 1
            return _json_error(429, 42910000, "rate limit exceeded")
        if f.http_error_rate > 0 and ctx.fault_rng.random() < f.http_error_rate:
            status = f.http_error_status
            # Alpaca's codes are the status followed by five digits (500 -> 50010000).
            code = status * 100000 + (10000 if status >= 500 else 0)
            return _json_error(status, code, "internal server error occurred" if status >= 500 else "injected error")
        is_submit = request.method == "POST" and request.path == "/v2/orders"
        if f.reject_next is not None and is_submit:
            spec, f.reject_next = f.reject_next, None
            return _json_error(spec.status, spec.code, spec.message)
        response = await handler(request)
        if is_submit and f.lose_response_rate > 0 and ctx.fault_rng.random() < f.lose_response_rate:
            # The order exists; the client is told the gateway timed out.
            return _json_error(504, 50410000, "gateway timeout")
        return response

    return faults_middleware


def make_persist_middleware(ctx: VenueContext):
    @web.middleware
    async def persist_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            # Committed before the response leaves: an answered request survives a crash.
            ctx.persist()

    return persist_middleware


# ---- admin ----------------------------------------------------------------------------


def _faults_json(f: Faults) -> dict[str, Any]:
    return msgspec.to_builtins(f)


def add_admin_routes(app: web.Application, ctx: VenueContext) -> None:
    """GET/POST /admin/faults: read or merge the fault knobs (same key pair as /v2)."""

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(_faults_json(ctx.faults))

    async def post_faults(request: web.Request) -> web.Response:
        body = await trading_api.read_json(request)
        if not isinstance(body, dict):
            raise VenueError(400, 40010000, "request body format is invalid")
        dropped = await apply_faults(ctx, body)
        return web.json_response({**_faults_json(ctx.faults), "dropped_streams": dropped})

    async def post_crash(request: web.Request) -> web.Response:
        # A scripted price crash: {"pct": 20, "symbols": ["AAPL"]} (symbols optional: all).
        body = await trading_api.read_json(request)
        pct, symbols = (body.get("pct"), body.get("symbols")) if isinstance(body, dict) else (None, None)
        if ctx.market is None or not isinstance(pct, (int, float)) or isinstance(pct, bool):
            raise VenueError(422, 40010001, f"crash needs a numeric pct, got {pct!r}")
        try:
            moved = ctx.market.crash(float(pct), symbols)
        except (ValueError, TypeError) as exc:
            raise VenueError(422, 40010001, f"invalid crash: {exc}") from None
        return web.json_response({"crashed": moved})

    async def get_exposure(request: web.Request) -> web.Response:
        # For tests that watch protection from the venue's side without
        # spending the key's REST budget or meeting the fault knobs.
        return web.json_response(exposure(ctx))

    app.router.add_get("/admin/faults", get_faults)
    app.router.add_post("/admin/faults", post_faults)
    app.router.add_get("/admin/exposure", get_exposure)
    app.router.add_post("/admin/crash", post_crash)


def exposure(ctx: VenueContext) -> dict[str, dict[str, float]]:
    """Per held symbol: shares held and shares covered by a live (not held) sell stop."""
    ex = ctx.exchange
    if ex is None:
        return {}
    out = {s: {"qty": p.qty, "stop_covered": 0} for s, p in ex.positions.items() if p.qty}
    for o in ex.open_orders():
        if (
            o.side == "sell"
            and o.symbol in out
            and o.type in ("stop", "stop_limit", "trailing_stop")
            and o.status != "held"
        ):
            out[o.symbol]["stop_covered"] += o.remaining
    return out


_FAULT_FIELDS = {f for f in Faults.__struct_fields__}


async def apply_faults(ctx: VenueContext, changes: dict[str, Any]) -> int:
    """Merge `changes` into ctx.faults (on the loop); handles drop_streams. Returns sockets dropped."""
    changes = dict(changes)
    drop = changes.pop("drop_streams", None)
    garbage = changes.pop("garbage_frames", None)  # a one-shot action, not a stored knob
    if garbage is not None:
        if not isinstance(garbage, int) or isinstance(garbage, bool) or not 0 <= garbage <= 1000:
            raise VenueError(422, 40010001, f"garbage_frames must be an integer in [0, 1000], got {garbage!r}")
        if ctx.market_hub is not None:
            ctx.market_hub.send_garbage(garbage)
    unknown = set(changes) - _FAULT_FIELDS
    if unknown:
        raise VenueError(422, 40010001, f"unknown fault knobs: {', '.join(sorted(unknown))}")
    merged = {**msgspec.to_builtins(ctx.faults), **changes}
    try:
        new = msgspec.convert(merged, Faults)
    except msgspec.ValidationError as exc:
        raise VenueError(422, 40010001, f"invalid fault knob: {exc}") from None
    for name in _FAULT_FIELDS:
        setattr(ctx.faults, name, getattr(new, name))
    if "seed" in changes:
        ctx.fault_rng.seed(ctx.faults.seed)
    dropped = 0
    if drop:
        kinds = (
            ("market", "trading")
            if drop is True or drop == "all"
            else (tuple(drop) if isinstance(drop, list) else (drop,))
        )
        for kind in kinds:
            for ws in list(ctx.websockets.get(kind, ())):
                trade_stream.abort_websocket(ws)
                dropped += 1
    return dropped


# ---- the app ------------------------------------------------------------------------------


def build_app(ctx: VenueContext) -> web.Application:
    """The aiohttp app with every route and middleware (no simulator task started)."""
    first = [access_log_middleware] if ctx.config.access_log else []
    app = web.Application(
        client_max_size=ctx.config.max_body_bytes,
        middlewares=[
            *first,
            error_middleware,
            make_auth_middleware(ctx),
            make_rate_limit_middleware(ctx),
            make_faults_middleware(ctx),
            make_persist_middleware(ctx),
        ],
    )
    trading_api.add_routes(app, ctx)
    trade_stream.add_routes(app, ctx)
    market_data_api.add_routes(app, ctx)
    market_stream.add_routes(app, ctx)
    add_admin_routes(app, ctx)
    return app


def build_context(config: VenueConfig, faults: Faults | None = None) -> VenueContext:
    """Context with market, clock, exchange and (when data_dir is set) the restored ledger."""
    ctx = VenueContext(config, faults)
    ctx.clock = MarketClock(config.clock)
    ctx.market = MarketSimulator(
        list(config.symbols), config.seed, config.quote_rate_hz, clock=ctx.clock, arrivals=config.quote_arrivals
    )
    ctx.exchange = exchange = Exchange(
        config.symbols,
        ctx.clock,
        initial_cash=config.initial_cash,
        seed=config.seed,
        partial_fill_prob=lambda: ctx.faults.partial_fill_prob,
        on_event=lambda ev: trade_stream.publish(ctx, ev),
        non_fractionable=config.non_fractionable,
    )
    if config.data_dir:
        ctx.ledger = LedgerStore(config.data_dir)
        snap = ctx.ledger.load()
        if snap is None:
            ctx.ledger.save_snapshot(exchange.snapshot())
        else:
            exchange.restore(snap)
    exchange.take_changes()
    for symbol in config.symbols:
        q = ctx.market.latest_quote(symbol)
        if q is not None:
            exchange.on_quote(q)
    ctx.persist()

    def on_market_event(event: Any) -> None:
        if isinstance(event, SimQuote):
            try:
                exchange.on_quote(event)
                ctx.persist()
            except Exception:  # a matching bug must not stop the market
                log.exception("exchange failed on a quote")

    ctx.market.subscribe(on_market_event)
    return ctx


class VenueHandle:
    """A running venue: where it listens and how to change or stop it."""

    def __init__(
        self,
        ctx: VenueContext,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        host: str,
        port: int,
        stop_event: asyncio.Event,
        tls: bool = False,
    ) -> None:
        self.ctx = ctx
        self.tls = tls
        self.loop = loop
        self.thread = thread
        self.host = host
        self.port = port
        self._stop_event = stop_event

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def data_stream_url(self, feed: str = "iex") -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}/v2/{feed}"

    @property
    def trading_stream_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}/stream"

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run `fn` on the venue loop and return its result (for tests and the daemon)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def set_faults(self, timeout: float = 10.0, **changes: Any) -> Faults:
        """Change fault knobs from any thread (drop_streams=True cuts websockets)."""
        if isinstance(changes.get("reject_next"), RejectSpec):
            changes["reject_next"] = msgspec.to_builtins(changes["reject_next"])
        fut = asyncio.run_coroutine_threadsafe(apply_faults(self.ctx, changes), self.loop)
        fut.result(timeout)
        return self.call(lambda: msgspec.structs.replace(self.ctx.faults), timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Close websockets, stop the simulator, flush and close the store, end the thread."""
        if not self.thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self._stop_event.set)
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.error("venue thread did not stop within %.1fs", timeout)


async def _serve(ctx: VenueContext, ready: Callable[[int], None], stop_event: asyncio.Event) -> None:
    config = ctx.config
    app = build_app(ctx)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=server_ssl_context(config))
    await site.start()
    port = runner.addresses[0][1]
    assert ctx.market is not None
    tasks = [
        asyncio.create_task(ctx.market.run(), name="venue-market"),
        asyncio.create_task(_tick_forever(ctx), name="venue-tick"),
    ]
    ready(port)
    try:
        await stop_event.wait()
    finally:
        for kind in ("trading", "market"):
            for ws in list(ctx.websockets.get(kind, ())):
                try:
                    await asyncio.wait_for(ws.close(code=1001, message=b"venue shutting down"), 2.0)
                except Exception:
                    pass
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        ctx.persist()
        if ctx.ledger is not None:
            ctx.ledger.close()
            ctx.ledger = None


async def _tick_forever(ctx: VenueContext) -> None:
    while True:
        await asyncio.sleep(TICK_INTERVAL_S)
        try:
            assert ctx.exchange is not None
            ctx.exchange.tick()
            ctx.persist()
        except Exception:
            log.exception("exchange tick failed")


def start_venue(config: VenueConfig, faults: Faults | None = None, start_timeout: float = 30.0) -> VenueHandle:
    """Start the venue on a daemon thread; returns once it is listening."""
    started = threading.Event()
    result: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            ctx = build_context(config, faults)
            result["ctx"] = ctx
            stop_event = asyncio.Event()
            result["stop_event"] = stop_event

            def ready(port: int) -> None:
                result["port"] = port
                started.set()

            loop.run_until_complete(_serve(ctx, ready, stop_event))
        except BaseException as exc:  # reported to the starting thread
            result["error"] = exc
            log.exception("venue failed")
        finally:
            ctx_ = result.get("ctx")
            if ctx_ is not None and ctx_.ledger is not None:
                ctx_.ledger.close()
                ctx_.ledger = None
            started.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    thread = threading.Thread(target=main, name="venue", daemon=True)
    thread.start()
    if not started.wait(start_timeout):
        raise RuntimeError(f"venue did not start within {start_timeout}s")
    if "error" in result:
        raise RuntimeError(f"venue failed to start: {result['error']!r}") from result["error"]
    host = config.host if config.host not in ("0.0.0.0", "") else "127.0.0.1"
    return VenueHandle(result["ctx"], loop, thread, host, result["port"], result["stop_event"], tls=config.tls_enabled)


def serve_forever(
    config: VenueConfig, faults: Faults | None = None, on_ready: Callable[[VenueHandle], None] | None = None
) -> None:
    """Run the venue until SIGINT or SIGTERM (call from the main thread)."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        handle = start_venue(config, faults)
        try:
            if on_ready is not None:
                on_ready(handle)
            while not stop.wait(0.5):
                if not handle.thread.is_alive():
                    raise RuntimeError("venue thread ended unexpectedly")
        finally:
            handle.stop()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
