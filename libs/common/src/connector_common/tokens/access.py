"""Reading an account's access token, and getting a new one after eBay refused it.

Readers never take the lease: they read the current ciphertext. When eBay rejects it (the 401
path of the health checker) they go through :meth:`TokenStore.refresh` like the refresher does,
so the two never refresh one account at the same time: if the refresher holds the lease, the
reader waits for its result instead of starting a second refresh.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import SecretStr

from connector_common.db.engine import unit_of_work
from connector_common.tokens import repository
from connector_common.tokens.store import RefreshOutcome, RefreshRequest, TokenStore

POLL_SECONDS = 0.2


class TokenUnavailable(Exception):
    """No usable access token: the account needs reconnecting, is off, or refreshing failed."""

    def __init__(self, outcome: RefreshOutcome, reason: str, retry_in: float | None = None):
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.retry_in = retry_in


@dataclass(frozen=True)
class CurrentToken:
    version: int
    access_expires_at: datetime | None
    expired: bool
    access_token: SecretStr = field(repr=False)


async def current_token(store: TokenStore, account_id: uuid.UUID) -> CurrentToken | None:
    """The stored access token, decrypted; None when the account has no token row."""
    async with unit_of_work(store.sessions) as session:
        row = await repository.read_token(session, account_id)
    if row is None:
        return None
    if row.reconnect_required_at is not None:
        raise TokenUnavailable(RefreshOutcome.RECONNECT_REQUIRED, "the seller must reconnect")
    if row.access_token_ct is None:
        raise TokenUnavailable(RefreshOutcome.RECONNECT_REQUIRED, "no access token is stored")
    plain = store.cipher.decrypt(row.access_token_ct, account_id, "access_token")
    expired = row.access_expires_at is None or row.access_expires_at <= row.now
    return CurrentToken(row.version, row.access_expires_at, expired, SecretStr(plain))


async def token_after_rejection(
    store: TokenStore, account_id: uuid.UUID, rejected_version: int, *, wait_seconds: float
) -> CurrentToken:
    """A token newer than ``rejected_version``: refreshed by us, or by whoever held the lease."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        result = await store.refresh(
            RefreshRequest(account_id, token_version=rejected_version, reason="rejected")
        )
        if result.outcome is RefreshOutcome.REFRESHED and result.access_token is not None:
            assert result.token_version is not None
            return CurrentToken(
                result.token_version, result.access_expires_at, False, result.access_token
            )
        if result.outcome in (RefreshOutcome.ALREADY_FRESH, RefreshOutcome.LEASE_LOST):
            newer = await current_token(store, account_id)
            if newer is not None and newer.version > rejected_version:
                return newer
        elif result.outcome is not RefreshOutcome.BUSY:
            raise TokenUnavailable(
                result.outcome, result.error or result.outcome.value, result.retry_in
            )
        # Someone else is refreshing: wait for their result rather than racing them.
        if loop.time() >= deadline:
            raise TokenUnavailable(
                RefreshOutcome.BUSY, "another replica is still refreshing", result.retry_in
            )
        newer = await _wait_for_lease(store, account_id, rejected_version, deadline)
        if newer is not None:
            return newer


async def _wait_for_lease(
    store: TokenStore, account_id: uuid.UUID, rejected_version: int, deadline: float
) -> CurrentToken | None:
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        await asyncio.sleep(POLL_SECONDS)
        async with unit_of_work(store.sessions) as session:
            row = await repository.read_token(session, account_id)
        if row is None:
            raise TokenUnavailable(RefreshOutcome.UNKNOWN_ACCOUNT, "the account is gone")
        if row.version > rejected_version:
            return await current_token(store, account_id)
        if row.lease_until is None or row.lease_until <= row.now:
            return None  # the lease is free again: try the refresh ourselves
    return None
