"""Crossover: the EMA(12)/EMA(26) crossover strategy of the peer backtest benchmark, as an actor.

NautilusTrader's `EMACross` example, stockade's way: one actor per symbol
(`crossover:SYM`), evaluated on every quote's mid. When the fast EMA
crosses above the slow one while flat it proposes a buy; on the cross
below, while long, a sell to flat. Proposals go to the risk guard, so the
orders take the same path as the ensemble's (risk rules, sizing, order
manager, broker). With `extras["crossover_signals_only"]` it only counts
crossings (the benchmark's signals-only figure). Not part of the daemon's
tree: `python run.py bench` runs it in a backtest.
"""

from __future__ import annotations

from stockade.actors import names
from stockade.codecs.messages import Proposal, Quote, Side
from stockade.supervisors.base import StockadeActor, handles
from stockade.trading.indicators import EMA

FAST, SLOW = 12, 26


def crossover_name(symbol: str) -> str:
    return f"crossover:{symbol}"


class Crossover(StockadeActor):
    def setup(self) -> None:
        self.symbol = self.name.split(":", 1)[1]
        self.fast, self.slow = EMA(FAST), EMA(SLOW)
        self.above: bool | None = None  # fast above slow at the last quote
        self.long = False
        self.signals = 0
        self.signals_only = bool(self.ctx.extras.get("crossover_signals_only", False))

    @handles(Quote)
    def on_quote(self, q: Quote) -> None:
        mid = (q.bid + q.ask) * 0.5
        fast, slow = self.fast.update(mid), self.slow.update(mid)
        if fast is None or slow is None:
            return
        above = fast > slow
        crossed = self.above is not None and above != self.above
        self.above = above
        if not crossed:
            return
        side: Side
        if above and not self.long:
            side = "buy"
        elif not above and self.long:
            side = "sell"
        else:
            return
        self.signals += 1
        self.long = side == "buy"
        if self.signals_only:
            return
        self.tell(
            names.RISK_GUARD,
            Proposal(
                proposal_id=self.clock.new_id(),
                symbol=self.symbol,
                side=side,
                score=1.0 if above else -1.0,
                confidence=1.0,
                price=mid,
                bid=q.bid,
                ask=q.ask,
                quote_ts_ns=q.ts_ns,
                quote_recv_ns=q.recv_ns,
                models=("ema_cross",),
            ),
        )
