"""SQL of the refresh lease on ``ebay_tokens``: claim with a fencing epoch, write only while the
claim still holds (reliability-notes §3).

A claim bumps ``lease_epoch``; every write after the eBay call says ``WHERE lease_epoch = :epoch
AND lease_owner = :owner``. Whoever replaces tokens meanwhile (another refresher after our lease
expired, the API on reconnect) bumps the epoch too, so a paused or slow holder's late write
matches no row and is discarded. Times are PostgreSQL's ``now()``: one clock for all replicas.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Claim:
    """The lease is ours (until ``lease_until``) under ``epoch``; the row as it was then."""

    account_id: uuid.UUID
    org_id: uuid.UUID
    house_name: str
    is_active: bool
    epoch: int
    version: int
    refresh_token_ct: bytes | None
    access_expires_at: datetime | None
    scopes: list[str]
    refresh_enabled: bool
    reconnect_required_at: datetime | None
    consecutive_failures: int
    now: datetime
    refresh_expires_at: datetime | None = None


@dataclass(frozen=True)
class Busy:
    """Another holder has the lease until ``lease_until`` (None: it was just released)."""

    lease_until: datetime | None
    now: datetime


@dataclass(frozen=True)
class TokenRow:
    """What a reader (the health checker) needs, without a lease."""

    account_id: uuid.UUID
    org_id: uuid.UUID
    version: int
    access_token_ct: bytes | None
    access_expires_at: datetime | None
    refresh_enabled: bool
    reconnect_required_at: datetime | None
    lease_until: datetime | None
    now: datetime


async def claim_lease(
    session: AsyncSession, account_id: uuid.UUID, owner: str, lease: timedelta
) -> Claim | Busy | None:
    """Take the refresh lease; ``None`` when the account (or its token row) does not exist."""
    row = (
        await session.execute(
            text(
                """
                UPDATE ebay_tokens AS t
                   SET lease_owner = :owner, lease_until = now() + :lease,
                       lease_epoch = t.lease_epoch + 1
                  FROM ebay_accounts AS a
                 WHERE t.account_id = :id AND a.id = t.account_id
                   AND (t.lease_until IS NULL OR t.lease_until < now())
             RETURNING t.account_id, a.org_id, a.house_name, a.is_active, t.lease_epoch,
                       t.version, t.refresh_token_ct, t.access_expires_at, t.scopes,
                       t.refresh_enabled, t.reconnect_required_at, t.consecutive_failures, now(),
                       t.refresh_expires_at
                """
            ),
            {"id": account_id, "owner": owner, "lease": lease},
        )
    ).one_or_none()
    if row is not None:
        return Claim(*row)
    held = (
        await session.execute(
            text("SELECT lease_until, now() FROM ebay_tokens WHERE account_id = :id"),
            {"id": account_id},
        )
    ).one_or_none()
    if held is None:
        return None
    return Busy(lease_until=held[0], now=held[1])


async def release_lease(
    session: AsyncSession, account_id: uuid.UUID, owner: str, epoch: int
) -> bool:
    """Give the lease back untouched (nothing to write); False if it was no longer ours."""
    result = await session.execute(
        text(
            "UPDATE ebay_tokens SET lease_owner = NULL, lease_until = NULL "
            "WHERE account_id = :id AND lease_epoch = :epoch AND lease_owner = :owner"
        ),
        {"id": account_id, "epoch": epoch, "owner": owner},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def store_refreshed(
    session: AsyncSession,
    claim: Claim,
    owner: str,
    *,
    access_token_ct: bytes,
    refresh_token_ct: bytes,
    key_id: str,
    access_expires_at: datetime,
    refresh_expires_at: datetime | None,
) -> int | None:
    """Write new token material if the claim still holds; returns the new version or None."""
    new_version = (
        await session.execute(
            text(
                """
                UPDATE ebay_tokens
                   SET access_token_ct = :access, refresh_token_ct = :refresh, key_id = :key_id,
                       access_expires_at = :expires,
                       refresh_expires_at = COALESCE(:refresh_expires, refresh_expires_at),
                       last_refreshed_at = now(), last_refresh_error = NULL,
                       consecutive_failures = 0, retry_at = NULL, refresh_requested_at = NULL,
                       version = version + 1, lease_epoch = lease_epoch + 1,
                       lease_owner = NULL, lease_until = NULL, updated_at = now()
                 WHERE account_id = :id AND lease_epoch = :epoch AND lease_owner = :owner
             RETURNING version
                """
            ),
            {
                "access": access_token_ct,
                "refresh": refresh_token_ct,
                "key_id": key_id,
                "expires": access_expires_at,
                "refresh_expires": refresh_expires_at,
                "id": claim.account_id,
                "epoch": claim.epoch,
                "owner": owner,
            },
        )
    ).scalar_one_or_none()
    return int(new_version) if new_version is not None else None


async def record_failure(
    session: AsyncSession,
    claim: Claim,
    owner: str,
    *,
    error: str,
    retry_in: timedelta,
) -> tuple[int, datetime] | None:
    """Count a failed refresh and back off; returns (streak length, retry_at), None if the
    lease is lost.

    ``refresh_requested_at`` moves to ``retry_at``: the delayed redelivery does the retry, the
    scheduler re-publishes only if that got lost (after ``retry_at`` + its requeue interval).
    """
    row = (
        await session.execute(
            text(
                """
                UPDATE ebay_tokens
                   SET consecutive_failures = consecutive_failures + 1,
                       last_refresh_error = :error, retry_at = now() + :retry_in,
                       refresh_requested_at = now() + :retry_in,
                       lease_owner = NULL, lease_until = NULL, updated_at = now()
                 WHERE account_id = :id AND lease_epoch = :epoch AND lease_owner = :owner
             RETURNING consecutive_failures, retry_at
                """
            ),
            {
                "error": error[:500],
                "retry_in": retry_in,
                "id": claim.account_id,
                "epoch": claim.epoch,
                "owner": owner,
            },
        )
    ).one_or_none()
    return (int(row[0]), row[1]) if row is not None else None


async def mark_reconnect_required(
    session: AsyncSession, claim: Claim, owner: str, *, error: str
) -> bool | None:
    """Stop refreshing and checking until the seller reconnects.

    The request that ended here is answered: ``refresh_requested_at`` is cleared so that, once
    the seller reconnects, the scheduler does not wait out a requeue interval first.

    Returns True when this write made the account reconnect-required (announce it once), False
    when it already was, None when the lease was lost (someone wrote newer tokens meanwhile).
    """
    was_required = (
        await session.execute(
            text(
                """
                UPDATE ebay_tokens AS t
                   SET reconnect_required_at = COALESCE(t.reconnect_required_at, now()),
                       refresh_enabled = false, last_refresh_error = :error, retry_at = NULL,
                       refresh_requested_at = NULL,
                       lease_owner = NULL, lease_until = NULL, updated_at = now()
                  FROM ebay_tokens AS before
                 WHERE t.account_id = :id AND before.account_id = t.account_id
                   AND t.lease_epoch = :epoch AND t.lease_owner = :owner
             RETURNING before.reconnect_required_at IS NOT NULL
                """
            ),
            {"error": error[:500], "id": claim.account_id, "epoch": claim.epoch, "owner": owner},
        )
    ).scalar_one_or_none()
    if was_required is None:
        return None
    await session.execute(
        text(
            "UPDATE ebay_accounts SET next_health_check_at = NULL, updated_at = now() "
            "WHERE id = :id"
        ),
        {"id": claim.account_id},
    )
    return not was_required


async def read_token(session: AsyncSession, account_id: uuid.UUID) -> TokenRow | None:
    """The current access token row (no lease: reading never waits for a refresh)."""
    row = (
        await session.execute(
            text(
                """
                SELECT t.account_id, a.org_id, t.version, t.access_token_ct,
                       t.access_expires_at, t.refresh_enabled, t.reconnect_required_at,
                       t.lease_until, now()
                  FROM ebay_tokens t JOIN ebay_accounts a ON a.id = t.account_id
                 WHERE t.account_id = :id
                """
            ),
            {"id": account_id},
        )
    ).one_or_none()
    return TokenRow(*row) if row is not None else None
