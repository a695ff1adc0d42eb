"""Analyzer: one per symbol. Incremental indicators, rule strategies, trained models.

On start it warms its indicators from historical bars (REST), so a restarted
analyzer is useful at once; if the data API is down it starts cold and tries
the warm-up again later rather than crash-looping. Each quote updates the
features in O(1); every `evaluate_every_s` the rule strategies and the
trained models (`[models]`, onnxruntime) vote, one `Vote` per member, all in
one `Votes` message to the ensemble voter. The models run as one onnxruntime call per evaluation (their
graphs merged side by side, trading/model_panel.py), each member still voting
its own P(up). Every vote of one evaluation carries the batch size and the
symbol's volatility regime.

A trained model that is corrupt or does not match this code's features is
refused at start (one error in the log and an alert per process, not per
analyzer); the analyzer then votes with the rule strategies and whatever
models did load. Sessions are shared process-wide (trading/model_store.py),
so only the first analyzer pays the load. A model failing at run time fails
the merged call: the members are then run one by one to find it, it leaves
the ensemble, and the others are merged again; a merged call that fails
while every member runs alone is given up (one WARNING), not retried each time.

The model set is the lifecycle's champion when there is one
(actors/model_sets.py); `SwapModels` from the model keeper replaces it whole
between two evaluations. With `[models] lifecycle` on, each evaluation's
model input and output go to the keeper (`ModelEvaluation`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from stockade.actors import names, ticks
from stockade.actors.model_sets import serving_set
from stockade.actors.services import Services
from stockade.broker.rest import data_feed, redact
from stockade.broker.warmup_bars import WarmupBars
from stockade.codecs.messages import Alert, ModelEvaluation, Quote, SwapModels, Tick, Trade, Vote, Votes
from stockade.codecs.records import ModelSetRecord
from stockade.config import paths
from stockade.config.settings import Settings
from stockade.supervisors.base import handles
from stockade.supervisors.pool import PooledActor
from stockade.trading.feature_vector import vector
from stockade.trading.features import FeatureState
from stockade.trading.model_member import ModelMember, signal_from_probability
from stockade.trading.model_panel import panel_of
from stockade.trading.model_store import (
    ModelError,
    first_report,
    load_models,
    resolve_dir,
)
from stockade.trading.regime import classify
from stockade.trading.strategies import Signal, build_strategies

log = logging.getLogger(__name__)

WARMUP_RETRY_S = 30.0
WARMUP_EXTRA = "warmup_bars"  # ctx.extras key of the tree's shared `WarmupBars`


def warmup_bar_count(settings: Settings) -> int:
    """How many one-minute bars an analyzer warms up from: `[trading] warmup_bars`, or more if an indicator needs it."""
    return max(settings.trading.warmup_bars, settings.analyzer.to_params().warmup_bars)


def load_members(
    settings: Settings, data_dir: Path | None, folder: Path | None = None, names: tuple[str, ...] | None = None
) -> tuple[list[ModelMember], list[ModelError]]:
    """The trained models `[models]` asks for (or `names` of `folder`), and an error per refused one."""
    m = settings.models
    if not m.enabled:
        return [], []
    if folder is None:
        folder = resolve_dir(m.dir, paths.models_dir(data_dir) if data_dir is not None else None)
    loaded, errors = load_models(folder, m.names if names is None else names, settings.analyzer.to_params())
    return [ModelMember(x) for x in loaded], errors


class Analyzer(PooledActor):  # one per symbol: they share [runtime] analyzer_threads threads
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        self.symbol = self.name.split(":", 1)[1]
        a = self.svc.settings.analyzer
        self.params = a.to_params()
        self.features = FeatureState(self.symbol, self.params)
        self.regime = a.regime_params()
        rule_params = {"mean_reversion": {"rsi_oversold": a.rsi_oversold, "rsi_overbought": a.rsi_overbought}}
        self.models = list(zip(a.strategies, build_strategies(a.strategies, rule_params), strict=True))
        data_dir = self.ctx.extra("data_dir")
        # The model lifecycle's champion when there is one (actors/model_sets.py).
        self.model_set = serving_set(self.svc.settings, self.svc.store, Path(data_dir) if data_dir else None)
        self.members, errors = load_members(
            self.svc.settings, None, Path(self.model_set.folder), self.model_set.names or None
        )
        self.report_models = self.svc.settings.models.lifecycle and bool(self.ctx.extras.get("model_keeper"))
        for error in errors:
            self._refused(error)
        self.panel = panel_of([m.model for m in self.members])
        self.evaluate_every_ns = int(a.evaluate_every_s * 1e9)
        self.last_eval_ns = 0
        self.warm = self.warm_up()
        if not self.warm:
            self.every(WARMUP_RETRY_S, ticks.WARMUP)
        self.every(5.0, ticks.ROLL)

    def warm_up(self) -> bool:
        """Load the last `warmup_bars` one-minute bars; False if the data API failed."""
        # The tree's shared fetcher asks for many symbols per request (broker/warmup_bars.py).
        history = self.ctx.extras.get(WARMUP_EXTRA)
        if not isinstance(history, WarmupBars):
            n = warmup_bar_count(self.svc.settings)
            feed = data_feed(self.svc.settings.alpaca.feed)  # the tree's fetcher too: REST serves no "test" feed
            history = WarmupBars(lambda: self.svc.broker.data_client(raw_data=True), [self.symbol], n, feed)
        try:
            data = history.bars(self.symbol, self.clock.now_ns())
        except Exception as exc:  # any data API failure means "start cold, retry later"
            log.warning("%s: warm-up from historical bars failed (%s); starting cold", self.name, redact(exc))
            return False
        used = self.features.warm_up(data)
        log.info("%s: warmed up from %d historical bars (ready=%s)", self.name, used, self.features.ready)
        return True

    @handles(Quote)
    def on_quote(self, quote: Quote) -> None:
        self.features.on_quote(quote)
        # Paced on the quotes' own time (what a backtest's clock reads), not on
        # when this handler runs: live, the pipeline's latency and jitter would
        # decide which quote of a regular feed is evaluated. A wall clock set
        # back (negative gap) evaluates rather than going quiet until it catches up.
        now = max(quote.ts_ns, quote.recv_ns)
        if 0 <= now - self.last_eval_ns < self.evaluate_every_ns:
            return
        self.last_eval_ns = now
        f = self.features.features()
        if f is None or not self.features.ready:
            return
        signals = [(model, strategy.evaluate(f)) for model, strategy in self.models]
        if self.members or self.report_models:
            x = vector(f)
            model_signals = self._model_signals(x) if self.members else []
            signals.extend(model_signals)
            if self.report_models and x is not None:
                self._report_models(x, model_signals, f.price, quote.recv_ns)
        high_volatility = classify(f, self.regime).high_volatility
        symbol, price, atr, n = self.symbol, f.price, f.atr or 0.0, len(signals)
        ts, recv, bid, ask = quote.ts_ns, quote.recv_ns, quote.bid, quote.ask
        # One message for the whole evaluation: one hop to the voter, not one per member.
        self.tell(
            names.ENSEMBLE_VOTER,
            Votes(
                symbol,
                tuple(
                    Vote(
                        symbol,
                        model,
                        s.direction,
                        s.confidence,
                        price,
                        ts,
                        recv,
                        bid,
                        ask,
                        batch_size=n,
                        high_volatility=high_volatility,
                        atr=atr,
                    )
                    for model, s in signals
                ),
            ),
        )

    def _model_signals(self, x: Any) -> list[tuple[str, Signal]]:
        """Each member's signal for the feature vector `x`: one merged call when it can."""
        merged_error = ""
        if self.panel is not None:
            try:
                return [
                    (name, signal_from_probability(p))
                    for name, p in zip(self.panel.names, self.panel.p_up(x), strict=True)
                ]
            except Exception as exc:  # one member failing fails the merged call: find it below
                merged_error = str(exc).splitlines()[0][:300] if str(exc) else repr(exc)
        signals: list[tuple[str, Signal]] = []
        failed = False
        for member in list(self.members):
            try:
                signals.append((member.name, member.evaluate(x)))
            except Exception as exc:  # a failing model leaves the ensemble, not the analyzer
                failed = True
                self.members.remove(member)
                self._refused(ModelError(member.model.path, f"failed to run: {exc}"))
                self.panel = panel_of([m.model for m in self.members])
        if merged_error and not failed and self.panel is not None:
            # Every member ran alone: the merged graph itself fails. Not tried
            # again at every evaluation (a failed call, then all of them alone).
            log.warning(
                "%s: the merged model call fails (%s) while each member runs alone; running them "
                "one by one from now on",
                self.name,
                merged_error,
            )
            self.panel = None
        return signals

    # ---- hot swap (the model keeper, actors/model_keeper.py) ------------------------

    @handles(SwapModels)
    def on_swap_models(self, msg: SwapModels) -> None:
        """Vote with the set `msg` names from the next evaluation on: all of it or none of it.

        A handler runs between two quotes on this actor's thread, so every
        evaluation sees one complete set. The keeper has loaded and verified
        the set already (sessions and the merged panel are cached process-wide),
        so this is quick; a set that does not load complete here is refused and
        the old one keeps voting.
        """
        if msg.set_id == self.model_set.set_id:
            return
        members, errors = load_members(self.svc.settings, None, Path(msg.folder), msg.names)
        if errors or sorted(m.name for m in members) != sorted(msg.names):
            log.error(
                "%s: model set %s refused (%s); the old set %s keeps voting",
                self.name,
                msg.set_id,
                errors[0] if errors else f"loaded {[m.name for m in members]}, expected {list(msg.names)}",
                self.model_set.set_id,
            )
            return
        panel = panel_of([m.model for m in members])
        self.members, self.panel = members, panel
        self.model_set = ModelSetRecord(set_id=msg.set_id, folder=msg.folder, names=msg.names, created_ns=0)
        log.info("%s: now voting with model set %s", self.name, msg.set_id)

    def _report_models(self, x: Any, signals: list[tuple[str, Signal]], price: float, recv_ns: int) -> None:
        sha = {m.name: m.model.entry.sha256 for m in self.members}
        self.tell(
            names.MODEL_KEEPER,
            ModelEvaluation(
                symbol=self.symbol,
                set_id=self.model_set.set_id,
                members=tuple(name for name, _ in signals),
                models=tuple(sha.get(name, "") for name, _ in signals),
                p_up=tuple(0.5 + s.direction * s.confidence / 2 for _, s in signals),
                x=tuple(x.tolist()),
                price=price,
                quote_recv_ns=recv_ns,
            ),
        )

    @handles(Trade)
    def on_trade(self, trade: Trade) -> None:
        # Live bars count traded shares, like the history bars they continue.
        self.features.on_trade(trade.price, trade.size, trade.ts_ns)

    def _refused(self, error: ModelError) -> None:
        if first_report(error):
            log.error("%s; trading on without it (rule strategies and the other models)", error)
            self.tell(
                names.ALERTER,
                Alert(
                    "WARNING",
                    f"model-refused:{error.path}",
                    f"{error}. Trading goes on without it.",
                    self.name,
                    self.clock.now_ns(),
                ),
            )
        else:
            log.debug("%s: %s", self.name, error)

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what == ticks.ROLL:
            self.features.roll(self.clock.now_ns())
        elif tick.what == ticks.WARMUP and not self.warm:
            self.warm = self.warm_up()
            if self.warm:
                self.cancel_timer(ticks.WARMUP)
