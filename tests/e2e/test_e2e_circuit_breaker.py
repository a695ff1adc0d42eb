"""The loss breaker with real money's moving parts: a daemon trading on a
standalone venue, a scripted price crash through the venue's admin endpoint,
and the daemon ends flat and HALTED."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime

from daemon_harness import DaemonProcess, VenueProcess, settings_text
from waiting import wait_for


def _admin(venue: VenueProcess, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        venue.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"APCA-API-KEY-ID": venue.key, "APCA-API-SECRET-KEY": venue.secret, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def _open_orders(venue: VenueProcess) -> list:
    return [
        o
        for o in venue.orders()
        if o.status.value in ("new", "accepted", "partially_filled", "held", "pending_new", "accepted_for_bidding")
    ]


def _equity(venue: VenueProcess) -> float:
    return float(venue.client().get_account().equity)


def _seed_position(venue: VenueProcess, symbol: str, value: float) -> int:
    """Buy about `value` dollars of `symbol` at the venue (the reconciler adopts it)."""
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest

    client = venue.client()
    qty = max(1, int(value / _mark(venue, symbol)))
    client.submit_order(MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    wait_for(lambda: venue.positions().get(symbol) == qty, 30, 0.5, f"{qty} {symbol} bought")
    return qty


def _mark(venue: VenueProcess, symbol: str) -> float:
    from alpaca.data.historical import StockHistoricalDataClient
    from alpaca.data.requests import StockLatestQuoteRequest

    data = StockHistoricalDataClient(venue.key, venue.secret, url_override=venue.base_url)
    q = data.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols=symbol))[symbol]
    return (float(q.bid_price) + float(q.ask_price)) / 2.0


def test_scripted_crash_trips_the_loss_breaker_and_ends_flat_and_halted(short_dir, venue):
    # A position of about 20% of equity, held when the daemon starts (adopted
    # by its reconciler), plus whatever the daemon buys itself. A 40% crash
    # of every symbol costs about 8% of equity, far past the 1% loss breaker.
    # The reconciler's protective stop sits below the crash, so what sells
    # the SPY is the breaker's liquidation, not that stop.
    qty = _seed_position(venue, "SPY", 20_000.0)
    settings = settings_text(
        venue,
        risk={
            "daily_loss_limit_pct": 0.5,
            "loss_breaker_pct": 1.0,
            "max_sector_pct": 100.0,
            "max_portfolio_risk_pct": 50.0,
        },
        reconciler={"protective_stop_pct": 60.0},
    )
    daemon = DaemonProcess(short_dir / "data", settings, venue)
    try:
        daemon.wait_ready()
        assert daemon.status()["trading_state"] == "ACTIVE"
        wait_for(
            lambda: any(p["symbol"] == "SPY" for p in daemon.status()["positions"]),
            30,
            0.5,
            "the daemon knows the SPY position",
        )
        before = _equity(venue)

        crashed_at = datetime.now(UTC)
        moved = _admin(venue, "/admin/crash", {"pct": 40})["crashed"]
        assert set(moved) == {"AAPL", "MSFT", "NVDA", "AMZN", "SPY"}
        wait_for(lambda: _equity(venue) < before * 0.95, 30, 1.0, "the crash reaches the venue's equity")

        wait_for(lambda: daemon.status()["trading_state"] == "HALTED", 60, 0.5, "HALTED by the loss breaker")
        status = daemon.status()
        assert "loss breaker" in status["trading_state_reason"], status["trading_state_reason"]
        wait_for(lambda: not venue.positions() and not _open_orders(venue), 60, 2.0, "venue flat, no open orders")
        assert "LOSS BREAKER" in daemon.log()
        assert "KILL requested by risk_guard:loss_breaker" in daemon.log()
        # The liquidation's market sale of SPY, after the crash: at least the seeded shares (the
        # daemon may have bought SPY too; its own bracket stops may have sold some of those).
        sold = [
            int(float(o.filled_qty))
            for o in venue.orders()
            if o.symbol == "SPY"
            and o.side.value == "sell"
            and o.status.value == "filled"
            and o.type.value == "market"
            and o.created_at >= crashed_at
        ]
        assert len(sold) == 1 and sold[0] >= qty, sold

        # Still flat and halted a reconcile pass later: nothing re-entered.
        placed = daemon.status()["orders_placed"]
        # No event marks "nothing happened": wait out two reconcile intervals (2 s each).
        uptime = daemon.status()["uptime_s"]
        wait_for(lambda: daemon.status()["uptime_s"] >= uptime + 5.0, 30, 0.5, "two more reconcile intervals")
        assert daemon.status()["trading_state"] == "HALTED"
        assert daemon.status()["orders_placed"] == placed
        assert not venue.positions()
    finally:
        assert daemon.stop() == 0
    keys = _alert_keys(short_dir / "data")
    assert "loss-breaker" in keys and "kill" in keys, keys


def _alert_keys(data_dir) -> set[str]:
    from stockade.storage.store import Store

    store = Store.open(data_dir, readonly=True)
    try:
        return {a.key for a in store.alerts.latest(1000)}
    finally:
        store.close()
