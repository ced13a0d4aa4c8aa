"""SQL of the refresh lease on ``ebay_tokens``: claim with a fencing epoch, write only while the
claim still holds (reliability-notes §3).

A claim bumps ``lease_epoch``; every write after the eBay call says ``WHERE lease_epoch = :epoch
AND lease_owner = :owner``. Whoever replaces tokens meanwhile (another refresher after our lease
expired, the API on reconnect) bumps the epoch too, so a paused or slow holder's late write
matches no row and is discarded. Times are PostgreSQL's ``now()``: one clock for all replicas.

The hot statements take many accounts at once (``*_many``): one statement claims a batch of
leases and reads their circuit breakers, one statement writes a batch of refreshed tokens and
their outbox events, with the fencing checked row by row. The single-account functions are the
same statements with one row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from connector_common.outbox import OutboxRow

Executor = AsyncSession | AsyncConnection


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
    lease_until: datetime | None = None
    # The account's circuit breaker row as it was (None: no row, the breaker is closed).
    breaker_state: str | None = None
    breaker_failures: int = 0
    breaker_open_until: datetime | None = None
    breaker_probe_until: datetime | None = None


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


_CLAIM_MANY = text(
    """
    WITH wanted AS (SELECT DISTINCT unnest(CAST(:ids AS uuid[])) AS id),
    claimed AS (
        UPDATE ebay_tokens AS t
           SET lease_owner = :owner, lease_until = now() + :lease,
               lease_epoch = t.lease_epoch + 1
          FROM ebay_accounts AS a, wanted AS w
         WHERE t.account_id = w.id AND a.id = t.account_id
           AND (t.lease_until IS NULL OR t.lease_until < now())
     RETURNING t.account_id, a.org_id, a.house_name, a.is_active, t.lease_epoch, t.version,
               t.refresh_token_ct, t.access_expires_at, t.scopes, t.refresh_enabled,
               t.reconnect_required_at, t.consecutive_failures, t.lease_until,
               t.refresh_expires_at
    )
    SELECT c.account_id, true AS claimed, c.org_id, c.house_name, c.is_active, c.lease_epoch,
           c.version, c.refresh_token_ct, c.access_expires_at, c.scopes, c.refresh_enabled,
           c.reconnect_required_at, c.consecutive_failures, now() AS now, c.lease_until,
           b.state, b.consecutive_failures, b.open_until, b.probe_until, c.refresh_expires_at
      FROM claimed AS c
      LEFT JOIN circuit_breakers AS b ON b.key = c.account_id::text
    UNION ALL
    -- Held by someone else (the statement's snapshot shows their lease, not ours).
    SELECT t.account_id, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, now(), t.lease_until, NULL, NULL, NULL, NULL, NULL
      FROM ebay_tokens AS t JOIN wanted AS w ON w.id = t.account_id
     WHERE t.account_id NOT IN (SELECT account_id FROM claimed)
    """
)


async def claim_leases(
    executor: Executor, account_ids: Sequence[uuid.UUID], owner: str, lease: timedelta
) -> dict[uuid.UUID, Claim | Busy]:
    """Take the refresh leases of many accounts in one statement, reading their circuit breakers
    too; an account (or token row) that does not exist is missing from the answer."""
    rows = await executor.execute(
        _CLAIM_MANY, {"ids": list(account_ids), "owner": owner, "lease": lease}
    )
    found: dict[uuid.UUID, Claim | Busy] = {}
    for row in rows:
        if row.claimed:
            found[row.account_id] = Claim(
                account_id=row.account_id,
                org_id=row.org_id,
                house_name=row.house_name,
                is_active=row.is_active,
                epoch=row.lease_epoch,
                version=row.version,
                refresh_token_ct=row.refresh_token_ct,
                access_expires_at=row.access_expires_at,
                scopes=list(row.scopes or []),
                refresh_enabled=row.refresh_enabled,
                reconnect_required_at=row.reconnect_required_at,
                consecutive_failures=row[12],
                now=row.now,
                lease_until=row.lease_until,
                breaker_state=row.state,
                breaker_failures=row[16] or 0,
                breaker_open_until=row.open_until,
                breaker_probe_until=row.probe_until,
                refresh_expires_at=row.refresh_expires_at,
            )
        else:
            found[row.account_id] = Busy(lease_until=row.lease_until, now=row.now)
    return found


async def claim_lease(
    session: Executor, account_id: uuid.UUID, owner: str, lease: timedelta
) -> Claim | Busy | None:
    """Take the refresh lease; ``None`` when the account (or its token row) does not exist."""
    return (await claim_leases(session, [account_id], owner, lease)).get(account_id)


_RENEW = text(
    """
    UPDATE ebay_tokens AS t SET lease_until = now() + :lease
      FROM unnest(CAST(:ids AS uuid[]), CAST(:epochs AS bigint[])) AS h(account_id, epoch)
     WHERE t.account_id = h.account_id AND t.lease_epoch = h.epoch AND t.lease_owner = :owner
 RETURNING t.account_id
    """
)


async def renew_leases(
    executor: Executor, held: Sequence[tuple[uuid.UUID, int]], owner: str, lease: timedelta
) -> set[uuid.UUID]:
    """Extend leases still held under their epoch (the heartbeat); returns those extended."""
    rows = await executor.execute(
        _RENEW,
        {
            "ids": [account_id for account_id, _ in held],
            "epochs": [epoch for _, epoch in held],
            "owner": owner,
            "lease": lease,
        },
    )
    return {row[0] for row in rows}


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


@dataclass(frozen=True)
class Refreshed:
    """New token material for a claimed account, and the event announcing it (if any)."""

    claim: Claim
    access_token_ct: bytes
    refresh_token_ct: bytes
    key_id: str
    access_expires_at: datetime
    refresh_expires_at: datetime | None
    event: OutboxRow | None = None


_STORE_MANY = text(
    """
    WITH written AS (
        UPDATE ebay_tokens AS t
           SET access_token_ct = w.access_ct, refresh_token_ct = w.refresh_ct,
               key_id = w.key_id, access_expires_at = w.expires,
               refresh_expires_at = COALESCE(w.refresh_expires, t.refresh_expires_at),
               last_refreshed_at = now(), last_refresh_error = NULL,
               consecutive_failures = 0, retry_at = NULL, refresh_requested_at = NULL,
               version = t.version + 1, lease_epoch = t.lease_epoch + 1,
               lease_owner = NULL, lease_until = NULL, updated_at = now()
          FROM unnest(CAST(:ids AS uuid[]), CAST(:epochs AS bigint[]),
                      CAST(:access AS bytea[]), CAST(:refresh AS bytea[]),
                      CAST(:key_ids AS text[]), CAST(:expires AS timestamptz[]),
                      CAST(:refresh_expires AS timestamptz[]))
               AS w(account_id, epoch, access_ct, refresh_ct, key_id, expires, refresh_expires)
         WHERE t.account_id = w.account_id AND t.lease_epoch = w.epoch
           AND t.lease_owner = :owner
     RETURNING t.account_id, t.version
    ),
    announced AS (
        INSERT INTO outbox (id, subject, payload, headers)
        SELECT e.id, e.subject, e.payload, CAST(e.headers AS jsonb)
          FROM unnest(CAST(:event_ids AS uuid[]), CAST(:event_accounts AS uuid[]),
                      CAST(:subjects AS text[]), CAST(:payloads AS text[]),
                      CAST(:headers AS text[]))
               AS e(id, account_id, subject, payload, headers)
          JOIN written USING (account_id)
     RETURNING 1
    ),
    remembered AS (
        INSERT INTO account_history (org_id, account_id, occurred_at, type, failure, details)
        SELECT h.org_id, h.account_id, h.occurred_at, h.type, h.failure, CAST(h.details AS jsonb)
          FROM unnest(CAST(:history_orgs AS uuid[]), CAST(:history_accounts AS uuid[]),
                      CAST(:history_times AS timestamptz[]), CAST(:history_types AS text[]),
                      CAST(:history_failures AS boolean[]), CAST(:history_details AS text[]))
               AS h(org_id, account_id, occurred_at, type, failure, details)
          JOIN written USING (account_id)
     RETURNING 1
    )
    SELECT account_id, version FROM written
    """
)


async def store_refreshed_many(
    executor: Executor, owner: str, writes: Sequence[Refreshed]
) -> dict[uuid.UUID, int]:
    """Write refreshed tokens (and their events) where the claim still holds, in one statement;
    returns the new version of each account written (those missing lost their lease)."""
    events = [(w.claim.account_id, w.event) for w in writes if w.event is not None]
    history = [e.history for _, e in events if e.history is not None]
    rows = await executor.execute(
        _STORE_MANY,
        {
            "ids": [w.claim.account_id for w in writes],
            "epochs": [w.claim.epoch for w in writes],
            "access": [w.access_token_ct for w in writes],
            "refresh": [w.refresh_token_ct for w in writes],
            "key_ids": [w.key_id for w in writes],
            "expires": [w.access_expires_at for w in writes],
            "refresh_expires": [w.refresh_expires_at for w in writes],
            "owner": owner,
            "event_ids": [e.id for _, e in events],
            "event_accounts": [account_id for account_id, _ in events],
            "subjects": [e.subject for _, e in events],
            "payloads": [e.payload for _, e in events],
            "headers": [e.headers for _, e in events],
            # The account's history (the admin console's token history), as enqueue_event
            # writes it for single writes.
            "history_orgs": [h.org_id for h in history],
            "history_accounts": [h.account_id for h in history],
            "history_times": [h.occurred_at for h in history],
            "history_types": [h.type for h in history],
            "history_failures": [h.failure for h in history],
            "history_details": [h.details for h in history],
        },
    )
    return {row[0]: int(row[1]) for row in rows}


_RELEASE_MANY = text(
    """
    UPDATE ebay_tokens AS t SET lease_owner = NULL, lease_until = NULL
      FROM unnest(CAST(:ids AS uuid[]), CAST(:epochs AS bigint[])) AS h(account_id, epoch)
     WHERE t.account_id = h.account_id AND t.lease_epoch = h.epoch AND t.lease_owner = :owner
    """
)


async def release_leases(
    executor: Executor, held: Sequence[tuple[uuid.UUID, int]], owner: str
) -> None:
    """Give leases back untouched (their epoch stays: a late write of ours is still fenced out
    by whoever claims next)."""
    await executor.execute(
        _RELEASE_MANY,
        {"ids": [a for a, _ in held], "epochs": [e for _, e in held], "owner": owner},
    )


async def store_refreshed(
    session: Executor,
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
    written = await store_refreshed_many(
        session,
        owner,
        [
            Refreshed(
                claim,
                access_token_ct,
                refresh_token_ct,
                key_id,
                access_expires_at,
                refresh_expires_at,
            )
        ],
    )
    return written.get(claim.account_id)


@dataclass(frozen=True)
class Failure:
    """A failed refresh of a claimed account: why, and how long to back off."""

    claim: Claim
    error: str
    retry_in: timedelta


_FAIL_MANY = text(
    """
    UPDATE ebay_tokens AS t
       SET consecutive_failures = t.consecutive_failures + 1,
           last_refresh_error = f.error, retry_at = now() + f.retry_in,
           refresh_requested_at = now() + f.retry_in,
           lease_owner = NULL, lease_until = NULL, updated_at = now()
      FROM unnest(CAST(:ids AS uuid[]), CAST(:epochs AS bigint[]), CAST(:errors AS text[]),
                  CAST(:retry_in AS interval[]))
           AS f(account_id, epoch, error, retry_in)
     WHERE t.account_id = f.account_id AND t.lease_epoch = f.epoch AND t.lease_owner = :owner
 RETURNING t.account_id, t.consecutive_failures, t.retry_at
    """
)


async def record_failures(
    executor: Executor, owner: str, failures: Sequence[Failure]
) -> dict[uuid.UUID, tuple[int, datetime]]:
    """Count failed refreshes and back off, where the claim still holds; returns each written
    account's (streak length, retry_at).

    ``refresh_requested_at`` moves to ``retry_at``: the delayed redelivery does the retry, the
    scheduler re-publishes only if that got lost (after ``retry_at`` + its requeue interval).
    """
    rows = await executor.execute(
        _FAIL_MANY,
        {
            "ids": [f.claim.account_id for f in failures],
            "epochs": [f.claim.epoch for f in failures],
            "errors": [f.error[:500] for f in failures],
            "retry_in": [f.retry_in for f in failures],
            "owner": owner,
        },
    )
    return {row[0]: (int(row[1]), row[2]) for row in rows}


async def record_failure(
    session: Executor,
    claim: Claim,
    owner: str,
    *,
    error: str,
    retry_in: timedelta,
) -> tuple[int, datetime] | None:
    """Count a failed refresh and back off; returns (streak length, retry_at), None if the
    lease is lost."""
    recorded = await record_failures(session, owner, [Failure(claim, error, retry_in)])
    return recorded.get(claim.account_id)


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
