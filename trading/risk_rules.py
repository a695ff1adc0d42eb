"""Risk rules: pure checks, each with a reason a human understands.

Every rule is a function returning `RuleResult(ok, rule, reason)`.
`evaluate(request, context, limits)` runs all of them (never stopping at
the first failure, so the decision record shows every reason), sizes the
order and prices its bracket, so the RiskGuard actor only gathers the
context and sends the verdict on.

Exposure-reducing orders (opposite side of an existing position) are sized
to close the position, carry no bracket, and pass the rules that exist to
limit new exposure (spread, price range, position, sector and risk limits,
daily loss, breakers, order rate, in-flight entry, close window, day-trade
budget): an operator who says REDUCING, or a losing day, must still be able
to get out. Trading state, market clock and stale quote apply to every order.

Two breakers, distinct on purpose: the *failure breaker* pauses entries
after consecutive order failures (a broken order path); the *loss breaker*
(`rule_loss_breaker`) fires at a loss from start-of-day equity, and the
RiskGuard answers it with a full liquidation through EmergencyStop.

Extended hours (`extended_hours`, off by default): in the broker's
pre-market (04:00-09:30 New York) and after-hours (16:00-20:00; 17:00 after
an early close) sessions an order is a marketable day limit with
`extended_hours=true`, since Alpaca accepts only limit orders then and no
bracket/OCO classes. An entry is sized against the usual stop distance but
carries no legs: the reconciler gives the filled position a protective stop,
which Alpaca holds until the next regular open (stop orders do not trigger
outside regular hours), so an extended-hours entry is unprotected until the
open. Turn it on only knowing that.

Percentages are in percent (2.0 = 2 %).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

import msgspec

from stockade.codecs.messages import AccountSnapshot, Position, Proposal
from stockade.config.params import RiskLimits
from stockade.trading.brackets import BracketParams, bracket_prices, round_price
from stockade.trading.pdt import DayTradeStatus
from stockade.trading.sizing import confidence_scale, position_size, volatility_scale

Side = Literal["buy", "sell"]
TradingState = Literal["ACTIVE", "REDUCING", "HALTED"]


class RuleResult(msgspec.Struct, frozen=True):
    ok: bool
    rule: str
    reason: str


class BreakerStatus(msgspec.Struct, frozen=True):
    tripped: bool
    reason: str = ""
    until_ns: int = 0


class RiskRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What risk needs from a proposal."""

    symbol: str
    side: Side
    price: float
    bid: float = 0.0
    ask: float = 0.0
    quote_recv_ns: int = 0
    atr: float | None = None  # for ATR brackets and volatility scaling; percent brackets without it
    confidence: float = 1.0
    size_scale: float = 1.0  # the ensemble's regime scale (below 1 when defensive)

    @classmethod
    def from_proposal(cls, p: Proposal, atr: float | None = None) -> RiskRequest:
        return cls(
            symbol=p.symbol,
            side=p.side,
            price=p.price,
            bid=p.bid,
            ask=p.ask,
            quote_recv_ns=p.quote_recv_ns,
            atr=atr if atr is not None else (p.atr if p.atr > 0 else None),
            confidence=p.confidence,
            size_scale=p.size_scale,
        )

    @property
    def entry(self) -> float:
        """Price we expect to pay: the ask to buy, the bid to sell, else the given price."""
        if self.side == "buy" and self.ask > 0:
            return self.ask
        if self.side == "sell" and self.bid > 0:
            return self.bid
        return self.price

    @property
    def spread_bps(self) -> float | None:
        if self.bid > 0 and self.ask >= self.bid:
            mid = (self.bid + self.ask) / 2.0
            return (self.ask - self.bid) / mid * 1e4
        return None


class RiskContext(msgspec.Struct, frozen=True, kw_only=True):
    """The world as the RiskGuard knows it at decision time."""

    now_ns: int
    trading_state: TradingState
    market_open: bool
    account: AccountSnapshot | None
    positions: tuple[Position, ...] = ()
    open_order_symbols: tuple[str, ...] = ()  # symbols with working orders (pending entries)
    start_of_day_equity: float | None = None  # falls back to account.last_equity
    orders_last_minute: int = 0
    breaker: BreakerStatus = BreakerStatus(False)
    day_trades: DayTradeStatus | None = None  # None: none counted
    in_flight: tuple[str, ...] = ()  # symbols with an entry allowed but not yet settled
    stops: dict[str, float] = msgspec.field(default_factory=dict)  # symbol -> resting stop price
    minutes_to_close: float | None = None  # of today's session, when known and open
    session_phase: str | None = None  # regular/pre/post/closed from the broker calendar; None: unknown
    # Money lost if every working entry order filled and then hit its stop
    # (see `pending_entry_risk`): counts toward the portfolio's risk at the stops.
    pending_risk: float = 0.0

    def position(self, symbol: str) -> Position | None:
        for p in self.positions:
            if p.symbol == symbol and p.qty != 0:
                return p
        return None


class RiskVerdict(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    results: tuple[RuleResult, ...]
    qty: int
    reduce_only: bool
    entry: float
    stop_loss: float | None
    take_profit: float | None
    extended_hours: bool = False  # an extended-hours order: a day limit at `limit_price`, no bracket legs
    limit_price: float | None = None

    @property
    def failures(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def first_failure(self) -> RuleResult | None:
        """The rule to name in a Rejection."""
        for r in self.results:
            if not r.ok:
                return r
        return None


def _ok(rule: str, reason: str) -> RuleResult:
    return RuleResult(True, rule, reason)


def _no(rule: str, reason: str) -> RuleResult:
    return RuleResult(False, rule, reason)


def _money(x: float) -> str:
    return f"${x:,.2f}"


def position_value(p: Position) -> float:
    """|market value| of a position (from cost when the broker gave no value)."""
    return abs(p.market_value) if p.market_value else abs(p.qty * p.avg_entry_price)


# ---- rules ---------------------------------------------------------------------


def rule_trading_state(state: str, reducing: bool, account_blocked: bool = False) -> RuleResult:
    """ACTIVE allows all; REDUCING only exposure-reducing orders; HALTED none."""
    name = "trading_state"
    if account_blocked:
        return _no(name, "broker reports the account is blocked from trading")
    if state == "ACTIVE":
        return _ok(name, "state ACTIVE")
    if state == "REDUCING":
        if reducing:
            return _ok(name, "state REDUCING and the order reduces exposure")
        return _no(name, "state REDUCING: only exposure-reducing orders")
    if state == "HALTED":
        return _no(name, "state HALTED: no orders")
    return _no(name, f"unknown trading state {state!r}")


_SESSION_NAMES = {"pre": "pre-market", "post": "after-hours"}


def rule_market_open(
    is_open: bool, required: bool = True, phase: str | None = None, extended: bool = False
) -> RuleResult:
    """The broker clock's regular session, or (with `extended`) its pre-market/after-hours sessions.

    `phase` is the calendar's classification of now (`classify_session`); the
    broker clock's `is_open` alone decides the regular session.
    """
    if is_open:
        return _ok("market_open", "market is open")
    session = _SESSION_NAMES.get(phase or "")
    if session and extended:
        return _ok("market_open", f"{session} session: extended-hours limit order")
    if not required:
        return _ok("market_open", "market is closed but open hours are not required")
    if session:
        return _no("market_open", f"market is closed ({session} session; extended-hours trading is off)")
    return _no("market_open", "market is closed")


def extended_limit_price(side: str, bid: float, ask: float, slippage_bps: float) -> float | None:
    """A marketable extended-hours limit: the ask plus `slippage_bps` to buy, the bid minus it to sell.

    Rounded to the tick towards the touch, so the limit never gives away more
    than `slippage_bps`; None without a usable touch.
    """
    touch = ask if side == "buy" else bid
    if not math.isfinite(touch) or touch <= 0:
        return None
    factor = slippage_bps / 1e4
    if side == "buy":
        return round_price(touch * (1.0 + factor), "down")
    price = touch * (1.0 - factor)
    return round_price(price, "up") if price > 0 else None


def rule_stale_quote(now_ns: int, quote_recv_ns: int, max_age_s: float) -> RuleResult:
    """Age by our receive time, on our clock: no skew against the venue's."""
    if quote_recv_ns <= 0:
        return _no("stale_quote", "no quote receive time")
    age = (now_ns - quote_recv_ns) / 1e9
    if age > max_age_s:
        return _no("stale_quote", f"quote age {age:.1f} s > max {max_age_s:g} s")
    return _ok("stale_quote", f"quote age {age:.2f} s <= max {max_age_s:g} s")


def rule_spread(spread_bps: float | None, max_bps: float) -> RuleResult:
    if spread_bps is None or not math.isfinite(spread_bps):
        return _no("spread", "no valid bid/ask to measure the spread")
    if spread_bps > max_bps:
        return _no("spread", f"spread {spread_bps:.1f} bps > max {max_bps:g} bps")
    return _ok("spread", f"spread {spread_bps:.1f} bps <= max {max_bps:g} bps")


def rule_price_range(price: float, min_price: float, max_price: float) -> RuleResult:
    if not math.isfinite(price) or price < min_price:
        return _no("price_range", f"price {price:.4f} < min {min_price:g}")
    if price > max_price:
        return _no("price_range", f"price {price:.2f} > max {max_price:g}")
    return _ok("price_range", f"price {price:.2f} within [{min_price:g}, {max_price:g}]")


def rule_max_position(
    symbol: str, existing_value: float, add_value: float, equity: float, max_pct: float
) -> RuleResult:
    """One symbol's exposure after the order must stay within max_pct of equity."""
    if equity <= 0:
        return _no("max_position", f"equity {_money(equity)} <= 0")
    after = existing_value + add_value
    pct = after / equity * 100.0
    if add_value <= 0 and existing_value / equity * 100.0 < max_pct:
        return _ok("max_position", f"{symbol} is {existing_value / equity * 100:.1f}% of equity < max {max_pct:g}%")
    if add_value <= 0:
        return _no(
            "max_position",
            f"{symbol} position {_money(existing_value)} is {existing_value / equity * 100:.1f}% of equity: "
            f"no room under max {max_pct:g}%",
        )
    if pct > max_pct + 1e-9:
        return _no("max_position", f"{symbol} would be {_money(after)} = {pct:.1f}% of equity > max {max_pct:g}%")
    return _ok("max_position", f"{symbol} would be {pct:.1f}% of equity <= max {max_pct:g}%")


def rule_max_open_positions(
    symbol: str, held: tuple[str, ...], pending: tuple[str, ...], max_positions: int
) -> RuleResult:
    """A new symbol may not push positions (plus pending entries) past the limit."""
    names = set(held) | set(pending)
    if symbol in names:
        return _ok("max_positions", f"{symbol} already held or pending: no new position")
    if len(names) >= max_positions:
        return _no("max_positions", f"{len(names)} positions/pending entries >= max {max_positions}")
    return _ok("max_positions", f"{len(names) + 1} positions <= max {max_positions}")


def rule_gross_exposure(gross_value: float, equity: float, max_pct: float) -> RuleResult:
    if equity <= 0:
        return _no("gross_exposure", f"equity {_money(equity)} <= 0")
    pct = gross_value / equity * 100.0
    if pct >= max_pct:
        return _no("gross_exposure", f"gross exposure {pct:.1f}% of equity >= max {max_pct:g}%")
    return _ok("gross_exposure", f"gross exposure {pct:.1f}% of equity < max {max_pct:g}%")


def rule_daily_loss(equity: float, start_equity: float | None, limit_pct: float) -> RuleResult:
    """Block new exposure once today's loss reaches limit_pct of start-of-day equity."""
    if not start_equity or start_equity <= 0:
        return _no("daily_loss", "no start-of-day equity to measure the day's loss")
    loss_pct = (start_equity - equity) / start_equity * 100.0
    if loss_pct >= limit_pct:
        return _no(
            "daily_loss",
            f"daily loss {loss_pct:.2f}% (equity {_money(equity)} vs start {_money(start_equity)}) >= limit {limit_pct:g}%",
        )
    return _ok("daily_loss", f"day P&L {-loss_pct:+.2f}% within limit -{limit_pct:g}%")


def rule_failure_breaker(status: BreakerStatus, now_ns: int) -> RuleResult:
    if status.tripped:
        left = max(0.0, (status.until_ns - now_ns) / 1e9)
        return _no("failure_breaker", f"failure breaker tripped ({status.reason}); {left:.0f} s of cool-off left")
    return _ok("failure_breaker", "failure breaker closed")


def day_loss_pct(equity: float, start_equity: float | None) -> float | None:
    """Today's loss in percent of start-of-day equity (negative: a gain); None if unknown."""
    if not start_equity or start_equity <= 0 or not math.isfinite(equity):
        return None
    return (start_equity - equity) / start_equity * 100.0


def rule_loss_breaker(equity: float, start_equity: float | None, breaker_pct: float) -> RuleResult:
    """Trips at a loss of `breaker_pct` from start-of-day equity: liquidate, then HALTED."""
    loss = day_loss_pct(equity, start_equity)
    if loss is None:
        return _ok("loss_breaker", "no start-of-day equity yet")
    if loss >= breaker_pct:
        return _no(
            "loss_breaker",
            f"day loss {loss:.2f}% (equity {_money(equity)} vs start "
            f"{_money(start_equity or 0.0)}) >= loss breaker {breaker_pct:g}%",
        )
    return _ok("loss_breaker", f"day loss {loss:.2f}% < loss breaker {breaker_pct:g}%")


def rule_day_trade_budget(
    equity: float, day_trades: DayTradeStatus, reducing: bool, symbol: str, limits: RiskLimits
) -> RuleResult:
    """The self-imposed day-trade budget: at most `day_trade_budget` day trades
    in the last `day_trade_window_days` sessions (off at 0).

    No market rule is behind it any more (FINRA retired the pattern-day-trader
    rule; Alpaca refuses nothing as a day trade): it is a speed bump against
    overtrading. So it never holds an exit back: a new entry is bracketed and
    its exits may fire today, so it reserves a day trade along with every
    position opened today and still held, and needs `count + those + 1 <= budget`;
    a close then always fits. `equity` is the lower of today's and the previous
    close's, judged against `day_trade_budget_below_equity` when that is set.
    """
    name = "day_trade_budget"
    budget, window = limits.day_trade_budget, limits.day_trade_window_days
    if budget <= 0:
        return _ok(name, "no day-trade budget set")
    if reducing:
        return _ok(name, "exits are never held back by the day-trade budget")
    below = limits.day_trade_budget_below_equity
    if below > 0 and equity >= below:
        return _ok(name, f"equity {_money(equity)} >= {_money(below)}: the day-trade budget does not apply")
    head = f"{day_trades.count} day trades in the last {window} sessions, budget {budget}"
    opened = day_trades.opened_today - {symbol}
    potential = day_trades.count + len(opened) + 1
    if potential > budget:
        return _no(
            name,
            f"{head}, {len(opened)} other position(s) opened today: a new bracketed entry "
            f"could make day trade {potential} > {budget}",
        )
    return _ok(name, f"{head}: at most {potential} day trades <= {budget}")


def rule_sector(
    symbol: str, sector: str, sector_value: float, add_value: float, equity: float, max_pct: float
) -> RuleResult:
    """A sector's gross exposure after the order stays within max_pct of equity."""
    if equity <= 0:
        return _no("sector", f"equity {_money(equity)} <= 0")
    pct = (sector_value + add_value) / equity * 100.0
    if add_value <= 0 and pct >= max_pct:
        return _no("sector", f"sector {sector} is {pct:.1f}% of equity: no room under max {max_pct:g}%")
    if pct > max_pct + 1e-9:
        return _no("sector", f"sector {sector} would be {pct:.1f}% of equity > max {max_pct:g}%")
    return _ok("sector", f"sector {sector} would be {pct:.1f}% of equity <= max {max_pct:g}%")


def pending_entry_risk(
    side: str, remaining_qty: float, limit_price: float | None, stop_loss: float | None, stop_pct: float
) -> float:
    """Risk at the stop of a working entry order's unfilled part.

    A market entry has no price of its own; its bracket stop was set at
    `stop_pct` from the expected entry, which recovers that entry exactly.
    """
    if not stop_loss or stop_loss <= 0 or remaining_qty <= 0:
        return 0.0
    if limit_price:
        entry = limit_price
    elif side == "buy":
        entry = stop_loss / (1.0 - stop_pct / 100.0) if stop_pct < 100 else stop_loss
    else:
        entry = stop_loss / (1.0 + stop_pct / 100.0)
    return remaining_qty * abs(entry - stop_loss)


def rule_portfolio_risk(open_risk: float, add_risk: float, equity: float, max_pct: float) -> RuleResult:
    """The loss if every stop were hit, the new order's included, stays within max_pct of equity."""
    if equity <= 0:
        return _no("portfolio_risk", f"equity {_money(equity)} <= 0")
    pct = (open_risk + add_risk) / equity * 100.0
    if add_risk <= 0 and pct >= max_pct:
        return _no("portfolio_risk", f"risk at the stops is {pct:.2f}% of equity: no room under max {max_pct:g}%")
    if pct > max_pct + 1e-9:
        return _no(
            "portfolio_risk",
            f"risk at the stops would be {_money(open_risk + add_risk)} = {pct:.2f}% of equity > max {max_pct:g}%",
        )
    return _ok("portfolio_risk", f"risk at the stops would be {pct:.2f}% of equity <= max {max_pct:g}%")


def rule_in_flight(symbol: str, in_flight: tuple[str, ...]) -> RuleResult:
    if symbol in in_flight:
        return _no("in_flight", f"an entry for {symbol} is already in flight")
    return _ok("in_flight", f"no entry for {symbol} in flight")


def rule_close_window(minutes_to_close: float | None, flatten_min: float, phase: str | None = None) -> RuleResult:
    """No new entry in the last `flatten_min` minutes of the session (it would be flattened).

    An after-hours entry comes after today's flatten and would be held
    overnight, which the flatten window exists to prevent.
    """
    if flatten_min > 0 and phase == "post":
        return _no(
            "close_window",
            f"after-hours entry would be held overnight past the flatten window ({flatten_min:g} min before the close)",
        )
    if flatten_min <= 0 or minutes_to_close is None:
        return _ok("close_window", "no flatten window")
    if minutes_to_close <= flatten_min:
        return _no("close_window", f"{minutes_to_close:.1f} min to the close <= flatten window {flatten_min:g} min")
    return _ok("close_window", f"{minutes_to_close:.1f} min to the close > flatten window {flatten_min:g} min")


def position_risk(p: Position, stop: float | None, assumed_stop_pct: float) -> float:
    """Loss if `p` were stopped out: at its resting stop, else at the assumed stop distance."""
    price = abs(p.market_value / p.qty) if p.market_value and p.qty else p.avg_entry_price
    if stop is None or stop <= 0:
        return abs(p.qty) * price * assumed_stop_pct / 100.0
    per_share = price - stop if p.qty > 0 else stop - price
    return abs(p.qty) * max(per_share, 0.0)


def rule_order_rate(orders_last_minute: int, max_per_minute: int) -> RuleResult:
    if orders_last_minute >= max_per_minute:
        return _no("order_rate", f"{orders_last_minute} orders in the last minute >= max {max_per_minute}")
    return _ok("order_rate", f"{orders_last_minute} orders in the last minute < max {max_per_minute}")


def rule_short(side: str, reducing: bool, allow_short: bool) -> RuleResult:
    if side == "sell" and not reducing and not allow_short:
        return _no("short_selling", "sell would open a short and shorting is disabled")
    return _ok("short_selling", "not a disallowed short")


# ---- the whole evaluation ------------------------------------------------------------


def evaluate(
    req: RiskRequest,
    ctx: RiskContext,
    limits: RiskLimits | None = None,
    brackets: BracketParams | None = None,
) -> RiskVerdict:
    """Run every rule and size the order. `allowed` only if every rule passed and qty > 0."""
    lim = limits or RiskLimits()
    acct = ctx.account
    pos = ctx.position(req.symbol)
    pos_qty = pos.qty if pos else 0.0
    reducing = (req.side == "sell" and pos_qty > 0) or (req.side == "buy" and pos_qty < 0)
    entry = req.entry
    exempt = "n/a: order reduces exposure"
    results: list[RuleResult] = []
    add = results.append
    # Outside the regular session, with extended hours on: a marketable day
    # limit (Alpaca takes no market orders and no brackets then), priced and
    # sized at its limit, the worst price it can fill at.
    # The calendar is exact to the second at the session edges; the clock
    # snapshot is polled and may still say open just after the close.
    is_open = ctx.market_open and ctx.session_phase not in ("pre", "post")
    extended = lim.extended_hours and not is_open and ctx.session_phase in ("pre", "post")
    limit = extended_limit_price(req.side, req.bid, req.ask, lim.extended_limit_slippage_bps) if extended else None

    add(rule_trading_state(ctx.trading_state, reducing, bool(acct and acct.trading_blocked)))
    add(rule_market_open(is_open, lim.respect_market_hours, ctx.session_phase, lim.extended_hours))
    if extended:
        add(
            _ok(
                "extended_price",
                f"limit {limit:.2f} = {'ask' if req.side == 'buy' else 'bid'} "
                f"{'+' if req.side == 'buy' else '-'} {lim.extended_limit_slippage_bps:g} bps",
            )
            if limit is not None
            else _no("extended_price", "no bid/ask to price an extended-hours limit order")
        )
        if limit is not None:
            entry = limit
    add(rule_stale_quote(ctx.now_ns, req.quote_recv_ns, lim.max_quote_age_s))
    if acct is None:
        add(_no("account", "no account snapshot yet"))
        return RiskVerdict(
            allowed=False,
            results=tuple(results),
            qty=0,
            reduce_only=reducing,
            entry=entry,
            stop_loss=None,
            take_profit=None,
        )
    equity = acct.equity
    day_trades = ctx.day_trades or DayTradeStatus(0, frozenset())
    budget_equity = min(equity, acct.last_equity) if acct.last_equity > 0 else equity
    add(rule_day_trade_budget(budget_equity, day_trades, reducing, req.symbol, lim))

    if reducing:
        # Close the position; whole shares only (fractional remainder stays).
        qty = int(math.floor(abs(pos_qty) + 1e-9))
        for rule in (
            "spread",
            "price_range",
            "short_selling",
            "max_position",
            "max_positions",
            "sector",
            "gross_exposure",
            "portfolio_risk",
            "daily_loss",
            "loss_breaker",
            "failure_breaker",
            "order_rate",
            "in_flight",
            "close_window",
        ):
            add(_ok(rule, exempt))
        add(_ok("sizing", f"close {qty} of {pos_qty:g} shares") if qty > 0 else _no("sizing", "position under 1 share"))
        allowed = all(r.ok for r in results) and qty > 0
        return RiskVerdict(
            allowed=allowed,
            results=tuple(results),
            qty=qty if allowed else 0,
            reduce_only=True,
            entry=entry,
            stop_loss=None,
            take_profit=None,
            extended_hours=extended,
            limit_price=limit,
        )

    add(rule_spread(req.spread_bps, lim.max_spread_bps))
    add(rule_price_range(entry, lim.min_price, lim.max_price))
    add(rule_short(req.side, reducing, lim.allow_short))
    held = tuple(p.symbol for p in ctx.positions if p.qty != 0)
    add(rule_max_open_positions(req.symbol, held, ctx.open_order_symbols, lim.max_positions))
    gross = sum(position_value(p) for p in ctx.positions if p.qty != 0)
    add(rule_gross_exposure(gross, equity, lim.max_gross_exposure_pct))
    start = ctx.start_of_day_equity if ctx.start_of_day_equity else acct.last_equity
    add(rule_daily_loss(equity, start, lim.daily_loss_limit_pct))
    add(rule_loss_breaker(equity, start, lim.loss_breaker_pct))
    add(rule_failure_breaker(ctx.breaker, ctx.now_ns))
    add(rule_order_rate(ctx.orders_last_minute, lim.max_orders_per_min))
    add(rule_in_flight(req.symbol, ctx.in_flight))
    add(rule_close_window(ctx.minutes_to_close, lim.flatten_before_close_min, ctx.session_phase if extended else None))

    sector = lim.sectors.get(req.symbol, req.symbol)
    sector_value = sum(
        position_value(p) for p in ctx.positions if p.qty != 0 and lim.sectors.get(p.symbol, p.symbol) == sector
    )
    open_risk = ctx.pending_risk + sum(
        position_risk(p, ctx.stops.get(p.symbol), lim.stop_loss_pct) for p in ctx.positions if p.qty != 0
    )
    stop = take = None
    qty = 0
    existing = position_value(pos) if pos else 0.0
    if math.isfinite(entry) and entry > 0:
        b = bracket_prices(req.side, entry, req.atr, brackets)
        stop, take = b.stop_loss, b.take_profit
        # Gross room caps the order like buying power does.
        gross_room = equity * lim.max_gross_exposure_pct / 100.0 - gross
        scale = (
            confidence_scale(req.confidence, lim.confidence_floor)
            * volatility_scale(req.atr, entry, lim.target_volatility_pct)
            * min(max(req.size_scale, 0.0), 1.0)
        )
        size = position_size(
            equity=equity,
            entry=entry,
            stop=stop,
            buying_power=min(acct.buying_power, gross_room),
            risk_per_trade_pct=lim.risk_per_trade_pct,
            max_position_pct=lim.max_position_pct,
            existing_exposure=existing,
            scale=scale,
            sector_room=equity * lim.max_sector_pct / 100.0 - sector_value,
            risk_room=equity * lim.max_portfolio_risk_pct / 100.0 - open_risk,
        )
        qty = size.qty
        add(_ok("sizing", f"{qty} shares, {size.reason}") if qty > 0 else _no("sizing", size.reason))
    else:
        add(_no("sizing", f"no usable entry price ({entry!r})"))
    add_value = qty * entry if qty > 0 else 0.0
    add(rule_max_position(req.symbol, existing, add_value, equity, lim.max_position_pct))
    add(rule_sector(req.symbol, sector, sector_value, add_value, equity, lim.max_sector_pct))
    add_risk = qty * abs(entry - stop) if qty > 0 and stop is not None else 0.0
    add(rule_portfolio_risk(open_risk, add_risk, equity, lim.max_portfolio_risk_pct))

    allowed = all(r.ok for r in results) and qty > 0
    if extended:
        # The stop sized the order; no leg carries it (see the module docstring).
        stop = take = None
    return RiskVerdict(
        allowed=allowed,
        results=tuple(results),
        qty=qty if allowed else 0,
        reduce_only=False,
        entry=entry,
        stop_loss=stop,
        take_profit=take,
        extended_hours=extended,
        limit_price=limit,
    )


# ---- stateful helpers (pure, injectable clock) -------------------------------------


class CircuitBreaker:
    """The failure breaker: trips after N consecutive order failures or M losses within a window.

    Stays tripped for `cooloff_s`, then closes by itself with clean counters.
    `record_*` return True on the call that trips it, so the owner can alert.
    """

    def __init__(
        self,
        max_consecutive_failures: int = 3,
        max_losses: int = 3,
        loss_window_s: float = 1800.0,
        cooloff_s: float = 900.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.max_consecutive_failures = max_consecutive_failures
        self.max_losses = max_losses
        self.loss_window_ns = int(loss_window_s * 1e9)
        self.cooloff_ns = int(cooloff_s * 1e9)
        self._clock = clock
        self._failures = 0
        self._losses: deque[int] = deque()
        self._tripped_until = 0
        self._reason = ""

    @classmethod
    def from_limits(cls, limits: RiskLimits, clock: Callable[[], int] = time.time_ns) -> CircuitBreaker:
        return cls(
            limits.circuit_breaker_failures,
            limits.cb_max_losses,
            limits.cb_loss_window_s,
            limits.circuit_breaker_cooloff_s,
            clock,
        )

    def _expire(self, now: int) -> None:
        if self._tripped_until and now >= self._tripped_until:
            self.reset()

    @property
    def tripped(self) -> bool:
        return self.status().tripped

    def status(self) -> BreakerStatus:
        now = self._clock()
        self._expire(now)
        if self._tripped_until:
            return BreakerStatus(True, self._reason, self._tripped_until)
        return BreakerStatus(False)

    def trip(self, reason: str) -> bool:
        """Open the breaker now (also usable by an operator or another rule)."""
        now = self._clock()
        self._expire(now)
        already = bool(self._tripped_until)
        self._tripped_until = now + self.cooloff_ns
        self._reason = reason
        return not already

    def reset(self) -> None:
        self._failures = 0
        self._losses.clear()
        self._tripped_until = 0
        self._reason = ""

    def record_order_ok(self) -> None:
        """An order was accepted: the failure streak ends."""
        self._failures = 0

    def record_order_failure(self, reason: str = "") -> bool:
        self._expire(self._clock())
        self._failures += 1
        if self._failures >= self.max_consecutive_failures and not self._tripped_until:
            detail = f": last {reason}" if reason else ""
            return self.trip(f"{self._failures} consecutive order failures{detail}")
        return False

    def record_trade(self, pnl: float) -> bool:
        """A closed trade's realised P&L; losses count towards the window."""
        now = self._clock()
        self._expire(now)
        if pnl >= 0:
            return False
        self._losses.append(now)
        while self._losses and self._losses[0] <= now - self.loss_window_ns:
            self._losses.popleft()
        if len(self._losses) >= self.max_losses and not self._tripped_until:
            return self.trip(f"{len(self._losses)} losing trades within {self.loss_window_ns / 1e9:.0f} s")
        return False


class OrderRateWindow:
    """Orders sent in the last `window_s` seconds (feeds rule_order_rate)."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], int] = time.time_ns) -> None:
        self.window_ns = int(window_s * 1e9)
        self._clock = clock
        self._sent: deque[int] = deque()

    def record(self) -> None:
        self._sent.append(self._clock())

    def count(self) -> int:
        cutoff = self._clock() - self.window_ns
        q = self._sent
        while q and q[0] <= cutoff:
            q.popleft()
        return len(q)
