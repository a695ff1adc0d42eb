"""Hand-built Features snapshots for rule tests."""

from __future__ import annotations

from stockade.trading.features import Features


def snap(**kw) -> Features:
    """A warm, calm, trendless snapshot at price 100; override what a test is about."""
    base = dict(
        symbol="X",
        ts_ns=0,
        price=100.0,
        bid=99.99,
        ask=100.01,
        spread_bps=2.0,
        sma_fast=100.0,
        sma_slow=100.0,
        ema_fast=100.0,
        ema_slow=100.0,
        rsi=50.0,
        macd=0.0,
        macd_signal=0.0,
        macd_hist=0.0,
        bb_upper=100.2,
        bb_mid=100.0,
        bb_lower=99.8,
        bb_width=0.004,
        volume_ratio=1.0,
        atr=0.1,
        high_n=100.1,
        low_n=99.9,
        bars_seen=100,
        pct_b=0.5,
        volatility=0.001,
        mom_1=0.0,
        mom_5=0.0,
        mom_10=0.0,
        returns=(0.0,) * 10,
    )
    base.update(kw)
    return Features(**base)
