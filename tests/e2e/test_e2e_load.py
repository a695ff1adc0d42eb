"""Load: 50 symbols at 20,000 quotes/s for 30 s from a venue in its own process.

Not a timing test: whatever the machine manages, buffers stay bounded (the
streamer conflates quotes per symbol, never queues them), no traded volume
is lost (trades are merged, never dropped: the analyzers get every share a
second, reference connection saw), and no fill is lost (the ledger ends equal
to the venue). The figures themselves (latency, CPU, rates) are for
`python run.py bench`; this run prints them for the record.

It takes about a minute on 2 cores.
"""

from __future__ import annotations

import json

import pytest

from stockade.bench.ingest import run_ingest
from stockade.config.settings import Settings

SYMBOLS = 50
QUOTES_PER_S = 20_000.0
SECONDS = 30.0
# An analyzer's mailbox holds at most max_inflight_per_analyzer quotes, a
# merged trade per quote, and a few timer ticks; a backlog at this rate
# would be tens of thousands.
ANALYZER_MAILBOX_BOUND = 4 * Settings().stream.max_inflight_per_analyzer + 8
ANY_MAILBOX_BOUND = 1_000


@pytest.mark.load
def test_50_symbols_at_20000_quotes_per_s_for_30_s(tmp_path):
    r = run_ingest(
        SECONDS,
        tmp_path,
        SYMBOLS,
        QUOTES_PER_S,
        # Room to trade all along: fills happen under load.
        overrides={"risk": {"max_positions": 20, "max_position_pct": 2.0}},
    )
    print(json.dumps({k: v for k, v in r.items() if k != "what"}, indent=1))
    assert r["quote_to_state_us"]["n"] > 1_000  # the analyzers were fed throughout
    assert r["conflated"] > 0  # the offered rate was beyond what they evaluate: conflation did its job
    by_actor = r["mailbox_max_by_actor"]
    assert by_actor["analyzer:*"] <= ANALYZER_MAILBOX_BOUND, by_actor
    assert r["mailbox_max"] <= ANY_MAILBOX_BOUND, by_actor
    assert r["volume"]["offered"] > 0
    assert r["volume"]["differences"] == {}, r["volume"]  # not one share lost (or invented)
    assert r["fills"]["ledger_mismatches"] == [], r["fills"]
