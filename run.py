#!/usr/bin/env python3
"""stockade: a supervised, actor-model trading daemon for US equities through Alpaca.

    python run.py [run]   the daemon (embedded paper venue when no Alpaca keys)
    python run.py ctl     talk to a running daemon over its control socket
    python run.py venue   the Alpaca-compatible paper venue on its own
    python run.py bench   benchmarks, one JSON document on stdout
    python run.py check   validate settings; check broker, clock, data feed, control socket
    python run.py train   train the ensemble's ML models (scikit-learn -> ONNX)
    python run.py report  trading results per member, symbol and portfolio (--json)
    python run.py backtest  replay history through the same actors on a simulated clock
    python run.py sweep   backtest a grid of settings (local processes or Ray), ranked out-of-sample

Exit status: 0 success, 2 bad settings or usage, 1 anything else.
"""

from __future__ import annotations

import sys

USAGE = "usage: python run.py [run|ctl|venue|bench|check|report|train|backtest|sweep] [--settings FILE] [--data-dir DIR] [options]"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        print(USAGE)
        return 0
    command, rest = ("run", argv) if not argv or argv[0].startswith("-") else (argv[0], argv[1:])
    try:
        if command == "run":
            from stockade.ops.daemon import main as entry
        elif command == "ctl":
            from stockade.ops.ctl import main as entry
        elif command == "venue":
            from stockade.venue.cli import main as entry
        elif command == "bench":
            from stockade.bench.runner import main as entry
        elif command == "check":
            from stockade.ops.check import main as entry
        elif command == "train":
            from stockade.ops.train import main as entry
        elif command == "backtest":
            from stockade.ops.backtest import main as entry
        elif command == "sweep":
            from stockade.ops.sweep import main as entry
        elif command == "report":
            from stockade.ops.report import main as entry
        else:
            print(f"run.py: unknown command {command!r}\n{USAGE}", file=sys.stderr)
            return 2
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "stockade":
            print(
                "run.py: the stockade package is not installed; run the README's install line "
                "(python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e .)",
                file=sys.stderr,
            )
            return 2
        raise
    return entry(rest)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        sys.exit(1)
