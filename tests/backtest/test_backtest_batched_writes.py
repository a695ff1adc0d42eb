"""A replay's storage writes batched into one transaction per BATCH_EVENTS events give the same records.

The batch is only a speed-up (fewer lmdb commits): the actors read what
they wrote as before, so the records must be byte-identical to a run that
commits every write on its own, as the daemon does. Real actors, the
alpaca-py clients on the in-process venue, real lmdb files.
"""

from __future__ import annotations

import datetime as dt

from stockade.config.settings import settings_from_dict
from stockade.ops import backtest
from stockade.ops.backtest import Engine, records
from stockade.ops.backtest_data import SimSource

SYMBOLS = ("AAPL", "MSFT", "NVDA")
DAY = dt.date(2026, 6, 2)


def run(out, batch_writes: bool) -> dict:
    settings = settings_from_dict({"logging": {"level": "WARNING"}})
    source = SimSource(SYMBOLS, 4, DAY, DAY)
    b = settings.backtest
    engine = Engine(settings, SYMBOLS, 4, out, None, market=source.market, batch_writes=batch_writes)
    try:
        for day in source.days(b.bar_spread_bps, b.quote_size):
            engine.replay(day.events)
        return engine.finish()
    finally:
        engine.close()


def test_batched_writes_give_the_records_of_one_commit_per_write(tmp_path, monkeypatch):
    monkeypatch.setattr(backtest, "BATCH_EVENTS", 1_000)  # one day of three symbols: several batches
    batched = run(tmp_path / "batched", True)
    assert batched["events"] > 2 * backtest.BATCH_EVENTS  # several batches, and a partial one
    assert batched["orders"] > 0 and batched["fills"] > 0, batched  # a run that trades and refuses
    single = run(tmp_path / "single", False)
    assert batched == single
    assert records(tmp_path / "batched") == records(tmp_path / "single")
