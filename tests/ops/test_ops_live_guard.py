import pytest

from stockade.config.settings import SettingsError, settings_from_dict
from stockade.ops.live_guard import check_trading_mode

LIVE = {"paper": False, "allow_live": True}


def settings(**alpaca):
    return settings_from_dict({"alpaca": alpaca})


def test_paper_defaults_and_explicit_live_pass():
    assert check_trading_mode(settings(), "alpaca", env={}) == "paper"
    assert check_trading_mode(settings(), "embedded", env={}) == "paper"
    assert check_trading_mode(settings(**LIVE), "alpaca", env={}) == "live"
    # A custom Alpaca-compatible endpoint is taken at its word, either way.
    assert check_trading_mode(settings(**LIVE, trading_url="https://broker.example"), "alpaca", env={}) == "live"
    assert check_trading_mode(settings(trading_url="http://127.0.0.1:8765"), "alpaca", env={}) == "paper"


def test_live_needs_both_switches():
    with pytest.raises(
        SettingsError, match=r"^settings: alpaca.paper = false: live trading also needs alpaca.allow_live = true$"
    ):
        settings(paper=False)


@pytest.mark.parametrize(
    "alpaca, env, expected",
    [
        # paper settings, live endpoint: from the environment (settings are caught at load, below)
        (
            {},
            {"APCA_API_BASE_URL": "https://api.alpaca.markets"},
            r"^settings: alpaca.paper = true but the trading URL https://api.alpaca.markets \(APCA_API_BASE_URL\) "
            r"is Alpaca's live endpoint",
        ),
        # live settings, paper endpoint
        (
            LIVE,
            {"APCA_API_BASE_URL": "https://paper-api.alpaca.markets/"},
            r"^settings: live trading is on \(alpaca.paper = false\) but the trading URL "
            r"https://paper-api.alpaca.markets \(APCA_API_BASE_URL\) is Alpaca's paper endpoint$",
        ),
    ],
)
def test_mismatch_through_the_environment_is_refused(alpaca, env, expected):
    with pytest.raises(SettingsError, match=expected):
        check_trading_mode(settings(**alpaca), "alpaca", env=env)


def test_mismatch_in_settings_is_refused_at_load():
    with pytest.raises(
        SettingsError, match=r'^settings: alpaca.trading_url = "https://api.alpaca.markets": is the live'
    ):
        settings(trading_url="https://api.alpaca.markets")
    with pytest.raises(
        SettingsError,
        match=r'^settings: alpaca.trading_url = "https://paper-api.alpaca.markets/v2": '
        r"is the paper endpoint but live trading is on",
    ):
        settings(**LIVE, trading_url="https://paper-api.alpaca.markets/v2")
    with pytest.raises(SettingsError, match=r"^settings: alpaca.trading_stream_url = .*is the live endpoint"):
        settings(trading_stream_url="wss://api.alpaca.markets/stream")
    with pytest.raises(SettingsError, match=r"^settings: alpaca.trading_stream_url = .*is the paper endpoint"):
        settings(**LIVE, trading_stream_url="wss://paper-api.alpaca.markets/stream")


def test_live_without_keys_would_be_the_paper_venue_and_is_refused():
    with pytest.raises(SettingsError, match=r"^settings: alpaca.paper = false \(live trading\) but no Alpaca keys"):
        check_trading_mode(settings(**LIVE), "embedded", env={})
