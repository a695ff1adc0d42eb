"""500 symbols on one daemon: it starts, every analyzer warms up, none crashes.

Before the daemon imported alpaca-py's modules up front (ops/preload.py), 500
analyzer threads importing its data module for the first time at once
crashed one of them with `ImportError ... partially initialized module`.
The daemon is a real subprocess (a fresh interpreter, nothing imported yet)
against a venue process serving all 500 symbols; quotes are slow so the test
measures start-up, not ingest.

The analyzers share `[runtime] analyzer_threads` threads (supervisors/pool.py):
the daemon's thread count is bounded by that setting, not by the symbols (it
was 2 per symbol + ~30: 1,031). Warm-up bars come for many symbols per
request (broker/warmup_bars.py), so the venue runs with the free plan's
data budget (200 calls/min): one request per analyzer would leave 300 of
them cold; the venue's access log counts the bars requests.
"""

from __future__ import annotations

import itertools
import re
import string

import psutil
from daemon_harness import DaemonProcess, VenueProcess, settings_text
from waiting import wait_for

N_SYMBOLS = 500
ANALYZER_THREADS = 2
# Everything else the daemon runs (supervisors and their timers, the quote and
# trade streams, control socket, dashboard, venue clients, lmdb, telemetry):
# about 30, whatever the symbols. A stuck analyzer worker may add a few more.
OTHER_THREADS = 50


def symbols(n: int) -> list[str]:
    names = ("X" + "".join(p) for p in itertools.product(string.ascii_uppercase, repeat=3))
    return list(itertools.islice(names, n))


def test_500_symbols_start_every_analyzer_warm_none_restarted(short_dir):
    syms = symbols(N_SYMBOLS)
    venue_settings = short_dir / "venue.toml"
    venue_settings.write_text("[venue]\nrate_limit_per_min = 200\n")  # Alpaca's free plan
    venue = VenueProcess(
        short_dir / "venue", symbols=",".join(syms), quote_rate=0.2, args=("--settings", str(venue_settings))
    )
    text = settings_text(
        venue,
        trading={"symbols": syms},
        voter={"mode": "manual"},  # start-up is the subject: no orders
        # The machine may be shared: heartbeats as shipped, not the harness's tight ones.
        supervision={"heartbeat_interval_s": 2.0, "heartbeat_timeout_s": 10.0},
        logging={"level": "INFO"},
        runtime={"analyzer_threads": ANALYZER_THREADS},
    )
    daemon = DaemonProcess(short_dir / "data", text, venue)
    try:
        daemon.wait_ready(timeout=240)

        def warmed() -> int:
            return daemon.log().count(": warmed up from ")

        wait_for(lambda: warmed() >= N_SYMBOLS, 240, 0.5, f"{N_SYMBOLS} analyzers warmed up")
        log = daemon.log()
        warm = set(re.findall(r"analyzer:([A-Z0-9.]+): warmed up from \d+ historical bars \(ready=True\)", log))
        assert warm == set(syms), sorted(set(syms) - warm)[:10]
        assert "ImportError" not in log and "partially initialized" not in log
        assert "starting cold" not in log
        actors = {a["name"]: a for a in daemon.status()["actors"]}
        analyzers = [a for name, a in actors.items() if name.startswith("analyzer:")]
        assert len(analyzers) == N_SYMBOLS
        restarted = {a["name"]: a["restarts"] for a in analyzers if a["restarts"] or not a["alive"]}
        assert not restarted, restarted
        threads = psutil.Process(daemon.proc.pid).num_threads()
        assert threads <= ANALYZER_THREADS + OTHER_THREADS, threads
        bars_requests = len(re.findall(r"GET /v2/stocks/bars ", venue.log_path.read_text(errors="replace")))
        assert 0 < bars_requests <= 60, bars_requests  # one per symbol was 500
    finally:
        try:
            assert daemon.stop(timeout=120) == 0
        finally:
            venue.stop()
