"""`python run.py backtest`: replay history through the live actors, deterministically.

How (see docs/BACKTEST.md for the longer story):
- the actor classes are the daemon's own (analyzers, ensemble voter, risk
  guard, order manager, reconciler, emergency stop), constructed with a
  context whose clock is a `SimClock` and run by a `CallingThreadDispatcher`:
  one FIFO of envelopes, handled on this thread, in one order;
- the data drives the clock: before each event the clock moves to its time,
  firing the actors' timers (reconcile passes, bar rolls, ...) at their own
  simulated times on the way;
- orders go through the real alpaca-py clients to the venue's matching engine
  in-process (`venue/inprocess.py`); an order is matched on its symbol's next
  quote, widened by `backtest.slippage_bps`; commission is debited per share;
- records land in `--out` in the daemon's storage format, so
  `python run.py report --data-dir OUT` reads a backtest like a live run.

Same data, settings and seed give byte-identical records: every id comes from
the seeded clock, every time from the data, every handler runs in FIFO order.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from stockade.config.settings import Settings, SettingsError, load_settings
from stockade.ops.backtest_data import BadInput, Day, FileSource, SimSource

if TYPE_CHECKING:  # the venue is imported when a run starts
    from stockade.venue.clock import ClockMode
    from stockade.venue.inprocess import InProcessVenue

log = logging.getLogger(__name__)

_SYMBOL = re.compile(r"[A-Z][A-Z0-9.]{0,9}\Z")
SENDER = "backtest"
PRICE_SAMPLE_NS = 300 * 1_000_000_000
PROGRESS_EVERY = 5_000
BATCH_EVENTS = 5_000  # events per storage transaction (see Engine.replay)


class BacktestArgs(msgspec.Struct, frozen=True, kw_only=True):
    """What a run was asked to do (kept in the out dir with the results)."""

    start: str
    end: str
    symbols: tuple[str, ...]
    source: str
    file: str | None
    seed: int


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python run.py backtest", description="Replay history through the live actors on a simulated clock."
    )
    p.add_argument("--settings", help="settings file (partial allowed)")
    p.add_argument("--data-dir", help="where trained models are read from (default: $STATE_DIRECTORY or ./var)")
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD (exchange time)")
    p.add_argument("--end", required=True, help="last date, YYYY-MM-DD (inclusive)")
    p.add_argument("--symbols", help="comma-separated symbols (default: trading.symbols, or the file's)")
    p.add_argument("--source", choices=("sim", "file", "alpaca"), default="sim", help="market data (default: sim)")
    p.add_argument("--file", help="CSV/Parquet of bars or quotes, for --source file")
    p.add_argument("--seed", type=int, default=None, help="market and id seed (default: venue.seed)")
    p.add_argument("--out", default="backtest-out", help="results dir (created; must not hold an earlier run)")
    p.add_argument(
        "--walk-forward",
        type=int,
        metavar="K",
        help="K folds: train the models on each window with `train`'s code, test on the next",
    )
    p.add_argument("--ray", metavar="auto|ADDRESS", help="with --walk-forward: run the folds on Ray ([cluster] extra)")
    p.add_argument("--workers", type=int, help="with --walk-forward: local worker processes for the folds")
    return p.parse_args(argv)


def _date(text: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{flag} = {text!r}: not a date (YYYY-MM-DD)") from None


def _symbols(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    out = tuple(dict.fromkeys(s.strip().upper() for s in text.split(",") if s.strip()))
    if not out:
        raise BadInput(f"--symbols = {text!r}: no symbol given")
    for s in out:
        if not _SYMBOL.match(s):
            raise BadInput(f"--symbols: {s!r} is not a ticker symbol")
    return out


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from stockade.ops.workers import Bar, ClusterLost, WorkersError, backend_from_args

    try:
        settings = load_settings(args.settings)
        run = Backtest.prepare(settings, args)
        if (args.ray is not None or args.workers is not None) and args.walk_forward is None:
            raise BadInput("--ray and --workers spread walk-forward folds: give --walk-forward K too")
        backend = backend_from_args(args.ray, args.workers)
    except (SettingsError, BadInput, WorkersError) as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 2
    try:
        if args.walk_forward is not None:
            from stockade.ops.walk_forward import walk_forward

            inline = backend.kind == "inline"
            # In one process the backtest's own bar moves; spread out, one bar counts the folds.
            bar = Bar(args.walk_forward, sys.stderr, "folds")
            bar.enabled = bar.enabled and not inline
            summary = walk_forward(
                run, args.walk_forward, progress=inline and sys.stdout.isatty(), backend=backend, on_fold=bar.update
            )
        else:
            summary = run.run(progress=sys.stdout.isatty())
    except WorkersError as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ClusterLost) else 2
    except BadInput as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, sort_keys=True))
    return 0


class Backtest:
    """One run: its inputs, checked; `run()` replays them."""

    def __init__(
        self, settings: Settings, request: BacktestArgs, source: Any, out: Path, models_dir: str | None
    ) -> None:
        self.settings = settings
        self.request = request
        self.source = source
        self.out = out
        self.models_dir = models_dir

    @classmethod
    def prepare(cls, settings: Settings, args: argparse.Namespace) -> Backtest:
        """Check the arguments (BadInput: one line for the user) and pick the source."""
        from stockade.config import paths

        start, end = _date(args.start, "--start"), _date(args.end, "--end")
        if start > end:
            raise BadInput(f"--start {start} is after --end {end}")
        symbols = _symbols(args.symbols)
        seed = settings.venue.seed if args.seed is None else args.seed
        if args.source == "file":
            if not args.file:
                raise BadInput("--source file needs --file PATH")
            source: Any = FileSource(Path(args.file), symbols, start, end)
            if not source.rows:
                raise BadInput(
                    f"{args.file}: no rows between {start} and {end}"
                    + (f" for {','.join(source.symbols)}" if symbols else "")
                )
        else:
            if args.file:
                raise BadInput(f"--file is only for --source file (source is {args.source})")
            syms = symbols or tuple(settings.trading.symbols)
            if not any(_is_session(start + dt.timedelta(days=i)) for i in range((end - start).days + 1)):
                raise BadInput(f"{start}..{end}: no trading session in that range")
            if args.source == "alpaca":
                source = _alpaca_source(settings, syms, start, end, paths.data_dir(args.data_dir))
            else:
                source = SimSource(syms, seed, start, end)
        if args.walk_forward is not None and args.walk_forward < 1:
            raise BadInput(f"--walk-forward = {args.walk_forward}: must be >= 1 fold")
        out = Path(args.out)
        from stockade.storage.environment import ENV_DIRNAME

        if any((out / name).exists() for name in (ENV_DIRNAME, "backtest.json", "walk_forward.json")):
            raise BadInput(f"--out {out}: already holds a run; give a new directory")
        settings = msgspec.structs.replace(
            settings, trading=msgspec.structs.replace(settings.trading, symbols=tuple(source.symbols))
        )
        request = BacktestArgs(
            start=start.isoformat(),
            end=end.isoformat(),
            symbols=tuple(source.symbols),
            source=args.source,
            file=args.file,
            seed=seed,
        )
        data = paths.data_dir(args.data_dir)
        return cls(settings, request, source, out, str(data))

    def run(
        self,
        progress: bool = False,
        window: tuple[dt.date, dt.date] | None = None,
        out: Path | None = None,
        models_dir: str | None = None,
    ) -> dict[str, Any]:
        """Replay every event (of `window` only, if given); returns the summary (also in OUT/backtest.json)."""
        out = out or self.out
        engine = Engine(
            self.settings,
            self.request.symbols,
            self.request.seed,
            out,
            models_dir or self.models_dir,
            market=getattr(self.source, "market", None),
        )
        b = self.settings.backtest
        started = time.perf_counter()
        bar = Progress(progress)
        fingerprint = hashlib.sha256()
        try:
            for day in self.source.days(b.bar_spread_bps, b.quote_size):
                if window is not None and not window[0].isoformat() <= day.date <= window[1].isoformat():
                    continue
                fingerprint.update(_day_digest(day))
                if bar.enabled:  # a long day (many symbols) still moves the line
                    engine.on_progress = lambda n, d=day: bar.within(d, n, time.perf_counter() - started)
                engine.replay(day.events)
                bar.day(day, engine.events, time.perf_counter() - started)
            if engine.events == 0:
                raise BadInput(f"{self.request.start}..{self.request.end}: no market data in that range")
            result = engine.finish()
            summary = {
                **msgspec.to_builtins(self.request),
                "data_fingerprint": fingerprint.hexdigest(),
                "settings_fingerprint": hashlib.sha256(msgspec.json.encode(self.settings)).hexdigest(),
                **result,
            }
            if window is not None:
                summary.update(start=window[0].isoformat(), end=window[1].isoformat())
            (out / "backtest.json").write_text(json.dumps(summary, sort_keys=True, indent=1) + "\n")
            from stockade.ops.tearsheet import render

            page = render(engine.store, summary, msgspec.to_builtins(self.settings), engine.prices)
            (out / "tearsheet.html").write_text(page)
        finally:
            engine.close()
            bar.done()
        wall = time.perf_counter() - started
        timing = {"wall_s": round(wall, 3), "events_per_s": round(engine.events / wall) if wall > 0 else None}
        return {**summary, **timing, "out": str(out)}


def _alpaca_source(settings: Settings, symbols: tuple[str, ...], start: dt.date, end: dt.date, data_dir: Path) -> Any:
    from stockade.config import secrets as ops_secrets
    from stockade.ops.backtest_data import AlpacaSource

    try:
        keys = ops_secrets.alpaca_keys()
    except ops_secrets.SecretsError as exc:
        raise BadInput(str(exc)) from None
    if keys is None:
        raise BadInput(
            f"--source alpaca needs {ops_secrets.ALPACA_KEY_ID} and {ops_secrets.ALPACA_SECRET_KEY} in the environment"
        )
    from stockade.broker.rest import register_secret

    register_secret(*keys)
    source = AlpacaSource(
        symbols, start, end, keys, settings.alpaca.data_url, settings.alpaca.feed, Path(data_dir) / "backtest-cache"
    )
    if not source.rows:
        raise BadInput(f"--source alpaca: no bars for {','.join(symbols)} between {start} and {end}")
    return source


def _is_session(day: dt.date) -> bool:
    from stockade.venue.clock import is_nyse_trading_day

    return is_nyse_trading_day(day)


def _day_digest(day: Day) -> bytes:
    h = hashlib.sha256()
    for e in day.events:
        h.update(msgspec.msgpack.encode(e))
    return h.digest()


class Progress:
    """A one-line progress bar on a terminal: bars done, simulated date, speed. Silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars = 0

    def day(self, day: Day, events: int, elapsed: float) -> None:
        self.bars += day.bars
        if self.enabled:
            speed = events / elapsed if elapsed > 0 else 0.0
            sys.stdout.write(f"\r{day.date}  {self.bars:>10,} bars  {events:>12,} events  {speed:>10,.0f} events/s")
            sys.stdout.flush()

    def within(self, day: Day, events: int, elapsed: float) -> None:
        """Mid-day: the same line, bars counted as far as the day's share of events."""
        speed = events / elapsed if elapsed > 0 else 0.0
        sys.stdout.write(f"\r{day.date}  {self.bars:>10,} bars+ {events:>12,} events  {speed:>10,.0f} events/s")
        sys.stdout.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stdout.write("\n")
            sys.stdout.flush()


class Engine:
    """The actors, the in-process venue and the simulated clock of one run."""

    def __init__(
        self,
        settings: Settings,
        symbols: tuple[str, ...],
        seed: int,
        out: Path,
        models_dir: str | None,
        market: Any = None,
        strategy: str = "ensemble",
        signals_only: bool = False,
        clock_mode: ClockMode = "nyse",
        batch_writes: bool = True,
    ) -> None:
        from stockade.actors.services import Services
        from stockade.broker.token_bucket import install_shared_bucket
        from stockade.config import paths
        from stockade.ops.backtest_broker import BacktestBroker
        from stockade.storage.store import Store
        from stockade.supervisors.clock import SimClock
        from stockade.supervisors.dispatcher import CallingThreadDispatcher
        from stockade.supervisors.faults import FaultInjector
        from stockade.venue.inprocess import InProcessVenue

        self.settings = settings
        self.symbols = symbols
        self.clock: SimClock | None = None
        self.seed = seed
        self.out = paths.ensure_private_dir(out)
        # No fsync per "durable" commit: a backtest that dies is rerun from its
        # data; the records are synced once, at the end (`close` syncs the store).
        self.store = Store.open(self.out, sync_durable=False)
        self.models_dir = models_dir
        self.market = market
        self.strategy = strategy  # "ensemble" (the daemon's analyzers and voter) or "crossover" (the bench's)
        self.signals_only = signals_only
        self.batch_writes = batch_writes  # False: one storage transaction per write, as live (a test compares)
        self.clock_mode = clock_mode  # the venue's market hours: "nyse" for history, "always_open" as the default venue
        self.events = 0
        # Called with the events done so far, every PROGRESS_EVERY events.
        self.on_progress: Callable[[int], object] | None = None
        self.dispatcher = CallingThreadDispatcher()
        self._started = False
        self._make = (Services, BacktestBroker, InProcessVenue, SimClock, FaultInjector, install_shared_bucket)
        self.venue: InProcessVenue | None = None
        self.svc: Any = None
        b = settings.backtest
        self._slip = b.slippage_bps / 10_000.0
        self.commission = 0.0
        # Each symbol's mid every PRICE_SAMPLE_NS of simulated time, for the tearsheet's charts.
        self.prices: dict[str, list[tuple[int, float]]] = {s: [] for s in symbols}
        self._sampled: dict[str, int] = {s: 0 for s in symbols}

    def start(self, first_ns: int) -> None:
        """Build the venue and start the actors now, as at `first_ns` (a no-op once started).

        `replay` does it at its first event anyway; the bench calls it first so its
        clock times the replay, not the one-time start (imports, clients, warm-up)."""
        if not self._started:
            self._start(first_ns)

    def _start(self, first_ns: int) -> None:
        """Build the venue and start the actors just before the first event (warm-up sees only the past)."""
        from stockade.actors import names
        from stockade.actors.alerter import Alerter
        from stockade.actors.analyzer import Analyzer
        from stockade.actors.emergency_stop import EmergencyStop
        from stockade.actors.ensemble_voter import EnsembleVoter
        from stockade.actors.order_manager import OrderManager
        from stockade.actors.quote_streamer import analyzer_name
        from stockade.actors.reconciler import Reconciler
        from stockade.actors.risk_guard import RiskGuard
        from stockade.supervisors.context import ActorContext

        Services, BacktestBroker, InProcessVenue, SimClock, FaultInjector, install_shared_bucket = self._make
        s = self.settings
        clock = self.clock = SimClock(first_ns - 1, self.seed)
        ids = SimClock(0, self.seed ^ 0xF111)  # the venue's own id stream, apart from the actors'

        def venue_id() -> str:
            h = ids.new_id()
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

        if hasattr(self.market, "bind_clock"):
            self.market.bind_clock(clock.now_ns)
        self.venue = InProcessVenue(
            self.symbols,
            clock.now_ns,
            market=self.market,
            initial_cash=s.venue.initial_cash,
            seed=self.seed,
            new_id=venue_id,
            clock_mode=self.clock_mode,
        )
        self.venue.subscribe_events(self._charge_commission)
        broker = BacktestBroker.for_venue(self.venue, key=f"BACKTEST-{id(self):x}")
        install_shared_bucket(
            broker.key,
            s.orders.rate_limit_per_min,
            s.orders.emergency_reserve,
            clock.monotonic,
            s.orders.protect_reserve,
        )
        from stockade.ops.backtest_alerts import BacktestAlerting

        self.svc = Services(settings=s, store=self.store, broker=broker, faults=FaultInjector(), clock=clock)
        # Alerts are recorded in the out dir, never delivered (ops/backtest_alerts.py).
        self.svc.alerting = BacktestAlerting(self.out, clock.monotonic)
        self.svc.started_ns = clock.now_ns()
        router = self.dispatcher.router
        extras = {"services": self.svc, "data_dir": self.models_dir, "crossover_signals_only": self.signals_only}
        # The tree's start order (actors/tree.py), without supervisors.
        children: list[tuple[str, Any]] = [
            (names.EMERGENCY_STOP, EmergencyStop),
            (names.ALERTER, Alerter),
            (names.ORDER_MANAGER, OrderManager),
            (names.RECONCILER, Reconciler),
            (names.RISK_GUARD, RiskGuard),
        ]
        if self.strategy == "crossover":
            from stockade.actors.crossover import Crossover, crossover_name

            per_symbol = {sym: crossover_name(sym) for sym in self.symbols}
            children += [(per_symbol[sym], Crossover) for sym in self.symbols]
        else:
            per_symbol = {sym: analyzer_name(sym) for sym in self.symbols}
            children += [(per_symbol[sym], Analyzer) for sym in self.symbols]
            children.append((names.ENSEMBLE_VOTER, EnsembleVoter))
        # The alerter's data dir is the out dir (its records go there); the others' the models'.
        alerter_extras = {**extras, "data_dir": str(self.out)}
        for name, cls in children:
            ctx = ActorContext(
                name=name,
                generation=0,
                router=router,
                notify=lambda e: None,
                extras=alerter_extras if name == names.ALERTER else extras,
                clock=clock,
            )
            self.dispatcher.spawn(cls, ctx)
            self.dispatcher.run_until_idle()
        self._analyzer = per_symbol
        self._started = True

    def _charge_commission(self, event: Any) -> None:
        per_share = self.settings.backtest.commission_per_share
        if per_share > 0 and event.execution_id is not None and event.qty:
            fee = per_share * event.qty
            assert self.venue is not None  # it calls us
            self.venue.exchange.account.cash -= fee
            self.commission += fee

    def replay(self, events: list[Any]) -> None:
        """Feed one day's events: clock, venue (fills for earlier orders), then the analyzers."""
        if not events:
            return
        if not self._started:
            self._start(events[0].ts_ns)
        # One storage transaction per BATCH_EVENTS events, not one per record
        # (storage/environment.py `batched`): the actors read what they wrote
        # as before; the file is committed at each batch's end.
        for first in range(0, len(events), BATCH_EVENTS):
            with self.store.env.batched() if self.batch_writes else contextlib.nullcontext():
                self._replay(events[first : first + BATCH_EVENTS], self.events + first)
        self.events += len(events)

    def _replay(self, events: list[Any], done: int) -> None:
        clock = self.clock
        assert clock is not None
        settle = self.dispatcher.run_until_idle
        route = self.dispatcher.router.tell
        venue = self.venue
        assert venue is not None  # made by _start
        slip = self._slip
        from stockade.codecs.messages import Quote

        progress = self.on_progress
        for i, event in enumerate(events):
            if progress is not None and (done + i) % PROGRESS_EVERY == 0:
                progress(done + i)
            # The time the event reached us: a recorded live feed replays with its own latency.
            clock.advance_to(max(event.ts_ns, event.recv_ns), settle)
            if type(event) is Quote:
                if event.ts_ns - self._sampled[event.symbol] >= PRICE_SAMPLE_NS:
                    self._sampled[event.symbol] = event.ts_ns
                    self.prices[event.symbol].append((event.ts_ns, (event.bid + event.ask) / 2))
                if slip:
                    venue.on_quote(
                        Quote(
                            event.symbol,
                            event.bid * (1 - slip),
                            event.ask * (1 + slip),
                            event.bid_size,
                            event.ask_size,
                            event.ts_ns,
                            event.recv_ns,
                        )
                    )
                else:
                    venue.on_quote(event)
                settle()
            route(self._analyzer[event.symbol], event, SENDER)
            settle()

    def finish(self) -> dict[str, Any]:
        """One last reconcile pass at the end time, then the run's figures."""
        from stockade.actors import names, ticks
        from stockade.codecs.messages import Tick

        if self._started:
            self.dispatcher.router.tell(names.RECONCILER, Tick(ticks.RECONCILE), SENDER)
            self.dispatcher.run_until_idle()
        ex = self.venue.exchange if self.venue is not None else None
        view = ex.account_view() if ex is not None else None
        with self.store.read() as txn:
            orders = sum(1 for _ in self.store.orders.keys(txn=txn))
            fills = sum(1 for _ in self.store.fills.keys(txn=txn))
        return {
            "events": self.events,
            "messages": self.dispatcher.handled,
            "orders": orders,
            "fills": fills,
            "final_equity": round(view.equity, 2) if view is not None else None,
            "commission": round(self.commission, 2),
        }

    def close(self) -> None:
        try:
            if self._started:
                self.dispatcher.stop_all()
        finally:
            self.store.close()


def records(out: str | Path) -> list[tuple[bytes, bytes, bytes]]:
    """Every stored record of a run, as (table, key, value) bytes in storage order.

    What "byte-identical records" means: two runs with the same data, settings
    and seed give equal lists (the lmdb file itself is then equal too).
    """
    import lmdb

    from stockade.storage.environment import DEFAULT_MAX_DBS, ENV_DIRNAME

    env = lmdb.open(str(Path(out) / ENV_DIRNAME), readonly=True, lock=False, max_dbs=DEFAULT_MAX_DBS)
    try:
        with env.begin() as txn:
            keys = [k for k, _ in txn.cursor()]
        out_rows: list[tuple[bytes, bytes, bytes]] = []
        for name in keys:
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                out_rows.extend((name, bytes(k), bytes(v)) for k, v in txn.cursor())
        return out_rows
    finally:
        env.close()
