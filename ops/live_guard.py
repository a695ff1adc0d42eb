"""The live/paper guard: real money only on purpose, and never by half.

Settings validation already refuses `paper = false` without `allow_live =
true`, and a settings URL on the wrong side. This adds what depends on the
environment at start: `$APCA_API_BASE_URL` on the wrong side, and live
settings that would end up on the embedded (paper) venue for lack of keys.

The signal is the trading host: Alpaca documents paper and live as separate
domains with separate credentials (paper-api.alpaca.markets vs
api.alpaca.markets). Key-id prefixes are not documented by Alpaca, so they
are not used. A custom endpoint (an Alpaca-compatible venue) is taken at its
word: the operator chose it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from stockade.broker.rest import endpoints_for
from stockade.config.settings import LIVE_TRADING_URL, PAPER_TRADING_URL, Settings, SettingsError

LIVE_HOST = urlsplit(LIVE_TRADING_URL).hostname
PAPER_HOST = urlsplit(PAPER_TRADING_URL).hostname


def check_trading_mode(settings: Settings, mode: str, env: Mapping[str, str] = os.environ) -> str:
    """Raise SettingsError (exit 2) on a paper/live mismatch; else return "live" or "paper"."""
    a = settings.alpaca
    if mode == "embedded":
        if a.live:
            raise SettingsError(
                "settings: alpaca.paper = false (live trading) but no Alpaca keys are configured: "
                "stockade would trade on the embedded paper venue; set APCA_API_KEY_ID/APCA_API_SECRET_KEY "
                "or set alpaca.paper = true"
            )
        return "paper"
    try:
        url = endpoints_for(a, env).trading_url
    except ValueError as exc:
        raise SettingsError(f"settings: {exc}") from None
    source = (
        "alpaca.trading_url"
        if a.trading_url
        else ("APCA_API_BASE_URL" if env.get("APCA_API_BASE_URL") else "the default")
    )
    host = urlsplit(url).hostname
    if not a.live and host == LIVE_HOST:
        raise SettingsError(
            f"settings: alpaca.paper = true but the trading URL {url} ({source}) is Alpaca's live endpoint; "
            "live trading needs alpaca.paper = false and alpaca.allow_live = true"
        )
    if a.live and host == PAPER_HOST:
        raise SettingsError(
            f"settings: live trading is on (alpaca.paper = false) but the trading URL {url} ({source}) "
            "is Alpaca's paper endpoint"
        )
    return "live" if a.live else "paper"
