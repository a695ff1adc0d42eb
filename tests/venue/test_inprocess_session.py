"""The in-process session hands the venue's handlers the query a real request would carry.

It remembers the (path, query) of requests it saw (the periodic passes send
the same ones over and over): a remembered query must be the one `requests`
would encode for those very params, never an equal-looking neighbour's.
"""

from __future__ import annotations

import decimal
from urllib.parse import parse_qsl, urlsplit

import requests
from alpaca.common.enums import Sort
from alpaca.trading.enums import QueryOrderStatus

from stockade.venue.inprocess import InProcessVenue


def _wire(url: str, params: dict) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(parse_qsl(requests.models.RequestEncodingMixin._encode_params(params), keep_blank_values=True))
    return parts.path, query


def test_a_remembered_query_is_the_one_requests_would_send_for_these_params():
    session = InProcessVenue(("AAPL",), lambda: 0).session()
    url = "https://paper-api.alpaca.markets/v2/orders"
    cases = [
        {"status": QueryOrderStatus.OPEN, "limit": 500, "direction": Sort.DESC, "nested": False},
        {"status": QueryOrderStatus.OPEN, "limit": 500, "direction": Sort.DESC, "nested": 0},  # == False
        {"status": "open", "limit": 500, "direction": "desc", "nested": False},
        {"nested": True},
        {"nested": 1},  # == True, encodes "1"
        {"limit": 1.0},
        {"limit": decimal.Decimal("1.00")},  # == 1.0, prints differently
        {"symbols": ["AAPL", "MSFT"]},
        {},
    ]
    for _ in range(2):  # the second round is answered from what the first one remembered
        for params in cases:
            got = session._target(url, params)
            assert got == _wire(url, params), params
            got[1]["status"] = "scribbled"  # the caller's own copy
    assert session._target(url + "?after=x", {"nested": True}) == _wire(url + "?after=x", {"nested": True})
