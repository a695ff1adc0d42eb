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
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stockade.actors import names, ticks
from stockade.actors.services import Services
from stockade.broker.rest import data_feed, redact
from stockade.codecs.messages import Alert, Bar, Quote, Tick, Trade, Vote, Votes
from stockade.config import paths
from stockade.config.settings import AnalyzerSettings, Settings
from stockade.supervisors.base import StockadeActor, handles
from stockade.trading.feature_vector import vector
from stockade.trading.features import FeatureParams, FeatureState
from stockade.trading.model_member import ModelMember, signal_from_probability
from stockade.trading.model_panel import panel_of
from stockade.trading.model_store import (
    ModelError,
    first_report,
    load_models,
    resolve_dir,
)
from stockade.trading.regime import RegimeParams, classify
from stockade.trading.strategies import Signal, build_strategies

log = logging.getLogger(__name__)

WARMUP_RETRY_S = 30.0


def feature_params(a: AnalyzerSettings) -> FeatureParams:
    """The indicator periods `[analyzer]` asks for: what the analyzer computes, what
    `train` builds rows with, and what the settings check counts warm-up on."""
    return FeatureParams.from_analyzer(a)


def load_members(settings: Settings, data_dir: Path | None) -> tuple[list[ModelMember], list[ModelError]]:
    """The trained models `[models]` asks for, and an error per refused one."""
    m = settings.models
    if not m.enabled:
        return [], []
    folder = resolve_dir(m.dir, paths.models_dir(data_dir) if data_dir is not None else None)
    loaded, errors = load_models(folder, m.names, feature_params(settings.analyzer))
    return [ModelMember(x) for x in loaded], errors


class Analyzer(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        self.symbol = self.name.split(":", 1)[1]
        a = self.svc.settings.analyzer
        self.params = feature_params(a)
        self.features = FeatureState(self.symbol, self.params)
        self.regime = RegimeParams(
            max_volatility=a.high_vol_bar_pct / 100,
            max_atr_to_price=a.high_vol_atr_pct / 100,
            max_drop=a.high_vol_drop_pct / 100,
        )
        rule_params = {"mean_reversion": {"rsi_oversold": a.rsi_oversold, "rsi_overbought": a.rsi_overbought}}
        self.models = list(zip(a.strategies, build_strategies(a.strategies, rule_params), strict=True))
        data_dir = self.ctx.extra("data_dir")
        self.members, errors = load_members(self.svc.settings, Path(data_dir) if data_dir else None)
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
        from alpaca.common.enums import Sort
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame

        n = max(self.svc.settings.trading.warmup_bars, self.params.warmup_bars)
        try:
            client = self.svc.broker.data_client()
            end = datetime.fromtimestamp(self.clock.now_ns() / 1e9, UTC)
            request = StockBarsRequest(
                symbol_or_symbols=self.symbol,
                timeframe=TimeFrame.Minute,
                start=end - timedelta(days=5),
                end=end,
                limit=n,
                feed=data_feed(self.svc.settings.alpaca.feed),
                sort=Sort.DESC,
            )
            data = client.get_stock_bars(request).data.get(self.symbol, [])
        except Exception as exc:  # any data API failure means "start cold, retry later"
            log.warning("%s: warm-up from historical bars failed (%s); starting cold", self.name, redact(exc))
            return False
        bars = [
            Bar(self.symbol, b.open, b.high, b.low, b.close, b.volume, int(b.timestamp.timestamp() * 1e9)) for b in data
        ]
        used = self.features.warm_up(bars)
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
        if self.members:
            signals.extend(self._model_signals(vector(f)))
        high_volatility = classify(f, self.regime).high_volatility
        # One message for the whole evaluation: one hop to the voter, not one per member.
        self.tell(
            names.ENSEMBLE_VOTER,
            Votes(
                self.symbol,
                tuple(
                    Vote(
                        self.symbol,
                        model,
                        signal.direction,
                        signal.confidence,
                        f.price,
                        quote.ts_ns,
                        quote.recv_ns,
                        quote.bid,
                        quote.ask,
                        batch_size=len(signals),
                        high_volatility=high_volatility,
                        atr=f.atr or 0.0,
                    )
                    for model, signal in signals
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
