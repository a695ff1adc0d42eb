"""Analyzer: one per symbol. Incremental indicators and the rule strategies.

On start it warms its indicators from historical bars (REST), so a restarted
analyzer is useful at once; if the data API is down it starts cold and tries
the warm-up again later rather than crash-looping. Each quote updates the
features in O(1); every `evaluate_every_s` the strategies vote, one `Vote`
per model, to the ensemble voter.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

from stockade.actors.base import StockadeActor, handles
from stockade.actors.services import Services
from stockade.broker.rest import redact
from stockade.codecs.messages import Bar, Quote, Tick, Vote
from stockade.quant.features import FeatureParams, FeatureState
from stockade.quant.strategies import build_strategies

log = logging.getLogger(__name__)

WARMUP_RETRY_S = 30.0


class Analyzer(StockadeActor):
    def setup(self) -> None:
        self.svc: Services = self.ctx.extra("services")
        self.symbol = self.name.split(":", 1)[1]
        a = self.svc.settings.analyzer
        self.params = FeatureParams(
            sma_fast=a.sma_fast, sma_slow=a.sma_slow, ema_fast=a.ema_fast, ema_slow=a.ema_slow, rsi=a.rsi,
            macd_fast=a.ema_fast, macd_slow=a.ema_slow, macd_signal=a.macd_signal, bb_period=a.bb_period,
            bb_k=a.bb_k, volume_period=a.volume_n, breakout_period=a.breakout_n,
        )
        self.features = FeatureState(self.symbol, self.params)
        self.models = [(name, strategy) for name, strategy in zip(a.strategies, build_strategies(a.strategies))]
        self.evaluate_every_ns = int(a.evaluate_every_s * 1e9)
        self.last_eval_ns = 0
        self.warm = self.warm_up()
        if not self.warm:
            self.every(WARMUP_RETRY_S, "warmup")
        self.every(5.0, "roll")

    def warm_up(self) -> bool:
        """Load the last `warmup_bars` one-minute bars; False if the data API failed."""
        from alpaca.common.enums import Sort
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame

        n = max(self.svc.settings.trading.warmup_bars, self.params.warmup_bars)
        try:
            client = self.svc.broker.data_client()
            end = datetime.now(timezone.utc)
            request = StockBarsRequest(
                symbol_or_symbols=self.symbol, timeframe=TimeFrame.Minute, start=end - timedelta(days=5), end=end,
                limit=n, feed=self.svc.settings.alpaca.feed, sort=Sort.DESC,
            )
            data = client.get_stock_bars(request).data.get(self.symbol, [])
        except Exception as exc:
            log.warning("%s: warm-up from historical bars failed (%s); starting cold", self.name, redact(exc))
            return False
        bars = [
            Bar(self.symbol, b.open, b.high, b.low, b.close, b.volume, int(b.timestamp.timestamp() * 1e9))
            for b in data
        ]
        used = self.features.warm_up(bars)
        log.info("%s: warmed up from %d historical bars (ready=%s)", self.name, used, self.features.ready)
        return True

    @handles(Quote)
    def on_quote(self, quote: Quote) -> None:
        self.features.on_quote(quote)
        now = time.monotonic_ns()
        if now - self.last_eval_ns < self.evaluate_every_ns:
            return
        self.last_eval_ns = now
        f = self.features.features()
        if f is None or not self.features.ready:
            return
        for model, strategy in self.models:
            signal = strategy.evaluate(f)
            self.tell(
                "ensemble_voter",
                Vote(self.symbol, model, signal.direction, signal.confidence, f.price, quote.ts_ns, quote.recv_ns,
                     quote.bid, quote.ask),
            )

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        if tick.what == "roll":
            self.features.roll(time.time_ns())
        elif tick.what == "warmup" and not self.warm:
            self.warm = self.warm_up()
            if self.warm:
                self.cancel_timer("warmup")
