"""The 401 refresh-and-retry rule: one refresh, one retry, never a loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from connector_common.ebay.errors import AccessTokenRejected
from connector_common.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")


async def call_with_token_refresh(
    call: Callable[[str], Awaitable[T]],
    access_token: str,
    refresh: Callable[[], Awaitable[str]],
) -> T:
    """``call(access_token)``; if eBay rejects the token, ``refresh()`` once and retry once.

    A second rejection is raised to the caller (the seller probably has to consent again);
    errors from ``refresh()`` itself (e.g. ``InvalidGrant``) propagate unchanged.
    """
    try:
        return await call(access_token)
    except AccessTokenRejected as first:
        log.info("ebay_access_token_rejected_refreshing", error_code=first.error_code)
    new_token = await refresh()
    return await call(new_token)
