"""The paper venue's matching engine and account: pure logic, no asyncio, no threads.

It holds one Alpaca-style paper account (cash, positions with average entry
price, orders with Alpaca's state machine and fills) and
matches resting orders against the simulator's top of book. Everything that
changes is reported twice: as a trade-update event through `on_event` (for the
`/stream` websocket) and as a dirty mark that `take_changes()` hands to the
ledger store.

Errors a client can cause raise `VenueError`, carrying Alpaca's HTTP status,
code and message, so the REST layer only renders them.

Order kinds, as Alpaca's "Understand Orders" and "Fractional Trading" pages
describe them: market, limit, stop, stop-limit and trailing stop; simple,
bracket, OTO (an entry with one exit leg) and OCO (a take-profit limit with a
stop-loss child, both live at once); whole or fractional quantities (up to 9
decimals) and notional (dollar) orders. A trailing stop follows the touch (the
bid for a sell, the ask for a buy: the simulator has no consolidated prints)
as its high-water mark while the market is open. Quantities are floats kept
to 9 decimals (`qround`).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import msgspec

NY = ZoneInfo("America/New_York")

# No pattern-day-trader rule: FINRA retired it for intraday margin standards
# (amended Rule 4210) and Alpaca stopped counting day trades, flagging accounts
# and refusing orders with 40310100; its account lost `pattern_day_trader`,
# `daytrade_count` and `daytrading_buying_power` on 2026-07-06.
# Alpaca's after-hours session runs 4 h past the regular close (16:00-20:00; 13:00-17:00 on half days).
EXTENDED_AFTER_CLOSE_NS = 4 * 3600 * 1_000_000_000
# Alpaca values a market buy at 2.5-4 % above the market for the buying-power check.
MARKET_BUY_BP_MARGIN = 1.03
QTY_DECIMALS = 9  # Alpaca takes qty and notional with up to 9 decimals
MIN_NOTIONAL = 1.0  # "you can now buy as little as $1 worth of shares"
EXIT_CLASSES = frozenset({"bracket", "oto", "oco"})
# Alpaca takes fractional qty and notional on these (not on trailing stops).
FRACTIONAL_TYPES = frozenset({"market", "limit", "stop", "stop_limit"})

OPEN_STATUSES = frozenset(
    {"pending_new", "accepted", "new", "partially_filled", "held", "pending_cancel", "pending_replace"}
)
CLOSED_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})
# States in which an order can trade on the next quote.
_WORKING = frozenset({"new", "partially_filled"})

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit", "trailing_stop"]
TimeInForce = Literal["day", "gtc"]


class VenueError(Exception):
    """An Alpaca API error: HTTP status, Alpaca's numeric code, message, extra body fields."""

    def __init__(self, status: int, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body Alpaca sends for this error."""
        return {"code": self.code, "message": self.message, **self.extra}


# ---- records (also what the ledger store persists) ---------------------------


class Order(msgspec.Struct, kw_only=True):
    """One order and its Alpaca state. Mutable: the state machine advances it in place."""

    id: str
    client_order_id: str
    symbol: str
    asset_id: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    qty: float  # a notional order has 0 here until its fill fixes the shares
    limit_price: float | None = None
    stop_price: float | None = None  # a trailing stop's follows its hwm
    status: str = "pending_new"
    order_class: str = "simple"
    extended_hours: bool = False
    filled_qty: float = 0
    notional: float | None = None
    trail_price: float | None = None
    trail_percent: float | None = None
    hwm: float | None = None  # a trailing stop's high-water mark (low-water for a buy)
    filled_notional: float = 0.0
    created_at_ns: int = 0
    updated_at_ns: int = 0
    submitted_at_ns: int = 0
    filled_at_ns: int | None = None
    canceled_at_ns: int | None = None
    expired_at_ns: int | None = None
    failed_at_ns: int | None = None
    replaced_at_ns: int | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    parent_id: str | None = None  # bracket/oto legs point at their entry, an oco stop-loss at its take-profit
    leg_ids: list[str] = msgspec.field(default_factory=list)
    leg_role: str | None = None  # "take_profit" | "stop_loss"
    stop_triggered: bool = False

    @property
    def remaining(self) -> float:
        return qround(self.qty - self.filled_qty)

    @property
    def filled_avg_price(self) -> float | None:
        return self.filled_notional / self.filled_qty if self.filled_qty else None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class Position(msgspec.Struct, kw_only=True):
    """A long holding."""

    symbol: str
    asset_id: str
    qty: float
    avg_entry_price: float


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """One execution."""

    id: str
    order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    ts_ns: int
    position_qty: float


class AccountState(msgspec.Struct, kw_only=True):
    """The account's own numbers; equity and buying power are derived from these and quotes."""

    id: str
    account_number: str
    cash: float
    created_at_ns: int
    last_equity: float
    last_equity_date: str = ""  # ET date the last_equity belongs to


class TradeEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A trade update for the stream; `order` is a snapshot taken when it happened."""

    event: str
    order: Order
    ts_ns: int
    execution_id: str | None = None
    price: float | None = None
    qty: float | None = None
    position_qty: float | None = None


class Changes(msgspec.Struct, kw_only=True):
    """What changed since the last `take_changes()`; the ledger store writes it in one transaction."""

    account: AccountState | None = None
    orders: dict[str, Order] = msgspec.field(default_factory=dict)  # by id, in first-change order
    positions: dict[str, Position | None] = msgspec.field(default_factory=dict)  # None: closed
    fills: list[Fill] = msgspec.field(default_factory=list)

    def empty(self) -> bool:
        return self.account is None and not self.orders and not self.positions and not self.fills


class LedgerSnapshot(msgspec.Struct, kw_only=True):
    """Everything needed to rebuild an Exchange after a restart."""

    account: AccountState
    orders: list[Order]
    positions: list[Position]
    fills: list[Fill]


class OrderRequest(msgspec.Struct, kw_only=True):
    """A validated order submission (the REST layer parses Alpaca's JSON into this)."""

    symbol: str
    qty: float  # 0 for a notional order
    side: Side
    type: OrderType
    time_in_force: TimeInForce = "day"
    limit_price: float | None = None
    stop_price: float | None = None
    client_order_id: str | None = None
    extended_hours: bool = False
    order_class: str = "simple"  # "simple" | "bracket" | "oto" | "oco"
    take_profit_limit: float | None = None
    stop_loss_stop: float | None = None
    stop_loss_limit: float | None = None
    notional: float | None = None
    trail_price: float | None = None
    trail_percent: float | None = None


class QuoteLike(Protocol):
    """What the exchange reads of a quote (read-only, so frozen quotes fit)."""

    @property
    def symbol(self) -> str: ...
    @property
    def bid(self) -> float: ...
    @property
    def ask(self) -> float: ...
    @property
    def bid_size(self) -> float: ...
    @property
    def ask_size(self) -> float: ...
    @property
    def ts_ns(self) -> int: ...


class ClockLike(Protocol):
    def is_open(self, ts_ns: int | None = None) -> bool: ...
    def now_ns(self) -> int: ...


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    """Derived account figures, as of the latest quotes."""

    state: AccountState
    equity: float
    long_market_value: float
    buying_power: float


# ---- helpers ------------------------------------------------------------------


def qround(x: float) -> float:
    """A quantity kept to Alpaca's 9 decimals, so float sums do not drift (0.1 + 0.2)."""
    return round(x, QTY_DECIMALS)


def qty_text(x: float) -> str:
    """A quantity as Alpaca's decimal string: up to 9 decimals, no exponent ("4", "0.25")."""
    text = f"{x:.{QTY_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def price_round(x: float) -> float:
    """A price on Alpaca's tick: cents from $1, 4 decimals below."""
    return round(x, 2 if x >= 1.0 else 4)


def asset_id_for(symbol: str) -> str:
    """A stable asset UUID per symbol, so ids survive restarts without being stored."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"stockade-venue/asset/{symbol}"))


def trading_date(ts_ns: int) -> dt.date:
    """The US/Eastern calendar date of a wall-clock instant."""
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=NY).date()


class Exchange:
    """One paper account and its order book; see the module docstring."""

    def __init__(
        self,
        symbols: Iterable[str],
        clock: ClockLike,
        *,
        initial_cash: float = 100_000.0,
        seed: int = 0,
        partial_fill_prob: Callable[[], float] = lambda: 0.0,
        on_event: Callable[[TradeEvent], None] | None = None,
        non_fractionable: Iterable[str] = (),
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.symbols = tuple(symbols)
        self.non_fractionable = frozenset(non_fractionable)
        # Order and fill ids; a backtest passes a seeded source so its records repeat byte for byte.
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        self.clock = clock
        self.partial_fill_prob = partial_fill_prob
        self.on_event = on_event or (lambda _e: None)
        # Seeded so partial-fill sizes, and thus whole test runs, repeat exactly.
        self._rng = random.Random(seed)
        now = clock.now_ns()
        seed_rng = random.Random(seed ^ 0x5EED)
        self.account = AccountState(
            id=str(uuid.UUID(int=seed_rng.getrandbits(128), version=4)),
            account_number=f"PA{seed_rng.randrange(10**9, 10**10)}",
            cash=float(initial_cash),
            created_at_ns=now,
            last_equity=float(initial_cash),
            last_equity_date=trading_date(now).isoformat(),
        )
        self.orders: dict[str, Order] = {}
        # Open orders only, so per-quote matching does not scan the whole history.
        self._open: dict[str, Order] = {}
        self._by_client_id: dict[str, str] = {}
        self.positions: dict[str, Position] = {}
        self.fills: list[Fill] = []
        self.quotes: dict[str, QuoteLike] = {}
        self._to_route: list[str] = []
        # True while an embedder holds new orders back (the in-process venue, for the next quote).
        self.routing_held = False
        self._was_open: bool | None = None
        self._day_deadline: dict[str, int] = {}  # open day order id -> its session's close (nyse)
        self._changes = Changes()

    # ---- persistence ------------------------------------------------------------

    def snapshot(self) -> LedgerSnapshot:
        return LedgerSnapshot(
            account=self.account,
            orders=list(self.orders.values()),
            positions=list(self.positions.values()),
            fills=list(self.fills),
        )

    def restore(self, snap: LedgerSnapshot) -> None:
        """Replace the state with a stored one (at start, before any traffic)."""
        self.account = snap.account
        self.orders = {o.id: o for o in sorted(snap.orders, key=lambda o: o.created_at_ns)}
        self._by_client_id = {o.client_order_id: o.id for o in self.orders.values()}
        self._open = {o.id: o for o in self.orders.values() if o.is_open}
        self.positions = {p.symbol: p for p in snap.positions}
        self.fills = sorted(snap.fills, key=lambda f: f.ts_ns)
        # Orders accepted but never routed before a crash are routed now (held legs wait for their entry).
        self._to_route = [o.id for o in self.orders.values() if o.status in ("pending_new", "accepted")]
        self._day_deadline = {}
        self._changes = Changes()

    def take_changes(self) -> Changes:
        """Hand over (and forget) what changed since the last call."""
        changes, self._changes = self._changes, Changes()
        return changes

    def _dirty_order(self, order: Order) -> None:
        self._changes.orders.setdefault(order.id, order)

    def _dirty_position(self, symbol: str) -> None:
        self._changes.positions[symbol] = self.positions.get(symbol)

    def _dirty_account(self) -> None:
        self._changes.account = self.account

    # ---- queries -------------------------------------------------------------------

    def get_order(self, order_id: str) -> Order:
        order = self.orders.get(order_id)
        if order is None:
            raise VenueError(404, 40410000, f"order not found for {order_id}")
        return order

    def get_order_by_client_id(self, client_order_id: str) -> Order:
        oid = self._by_client_id.get(client_order_id)
        if oid is None:
            raise VenueError(404, 40410000, "order not found")
        return self.orders[oid]

    def list_orders(
        self,
        *,
        status: str = "open",
        limit: int = 50,
        after_ns: int | None = None,
        until_ns: int | None = None,
        direction: str = "desc",
        nested: bool = False,
        symbols: set[str] | None = None,
        side: str | None = None,
    ) -> list[Order]:
        """Alpaca's GET /v2/orders semantics (status open|closed|all, by submission time;
        `after` and `until` both exclusive)."""
        out = []
        # Open ones from the open index (in the same submission order): the
        # reconciler and the order manager list them every pass, and a
        # scan of the whole history made each pass grow with every order ever placed.
        for o in self.open_orders() if status == "open" else self.orders.values():
            if nested and o.parent_id:
                continue  # legs ride inside their parent
            if status == "open" and not o.is_open:
                continue
            if status == "closed" and o.is_open:
                continue
            if after_ns is not None and o.submitted_at_ns <= after_ns:
                continue
            if until_ns is not None and o.submitted_at_ns >= until_ns:  # exclusive, as Alpaca's
                continue
            if symbols and o.symbol not in symbols:
                continue
            if side and o.side != side:
                continue
            out.append(o)
        out.sort(key=lambda o: (o.submitted_at_ns, o.created_at_ns), reverse=(direction != "asc"))
        return out[: max(0, limit)]

    def open_orders(self) -> list[Order]:
        """Open orders in submission order (forgets the ones that closed since)."""
        for oid in [oid for oid, o in self._open.items() if not o.is_open]:
            del self._open[oid]
            self._day_deadline.pop(oid, None)
        return list(self._open.values())

    def legs_of(self, order: Order) -> list[Order]:
        return [self.orders[i] for i in order.leg_ids if i in self.orders]

    def mark_price(self, symbol: str) -> float | None:
        """Price positions are valued at: the quote's mid (Alpaca uses last trade; we have none)."""
        q = self.quotes.get(symbol)
        if q is None or q.bid <= 0 or q.ask <= 0:
            return None
        return (q.bid + q.ask) / 2.0

    def position_value(self, pos: Position) -> float:
        price = self.mark_price(pos.symbol)
        return pos.qty * (price if price is not None else pos.avg_entry_price)

    def exit_group(self, order: Order) -> list[Order]:
        """The exits that share one block of shares with `order`, itself included.

        A bracket's two legs, an OCO's take-profit (the parent) and stop-loss;
        anything else is alone. Filling one cancels the others.
        """
        if order.order_class == "oco":
            head = self.orders.get(order.parent_id, order) if order.parent_id else order
            return [head, *self.legs_of(head)]
        if order.parent_id and order.parent_id in self.orders:
            return self.legs_of(self.orders[order.parent_id])
        return [order]

    def held_for_orders(self, symbol: str) -> float:
        """Shares of `symbol` reserved by open sell orders (an OCO pair reserves once)."""
        held = 0.0
        seen_groups: set[str] = set()
        for o in self.open_orders():
            if o.symbol != symbol or o.side != "sell" or not o.is_open or o.status == "held":
                continue  # held legs reserve nothing until the entry fills
            group = self.exit_group(o)
            if len(group) > 1:
                if group[0].id in seen_groups:
                    continue
                seen_groups.add(group[0].id)
                held += o.qty - sum(m.filled_qty for m in group)
            elif o.notional is not None and not o.qty:
                held += self._notional_shares(o)  # shares fixed at the fill: reserve what it would take
            else:
                held += o.remaining
        return qround(held)

    def reserved_for_buys(self) -> float:
        """Buying power tied up in open buy orders (Alpaca does not count sells until they fill)."""
        total = 0.0
        for o in self.open_orders():
            if o.side == "buy" and o.is_open and o.status != "held":
                if o.notional is not None and not o.qty:
                    total += o.notional  # shares are fixed at the fill
                else:
                    total += o.remaining * self._buy_valuation_price(o)
        return total

    def _buy_valuation_price(self, o: Order | OrderRequest) -> float:
        if o.type in ("limit", "stop_limit") and o.limit_price is not None:
            return o.limit_price
        q = self.quotes.get(o.symbol)
        ref = q.ask if q is not None and q.ask > 0 else (o.stop_price or 0.0)
        return ref * MARKET_BUY_BP_MARGIN

    def account_view(self) -> AccountView:
        self._roll_day()
        lmv = sum(self.position_value(p) for p in self.positions.values())
        equity = self.account.cash + lmv
        bp = max(0.0, self.account.cash - self.reserved_for_buys())
        return AccountView(
            state=self.account,
            equity=equity,
            long_market_value=lmv,
            buying_power=bp,
        )

    # ---- submission ---------------------------------------------------------------

    def submit(self, req: OrderRequest, *, route: bool = True) -> Order:
        """Validate and accept an order; with `route`, also route it and match it at once.

        The REST layer passes route=False, renders the accepted order (as Alpaca
        answers before the order reaches the market) and then calls
        `route_pending()`.
        """
        self._roll_day()
        now = self.clock.now_ns()
        if req.order_class == "oco" and req.type == "limit" and req.limit_price is None:
            # An OCO's parent is its take-profit: Alpaca takes the limit from take_profit.
            req = msgspec.structs.replace(req, limit_price=req.take_profit_limit)
        self._validate(req)
        cid = req.client_order_id or self._new_id()
        if cid in self._by_client_id:
            raise VenueError(422, 40010001, "client_order_id must be unique")
        market_open = self.clock.is_open(now)
        status = "pending_new" if market_open else "accepted"
        order = Order(
            id=self._new_id(),
            client_order_id=cid,
            symbol=req.symbol,
            asset_id=asset_id_for(req.symbol),
            side=req.side,
            type=req.type,
            time_in_force=req.time_in_force,
            qty=req.qty,
            limit_price=req.limit_price,
            stop_price=req.stop_price,
            status=status,
            order_class=req.order_class,
            extended_hours=req.extended_hours,
            created_at_ns=now,
            updated_at_ns=now,
            submitted_at_ns=now,
            notional=req.notional,
            trail_price=req.trail_price,
            trail_percent=req.trail_percent,
        )
        if order.type == "trailing_stop":
            self._trail(order)  # the POST answer already shows hwm and stop_price
        self._add(order)
        self._to_route.append(order.id)
        if req.order_class in EXIT_CLASSES:
            self._add_legs(order, req, status, now)
        if route:
            self.route_pending()
        return order

    def _add_legs(self, order: Order, req: OrderRequest, status: str, now: int) -> None:
        """The exit legs of a bracket (both), an OTO (the one given) or an OCO (its stop-loss).

        Bracket and OTO legs are "held" until the entry fills; an OCO's
        stop-loss is live at once beside its take-profit parent.
        """
        exit_side: Side = "sell" if req.side == "buy" else "buy"
        oco = req.order_class == "oco"
        legs: list[Order] = []

        def leg(role: str, **kw: Any) -> Order:
            return Order(
                id=self._new_id(),
                client_order_id=self._new_id(),
                symbol=req.symbol,
                asset_id=order.asset_id,
                side=req.side if oco else exit_side,
                time_in_force=req.time_in_force,
                qty=req.qty,
                status=status if oco else "held",
                order_class=req.order_class,
                created_at_ns=now,
                updated_at_ns=now,
                submitted_at_ns=now,
                parent_id=order.id,
                leg_role=role,
                **kw,
            )

        if req.take_profit_limit is not None and not oco:
            legs.append(leg("take_profit", type="limit", limit_price=req.take_profit_limit))
        if req.stop_loss_stop is not None:
            legs.append(
                leg(
                    "stop_loss",
                    type="stop_limit" if req.stop_loss_limit is not None else "stop",
                    limit_price=req.stop_loss_limit,
                    stop_price=req.stop_loss_stop,
                )
            )
        for x in legs:
            self._add(x)
            if oco:
                self._to_route.append(x.id)
        order.leg_ids = [x.id for x in legs]
        if oco:
            order.leg_role = "take_profit"

    def _add(self, order: Order) -> None:
        self.orders[order.id] = order
        self._open[order.id] = order
        self._by_client_id[order.client_order_id] = order.id
        self._dirty_order(order)

    def _validate(self, req: OrderRequest) -> None:
        if req.symbol not in self.symbols:
            raise VenueError(422, 40010001, "asset not found")
        if req.notional is None and req.qty <= 0:
            raise VenueError(422, 40010001, "qty must be > 0")
        if req.notional is not None or req.qty != int(req.qty):
            self._validate_fractional(req)
        if req.type == "trailing_stop":
            _validate_trailing(req)
        if req.type in ("limit", "stop_limit") and (req.limit_price is None or req.limit_price <= 0):
            raise VenueError(422, 40010001, "limit_price is required and must be > 0")
        if req.type in ("stop", "stop_limit") and (req.stop_price is None or req.stop_price <= 0):
            raise VenueError(422, 40010001, "stop_price is required and must be > 0")
        if req.type in ("market", "stop") and req.limit_price is not None:
            raise VenueError(422, 40010001, f"limit_price must not be given for {req.type} orders")
        if req.type in ("market", "limit") and req.stop_price is not None:
            raise VenueError(422, 40010001, f"stop_price must not be given for {req.type} orders")
        if req.extended_hours:
            _validate_extended(req)
        if req.order_class in ("bracket", "oto"):
            self._validate_bracket(req)
        elif req.order_class == "oco":
            self._validate_oco(req)
        elif req.order_class != "simple":
            raise VenueError(422, 40010001, f"invalid order_class {req.order_class!r}")
        if req.side == "sell":
            self._check_sell_qty(req.symbol, req.qty if req.notional is None else self._notional_shares(req))
        else:
            self._check_buying_power(req)

    def _validate_bracket(self, req: OrderRequest) -> None:
        """A bracket (both legs) or an OTO (one leg): an entry whose exits wait for its fill."""
        kind = req.order_class
        if req.side != "buy":
            # A sell entry opens a short, and this venue does not lend shares.
            raise VenueError(403, 40310000, "account is not allowed to short")
        if req.type not in ("market", "limit"):
            raise VenueError(422, 40010001, f"{kind} orders must be market or limit orders")
        if kind == "bracket" and (req.take_profit_limit is None or req.stop_loss_stop is None):
            raise VenueError(422, 40010001, "bracket orders require take_profit.limit_price and stop_loss.stop_price")
        if kind == "oto" and (req.take_profit_limit is None) == (req.stop_loss_stop is None):
            # Alpaca: "Either of take_profit or stop_loss must be present"; both is a bracket.
            raise VenueError(422, 40010001, "oto orders require either take_profit.limit_price or stop_loss.stop_price")
        if any(p is not None and p <= 0 for p in (req.take_profit_limit, req.stop_loss_stop)):
            raise VenueError(422, 40010001, f"{kind} leg prices must be > 0")
        q = self.quotes.get(req.symbol)
        base = req.limit_price if req.type == "limit" else (q.ask if q is not None else None)
        if base is not None:
            # Alpaca's own wording for legs on the wrong side of the base price.
            if req.take_profit_limit is not None and req.take_profit_limit < round(base + 0.01, 2):
                raise VenueError(
                    422, 42210000, f"take_profit.limit_price must be >= base_price + 0.01. base_price: {base:.2f}"
                )
            if req.stop_loss_stop is not None:
                _check_stop_base(req.stop_loss_stop, base)
        _check_stop_limit(req)

    def _validate_oco(self, req: OrderRequest) -> None:
        """An OCO: a take-profit limit and a stop-loss on shares already held (Alpaca: exits only).

        Rules from "Understand Orders" (type limit, both legs, the stop-loss
        threshold against the take-profit and the market); the base-price text
        is Alpaca's, the others follow the bracket messages' style.
        """
        if req.type != "limit":
            # Alpaca: "The type parameter must always be 'limit'" (the take-profit's type).
            raise VenueError(422, 40010001, "oco orders must be limit orders")
        if req.take_profit_limit is None or req.stop_loss_stop is None:
            raise VenueError(422, 40010001, "oco orders require take_profit.limit_price and stop_loss.stop_price")
        if req.take_profit_limit <= 0 or req.stop_loss_stop <= 0:
            raise VenueError(422, 40010001, "oco leg prices must be > 0")
        if req.side == "buy":
            # An exit for a buy would cover a short; this account never has one.
            raise VenueError(
                403,
                40310000,
                "insufficient qty available for order",
                available="0",
                existing_qty="0",
                held_for_orders="0",
                symbol=req.symbol,
            )
        # The base is the take-profit's limit, and the market as well (Alpaca's threshold rule).
        q = self.quotes.get(req.symbol)
        _check_stop_base(req.stop_loss_stop, req.take_profit_limit)
        if q is not None:
            _check_stop_base(req.stop_loss_stop, q.bid)
        _check_stop_limit(req)

    def _validate_fractional(self, req: OrderRequest) -> None:
        """Fractional qty or notional: Alpaca's fractional rules (DAY orders, fractionable assets).

        The rules are the "Fractional Trading" page's and changelog's: market,
        limit, stop and stop-limit orders (Alpaca added fractional limit, then
        "Fractional USD Stop & Stop Limit Orders", by qty or notional; not
        trailing stops), `day` only, fractionable assets, at least $1, not in
        extended hours, qty and notional mutually exclusive (HTTP 400). Of the
        texts, only "requested asset is not fractionable" is documented; the
        others follow Alpaca's style ("fractional orders must be DAY orders"
        as Alpaca answers it).
        """
        if req.symbol in self.non_fractionable:
            raise VenueError(422, 40010001, "requested asset is not fractionable")  # Alpaca's documented text
        if req.notional is not None and req.notional < MIN_NOTIONAL:
            raise VenueError(422, 40010001, f"notional must be >= {MIN_NOTIONAL:g}")
        if req.type not in FRACTIONAL_TYPES:
            raise VenueError(422, 40010001, "fractional orders must be market, limit, stop or stop_limit orders")
        if req.time_in_force != "day":
            raise VenueError(422, 40010001, "fractional orders must be DAY orders")
        if req.order_class != "simple":
            raise VenueError(422, 40010001, "fractional orders are supported only for simple orders")
        if req.extended_hours:
            # Alpaca: "Fractional shares and orders with notional sizes are not available during extended hours"
            raise VenueError(422, 40010001, "fractional orders are not eligible for extended hours trading")

    def _notional_shares(self, req: Order | OrderRequest) -> float:
        """The shares a notional sell would take from the position (for the qty check and
        the reservation): at its limit, the most it can sell there; else at today's bid."""
        if req.notional is None:
            return 0.0
        price = req.limit_price
        if not price:
            q = self.quotes.get(req.symbol)
            price = q.bid if q is not None else None
        return qround(req.notional / price) if price and price > 0 else 0.0

    def _check_sell_qty(self, symbol: str, qty: float) -> None:
        pos = self.positions.get(symbol)
        existing = pos.qty if pos else 0
        held = self.held_for_orders(symbol)
        available = existing - held
        if qty > available:
            raise VenueError(
                403,
                40310000,
                "insufficient qty available for order",
                available=qty_text(max(0.0, available)),
                existing_qty=qty_text(existing),
                held_for_orders=qty_text(held),
                symbol=symbol,
            )

    def _check_buying_power(self, req: OrderRequest) -> None:
        cost = req.notional if req.notional is not None else req.qty * self._buy_valuation_price(req)
        bp = max(0.0, self.account.cash - self.reserved_for_buys())
        if cost > bp + 1e-9:
            raise VenueError(403, 40310000, "insufficient buying power", buying_power=_num(bp), cost_basis=_num(cost))

    # ---- routing, cancels, replaces ----------------------------------------------------

    def route_pending(self) -> None:
        """Route accepted orders to the book ("new") and match them against the current quote.

        While the market is closed, orders stay "accepted" and are routed at the open.
        """
        if not self._to_route or self.routing_held:
            return
        now = self.clock.now_ns()
        if not self.clock.is_open(now):
            return
        pending, self._to_route = self._to_route, []
        for oid in pending:
            order = self.orders.get(oid)
            if order is None or order.status not in ("pending_new", "accepted"):
                continue
            self._set_status(order, "new", now)
            self._emit("new", order, now)
            self._match(order)

    def cancel(self, order_id: str) -> Order:
        """Cancel an open order (and, for a bracket, its legs or its OCO sibling)."""
        order = self.get_order(order_id)
        if not order.is_open:
            raise VenueError(422, 42210000, f'order is already in "{order.status}" state')
        now = self.clock.now_ns()
        group: list[Order]
        if order.parent_id or order.order_class == "oco":  # "any one canceled cancels the group"
            group = [o for o in self.exit_group(order) if o.is_open]
        else:
            group = [order] + [o for o in self.legs_of(order) if o.is_open]
        for o in group:
            self._close(o, "canceled", now)
        return order

    def cancel_all(self) -> list[tuple[str, int, Order]]:
        """Cancel every open order: (id, http status, order) per order, as DELETE /v2/orders."""
        out = []
        for o in self.open_orders():
            if o.is_open and not o.parent_id:
                self.cancel(o.id)
                out.append((o.id, 200, o))
        for o in self.open_orders():  # legs whose parent had already filled
            if o.is_open:
                self.cancel(o.id)
                out.append((o.id, 200, o))
        return out

    def replace(
        self,
        order_id: str,
        *,
        qty: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
        time_in_force: TimeInForce | None = None,
        client_order_id: str | None = None,
        trail: float | None = None,
    ) -> Order:
        """PATCH /v2/orders/{id}: a new order replaces the old one, which ends "replaced"."""
        old = self.get_order(order_id)
        if not old.is_open or old.status == "held" or old.status == "pending_cancel":
            raise VenueError(422, 42210000, f'order is already in "{old.status}" state')
        if old.order_class in ("bracket", "oto") and not old.parent_id:
            raise VenueError(422, 42210000, f"{old.order_class} entry orders cannot be replaced")
        if trail is not None and (old.type != "trailing_stop" or old.stop_triggered):
            # Alpaca: `trail` "is effective only for the order type is trailing_stop before the stop price is hit".
            raise VenueError(422, 42210000, "trail can only be replaced on a trailing_stop order before it triggers")
        if old.type == "trailing_stop" and (limit_price is not None or stop_price is not None):
            raise VenueError(422, 40010001, "a trailing_stop order takes trail, not limit_price or stop_price")
        if old.notional is not None:
            # Alpaca: "Notional orders cannot be replaced at all".
            raise VenueError(422, 42210000, "notional orders cannot be replaced")
        if qty is not None and qty != old.qty and old.qty != int(old.qty):
            raise VenueError(422, 42210000, "qty of a fractional order cannot be replaced")
        new_qty = qty if qty is not None else old.qty
        if new_qty <= old.filled_qty or new_qty <= 0:
            raise VenueError(422, 40010001, "qty must be > filled_qty")
        if client_order_id and client_order_id in self._by_client_id:
            raise VenueError(422, 40010001, "client_order_id must be unique")
        if old.side == "sell" and not old.parent_id:
            pos = self.positions.get(old.symbol)
            available = (pos.qty if pos else 0) - self.held_for_orders(old.symbol) + old.remaining
            if new_qty - old.filled_qty > available:
                raise VenueError(403, 40310000, "insufficient qty available for order")
        now = self.clock.now_ns()
        new = msgspec.structs.replace(
            old,
            id=self._new_id(),
            client_order_id=client_order_id or self._new_id(),
            qty=new_qty - old.filled_qty,
            filled_qty=0,
            filled_notional=0.0,
            limit_price=limit_price if limit_price is not None else old.limit_price,
            stop_price=stop_price if stop_price is not None else old.stop_price,
            time_in_force=time_in_force or old.time_in_force,
            status="pending_new" if self.clock.is_open(now) else "accepted",
            created_at_ns=now,
            updated_at_ns=now,
            submitted_at_ns=now,
            filled_at_ns=None,
            replaces=old.id,
            replaced_by=None,
            leg_ids=list(old.leg_ids) if old.order_class == "oco" else [],
            stop_triggered=False,
            trail_price=trail if trail is not None and old.trail_price is not None else old.trail_price,
            trail_percent=trail if trail is not None and old.trail_percent is not None else old.trail_percent,
        )
        if new.type == "trailing_stop":
            self._trail(new)
        for leg in self.legs_of(new):  # an oco take-profit replaced: its stop-loss follows the new parent
            leg.parent_id = new.id
            self._dirty_order(leg)
        if new.qty != old.remaining:
            self._oco_sibling_qty(old, new.qty, now)
        old.status = "replaced"
        old.replaced_at_ns = now
        old.replaced_by = new.id
        old.updated_at_ns = now
        self._dirty_order(old)
        self._add(new)
        if old.parent_id:  # the new order takes the old leg's place in the bracket
            parent = self.orders[old.parent_id]
            parent.leg_ids = [new.id if i == old.id else i for i in parent.leg_ids]
            self._dirty_order(parent)
        self._emit("replaced", old, now)
        self._to_route.append(new.id)
        return new

    def _oco_sibling_qty(self, old: Order, qty: float, now: int) -> None:
        """The other exit of an OCO pair (an oco's stop-loss, a bracket's other leg)
        takes the replaced exit's new quantity: the two legs of one OCO always
        cover the same shares, so either may fill all of them."""
        if old.order_class == "oco" and not old.parent_id:
            siblings = self.legs_of(old)
        elif old.parent_id and old.order_class in ("oco", "bracket"):
            parent = self.orders[old.parent_id]
            siblings = [leg for leg in self.legs_of(parent) if leg.id != old.id]
            if old.order_class == "oco":
                siblings.append(parent)  # the oco's take-profit, when its stop-loss is replaced
        else:
            return
        for sib in siblings:
            if sib.is_open and not sib.filled_qty:
                sib.qty = qty
                sib.updated_at_ns = now
                self._dirty_order(sib)

    # ---- positions ------------------------------------------------------------------

    def close_position(
        self, symbol: str, *, qty: float | None = None, percentage: float | None = None, route: bool = True
    ) -> Order:
        """DELETE /v2/positions/{symbol}: a market order that sells (part of) the position."""
        pos = self.positions.get(symbol)
        if pos is None or pos.qty == 0:
            # Alpaca's DELETE wording; GET /v2/positions/{symbol} says "position does not exist".
            raise VenueError(404, 40410000, f"position not found: {symbol}")
        if qty is None and percentage is not None:
            # Alpaca "would only sell fractional if position is originally fractional".
            share = pos.qty * percentage / 100.0
            qty = qround(share) if pos.qty != int(pos.qty) else float(math.floor(share))
        elif qty is None:
            qty = pos.qty
        if qty <= 0:
            raise VenueError(422, 40010001, "qty must be > 0")
        return self.submit(OrderRequest(symbol=symbol, qty=qty, side="sell", type="market"), route=route)

    def close_all(self, cancel_orders: bool, *, route: bool = True) -> list[tuple[str, int, Order | VenueError]]:
        """DELETE /v2/positions: one (symbol, status, order-or-error) per position."""
        if cancel_orders:
            self.cancel_all()
        out: list[tuple[str, int, Order | VenueError]] = []
        for symbol in sorted(self.positions):
            try:
                out.append((symbol, 200, self.close_position(symbol, route=route)))
            except VenueError as exc:
                out.append((symbol, exc.status, exc))
        return out

    # ---- market events ---------------------------------------------------------------

    def on_quote(self, quote: QuoteLike) -> None:
        """A new top of book: match the symbol's working orders against it."""
        if quote.bid <= 0 or quote.ask <= 0 or quote.ask < quote.bid:
            return  # a broken quote must not trade anything
        self.quotes[quote.symbol] = quote
        # Taken before tick(): orders it routes are matched there, once per quote.
        working = [o for o in self.open_orders() if o.symbol == quote.symbol and o.status in _WORKING]
        self.tick(quote.ts_ns)
        if not self.clock.is_open(quote.ts_ns):
            return
        for order in working:
            if order.status in _WORKING:  # an OCO sibling's fill may have cancelled it meanwhile
                self._match(order)

    def tick(self, now_ns: int | None = None) -> None:
        """Follow the market clock: route queued orders at the open, expire day orders at the close."""
        now = now_ns if now_ns is not None else self.clock.now_ns()
        self._roll_day(now)
        is_open = self.clock.is_open(now)
        closed_now = bool(self._was_open and not is_open)
        for o in self.open_orders():
            # An extended-hours day order outlives the regular close: it ends with the after-hours session.
            if (
                o.is_open
                and o.time_in_force == "day"
                and ((closed_now and not o.extended_hours) or self._past_its_close(o, now))
            ):
                self._close(o, "expired", now)
        self._was_open = is_open
        if is_open and self._to_route:
            self.route_pending()

    def _past_its_close(self, order: Order, now: int) -> bool:
        """A day order whose session closed while nobody watched (e.g. the venue was down).

        Only a real exchange calendar (MarketClock in "nyse" mode) has closes that
        day orders honour; an always-open market never expires them.
        """
        next_close = getattr(self.clock, "next_close", None)
        if next_close is None or getattr(self.clock, "mode", None) != "nyse":
            return False
        deadline = self._day_deadline.get(order.id)
        if deadline is None:  # the close after its creation never changes: compute it once
            if order.extended_hours:
                # The after-hours session ends 4 h after the regular close (20:00, or 17:00 after
                # a 13:00 early close): the first such end after its creation.
                deadline = next_close(order.created_at_ns - EXTENDED_AFTER_CLOSE_NS) + EXTENDED_AFTER_CLOSE_NS
            else:
                deadline = next_close(order.created_at_ns)
            self._day_deadline[order.id] = deadline
        return now >= deadline

    def _roll_day(self, now_ns: int | None = None) -> None:
        """On a new ET date, last_equity becomes the equity carried over from the previous day."""
        today = trading_date(now_ns if now_ns is not None else self.clock.now_ns()).isoformat()
        if self.account.last_equity_date == today:
            return
        lmv = sum(self.position_value(p) for p in self.positions.values())
        self.account.last_equity = self.account.cash + lmv
        self.account.last_equity_date = today
        self._dirty_account()

    # ---- matching ----------------------------------------------------------------------

    def _match(self, order: Order) -> None:
        q = self.quotes.get(order.symbol)
        if q is None or order.status not in _WORKING:
            return
        if not self.clock.is_open(q.ts_ns if q.ts_ns else None):
            return
        if order.type == "trailing_stop" and not order.stop_triggered:
            self._trail(order, q)
        price = self._executable_price(order, q)
        if price is None:
            return
        if order.notional is not None and not order.qty:
            # The dollar amount becomes shares at the fill price (9 decimals, never more than paid for).
            order.qty = math.floor(order.notional / price * 10**QTY_DECIMALS) / 10**QTY_DECIMALS
            held = self.positions.get(order.symbol)
            if order.side == "sell" and held is not None:
                order.qty = min(order.qty, held.qty)  # the bid fell since the check: sell what is there
            self._dirty_order(order)
        size = q.ask_size if order.side == "buy" else q.bid_size
        fill_qty = min(order.remaining, float(int(size))) if size and size > 0 else 0.0
        group = self.exit_group(order)
        if len(group) > 1:  # an OCO member may not sell more than its siblings left
            sib_filled = sum(s.filled_qty for s in group if s is not order)
            fill_qty = qround(min(fill_qty, order.qty - sib_filled - order.filled_qty))
        if fill_qty <= 0:
            return
        prob = self.partial_fill_prob()
        if prob > 0 and fill_qty > 1 and fill_qty == int(fill_qty) and self._rng.random() < prob:
            fill_qty = float(self._rng.randint(1, int(fill_qty) - 1))
        if order.side == "sell":
            pos = self.positions.get(order.symbol)
            fill_qty = min(fill_qty, pos.qty if pos else 0)
            if fill_qty <= 0:
                return
        self._fill(order, fill_qty, price, q.ts_ns or self.clock.now_ns())

    def _trail(self, order: Order, q: QuoteLike | None = None) -> None:
        """Move a trailing stop's high-water mark (the best touch seen) and its stop price."""
        q = q if q is not None else self.quotes.get(order.symbol)
        if q is not None and q.bid > 0 and q.ask > 0:
            touch = q.bid if order.side == "sell" else q.ask
            if order.hwm is None or (touch > order.hwm if order.side == "sell" else touch < order.hwm):
                order.hwm = touch
        if order.hwm is None:
            return
        if order.trail_price is not None:
            offset = order.trail_price
        else:
            offset = order.hwm * (order.trail_percent or 0.0) / 100.0
        stop = price_round(order.hwm - offset if order.side == "sell" else order.hwm + offset)
        if stop != order.stop_price:  # also after a PATCH of the trail
            order.stop_price = stop
            self._dirty_order(order)

    @staticmethod
    def _executable_price(order: Order, q: QuoteLike) -> float | None:
        touch = q.ask if order.side == "buy" else q.bid
        if order.type in ("stop", "stop_limit", "trailing_stop") and not order.stop_triggered:
            if order.stop_price is None:
                return None
            triggered = touch >= order.stop_price if order.side == "buy" else touch <= order.stop_price
            if not triggered:
                return None
            order.stop_triggered = True
        if order.type in ("market", "stop", "trailing_stop"):
            return touch
        # limit / triggered stop_limit: trade at the touch when it is at or better than the limit
        assert order.limit_price is not None
        if order.side == "buy":
            return touch if touch <= order.limit_price + 1e-9 else None
        return touch if touch >= order.limit_price - 1e-9 else None

    def _fill(self, order: Order, qty: float, price: float, ts_ns: int) -> None:
        pos = self.positions.get(order.symbol)
        if order.side == "buy":
            self.account.cash -= qty * price
            if pos is None:
                pos = Position(symbol=order.symbol, asset_id=order.asset_id, qty=0, avg_entry_price=0.0)
                self.positions[order.symbol] = pos
            pos.avg_entry_price = (pos.avg_entry_price * pos.qty + price * qty) / (pos.qty + qty)
            pos.qty = qround(pos.qty + qty)
        else:
            assert pos is not None
            self.account.cash += qty * price
            pos.qty = qround(pos.qty - qty)
            if pos.qty <= 0:
                del self.positions[order.symbol]
        self._dirty_position(order.symbol)
        self._dirty_account()
        order.filled_qty = qround(order.filled_qty + qty)
        order.filled_notional += qty * price
        order.updated_at_ns = ts_ns
        full = order.filled_qty >= order.qty
        order.status = "filled" if full else "partially_filled"
        if full:
            order.filled_at_ns = ts_ns
        self._dirty_order(order)
        position_qty = self.positions[order.symbol].qty if order.symbol in self.positions else 0
        fill = Fill(
            id=self._new_id(),
            order_id=order.id,
            symbol=order.symbol,
            side=order.side,
            qty=qty,
            price=price,
            ts_ns=ts_ns,
            position_qty=position_qty,
        )
        self.fills.append(fill)
        self._changes.fills.append(fill)
        self._emit("fill" if full else "partial_fill", order, ts_ns, fill)
        self._after_fill(order, full, ts_ns)

    def _after_fill(self, order: Order, full: bool, now: int) -> None:
        if order.leg_ids and full and order.order_class != "oco":  # bracket/oto entry done: its exits go live
            for leg in self.legs_of(order):
                if leg.status == "held":
                    self._set_status(leg, "new", now)
                    self._emit("new", leg, now)
            for leg in self.legs_of(order):
                self._match(leg)
        if full:  # one-cancels-other (bracket legs, an oco pair)
            for sib in self.exit_group(order):
                if sib is not order and sib.is_open:
                    self._close(sib, "canceled", now)

    # ---- state changes ------------------------------------------------------------------

    def _set_status(self, order: Order, status: str, now: int) -> None:
        order.status = status
        order.updated_at_ns = now
        self._dirty_order(order)

    def _close(self, order: Order, status: str, now: int) -> None:
        if status == "canceled":
            order.canceled_at_ns = now
        elif status == "expired":
            order.expired_at_ns = now
        elif status == "rejected":
            order.failed_at_ns = now
        self._set_status(order, status, now)
        self._day_deadline.pop(order.id, None)
        self._emit(status, order, now)

    def _emit(self, event: str, order: Order, ts_ns: int, fill: Fill | None = None) -> None:
        snap = msgspec.structs.replace(order, leg_ids=list(order.leg_ids))
        if fill is None:
            ev = TradeEvent(event=event, order=snap, ts_ns=ts_ns)
        else:
            ev = TradeEvent(
                event=event,
                order=snap,
                ts_ns=ts_ns,
                execution_id=fill.id,
                price=fill.price,
                qty=fill.qty,
                position_qty=fill.position_qty,
            )
        self.on_event(ev)


def _validate_extended(req: OrderRequest) -> None:
    """Alpaca's rules for `extended_hours=true`: a DAY or GTC limit order, simple class.

    The market-order message is Alpaca's as observed in 2026 (HTTP 422; the
    code 42210000 is a best guess, Alpaca's docs do not list it). The stop and
    bracket messages are best guesses in Alpaca's style: its docs say stop
    orders are not eligible for extended hours and bracket orders must have
    `extended_hours` false or omitted.
    """
    if req.type in ("stop", "stop_limit", "trailing_stop"):
        raise VenueError(422, 42210000, "stop orders are not eligible for extended hours trading")
    if req.type != "limit" or req.time_in_force not in ("day", "gtc"):
        raise VenueError(422, 42210000, "extended hours order must be DAY or GTC limit orders")
    if req.order_class != "simple":
        raise VenueError(422, 42210000, "extended hours are not supported for bracket/oco/oto orders")


def _check_stop_base(stop_price: float, base: float) -> None:
    """Alpaca's threshold: a (sell) stop-loss at least $0.01 under its base price, in Alpaca's wording."""
    if stop_price > round(base - 0.01, 2):
        raise VenueError(422, 42210000, f"stop_loss.stop_price must be <= base_price - 0.01. base_price: {base:.2f}")


def _check_stop_limit(req: OrderRequest) -> None:
    if req.stop_loss_limit is not None and req.stop_loss_stop is not None and req.stop_loss_limit > req.stop_loss_stop:
        raise VenueError(422, 42210000, "stop_loss.limit_price must be <= stop_loss.stop_price")


def _validate_trailing(req: OrderRequest) -> None:
    """Alpaca's trailing-stop rules: one of trail_price / trail_percent, single orders, no limit or stop price.

    The rules are Alpaca's ("One of these values must be set", "supported only
    with single orders", day or gtc, never in extended hours); its docs give no
    error texts, so these follow its style.
    """
    if (req.trail_price is None) == (req.trail_percent is None):
        raise VenueError(
            422, 40010001, "exactly one of trail_price or trail_percent is required for trailing_stop orders"
        )
    if req.trail_percent is not None and req.side == "sell" and req.trail_percent >= 100:
        raise VenueError(422, 40010001, "trail_percent must be < 100")
    if req.limit_price is not None or req.stop_price is not None:
        raise VenueError(422, 40010001, "limit_price and stop_price must not be given for trailing_stop orders")
    if req.order_class != "simple":
        raise VenueError(422, 40010001, "trailing_stop orders are supported only as single orders")


def _num(x: float) -> str:
    """Alpaca's money strings: no exponent, no float noise."""
    s = f"{x:.4f}".rstrip("0").rstrip(".")
    return s if s not in ("-0", "") else "0"
