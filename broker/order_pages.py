"""Every order of a query, page by page: Alpaca answers at most 500 orders a call.

GET /v2/orders pages by submission time only (`after` and `until`, both
exclusive, and `direction`), with no cursor. Pages here go newest first, each
ending `until` just past the oldest order the previous page held: orders that
share that instant (a bracket's legs are submitted with their parent) come
again and are kept once, by id, instead of being skipped at the boundary.
Each page is one REST call on the caller's client (and budget).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

PAGE_LIMIT = 500  # Alpaca's maximum `limit`
MAX_PAGES = 100  # 50,000 orders: far past any account stockade runs; bounds the loop


class OrderPagingError(RuntimeError):
    """The orders could not all be read (a page made no progress, or too many pages)."""


def _submitted(order: Any) -> datetime:
    moment = order.submitted_at or order.created_at
    if moment is None:
        raise OrderPagingError(f"order {order.id} has neither submitted_at nor created_at")
    return moment


def list_all_orders(
    client: Any,
    status: str = "open",
    *,
    after: datetime | None = None,
    nested: bool = False,
    page_limit: int = PAGE_LIMIT,
    max_pages: int = MAX_PAGES,
) -> list[Any]:
    """Every order with `status` ("open", "closed", "all") submitted after `after`, newest first.

    Raises OrderPagingError rather than return a partial list: a caller that
    takes a missing order for a missing exit order would act on a falsehood.
    """
    from alpaca.common.enums import Sort
    from alpaca.trading.enums import QueryOrderStatus
    from alpaca.trading.requests import GetOrdersRequest

    seen: dict[str, Any] = {}
    until: datetime | None = None
    for _ in range(max_pages):
        page = client.get_orders(
            GetOrdersRequest(
                status=QueryOrderStatus(status),
                after=after,
                until=until,
                limit=page_limit,
                direction=Sort.DESC,
                nested=nested,
            )
        )
        fresh = 0
        for order in page:
            if str(order.id) not in seen:
                seen[str(order.id)] = order
                fresh += 1
        if len(page) < page_limit:
            return sorted(seen.values(), key=_submitted, reverse=True)
        if not fresh:
            raise OrderPagingError(f"more than {page_limit} orders submitted at {until}: cannot page past them")
        # `until` is exclusive: one microsecond past the oldest (alpaca-py's
        # datetimes hold microseconds) brings the orders of that instant back.
        until = min(_submitted(o) for o in page) + timedelta(microseconds=1)
    raise OrderPagingError(f"more than {max_pages} pages of {page_limit} orders")


def open_orders(client: Any) -> list[Any]:
    """Every order resting at the broker (bracket legs included, not nested)."""
    return list_all_orders(client, "open")
