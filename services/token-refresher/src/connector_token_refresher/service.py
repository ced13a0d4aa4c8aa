"""Refresh one account's token for one work message."""

from __future__ import annotations

from connector_common.events import RefreshToken
from connector_common.tokens.store import RefreshRequest, RefreshResult, TokenStore


async def refresh_account(store: TokenStore, command: RefreshToken) -> RefreshResult:
    """Refresh unless the token is already fresh, another replica has it, or it must not be.

    The store holds the account's lease across the eBay call and writes only while the lease
    holds, so a redelivered or duplicated message never refreshes an account twice.
    """
    return await store.refresh(
        RefreshRequest(
            account_id=command.account_id,
            org_id=command.org_id,
            token_version=command.token_version,
            reason=command.reason,
        )
    )
