"""The scheduler's SQL: its leadership lease and the "what is due" queries.

Every due query walks a partial index ordered by the due time (``ix_ebay_tokens_access_expires_
at_refresh_enabled``, ``ix_ebay_accounts_next_health_check_at``) and stops at the cut-off, so its
cost grows with the number of due rows, not with the number of accounts. A tick claims in
batches; each batch starts where the previous one ended (keyset: due time, then id), so a tick's
cost is linear in what it claims instead of re-walking the rows earlier batches took. Times are
PostgreSQL's ``now()``: every replica compares against one clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.db.models import EbayAccount, EbayToken

LEADER_LEASE = "scheduler"


@dataclass(frozen=True)
class DueRefresh:
    account_id: uuid.UUID
    org_id: uuid.UUID
    token_version: int
    due_at: datetime | None = None  # its place in the index: where the next batch starts

    @property
    def key(self) -> Keyset:
        assert self.due_at is not None
        return (self.due_at, self.account_id)


@dataclass(frozen=True)
class DueHealth:
    account_id: uuid.UUID
    org_id: uuid.UUID
    due_at: datetime | None = None

    @property
    def key(self) -> Keyset:
        assert self.due_at is not None
        return (self.due_at, self.account_id)


Keyset = tuple[datetime, uuid.UUID]  # (due time, id) of the last row a batch claimed


@dataclass(frozen=True)
class Backlog:
    """Due rows by what happens to them, and how long the oldest has been waiting."""

    due: int  # due now, whatever their state
    waiting: int  # requested recently, a worker has it (or will)
    backing_off: int  # failed recently, retry later
    oldest_due_at: datetime | None  # when the oldest due row became due


async def claim_leadership(
    session: AsyncSession, holder: str, ttl: timedelta, name: str = LEADER_LEASE
) -> int | None:
    """Take or renew the lease; returns its epoch, or None while another replica holds it."""
    result = await session.execute(
        text(
            """
            INSERT INTO leases (name, holder, lease_until, epoch)
            VALUES (:name, :holder, now() + :ttl, 1)
            ON CONFLICT (name) DO UPDATE
               SET holder = excluded.holder,
                   lease_until = excluded.lease_until,
                   epoch = CASE WHEN leases.holder = excluded.holder
                                 AND leases.lease_until >= now()
                                THEN leases.epoch ELSE leases.epoch + 1 END
             WHERE leases.holder = excluded.holder OR leases.lease_until < now()
            RETURNING epoch
            """
        ),
        {"name": name, "holder": holder, "ttl": ttl},
    )
    epoch = result.scalar_one_or_none()
    return int(epoch) if epoch is not None else None


async def release_leadership(session: AsyncSession, holder: str, name: str = LEADER_LEASE) -> None:
    """Give the lease up at once (shutdown), so another replica need not wait for it to expire."""
    await session.execute(
        text(
            "UPDATE leases SET lease_until = now() - interval '1 second' "
            "WHERE name = :name AND holder = :holder"
        ),
        {"name": name, "holder": holder},
    )


def _refresh_due(lead: timedelta) -> list[ColumnElement[bool]]:
    # The first two conditions are exactly the partial index: it serves the range and the order.
    return [EbayToken.refresh_enabled.expression, EbayToken.access_expires_at <= func.now() + lead]


def _refresh_ready(requeue: timedelta) -> list[ColumnElement[bool]]:
    return [
        or_(EbayToken.retry_at.is_(None), EbayToken.retry_at <= func.now()),
        or_(
            EbayToken.refresh_requested_at.is_(None),
            EbayToken.refresh_requested_at < func.now() - requeue,
        ),
    ]


def due_refresh_query(
    lead: timedelta, requeue: timedelta, limit: int, after: Keyset | None = None
) -> Select[uuid.UUID, uuid.UUID, int, datetime | None]:
    """Tokens to refresh now, soonest expiry first, locked so no other scheduler takes them;
    ``after``: only those past the last row of the previous batch."""
    query = (
        select(
            EbayToken.account_id, EbayAccount.org_id, EbayToken.version, EbayToken.access_expires_at
        )
        .join(EbayAccount, EbayAccount.id == EbayToken.account_id)
        .where(*_refresh_due(lead), *_refresh_ready(requeue), EbayAccount.is_active)
        .order_by(EbayToken.access_expires_at, EbayToken.account_id)
        .limit(limit)
        .with_for_update(of=EbayToken, skip_locked=True)
    )
    if after is not None:
        # The first condition starts the index range; the second breaks ties on the id.
        query = query.where(
            EbayToken.access_expires_at >= after[0],
            tuple_(EbayToken.access_expires_at, EbayToken.account_id) > tuple_(*after),
        )
    return query


async def claim_due_refresh(
    session: AsyncSession,
    lead: timedelta,
    requeue: timedelta,
    limit: int,
    after: Keyset | None = None,
) -> list[DueRefresh]:
    """Lock up to ``limit`` tokens due for a refresh (past ``after``)."""
    rows = await session.execute(due_refresh_query(lead, requeue, limit, after))
    return [DueRefresh(*row) for row in rows]


_MARK_REFRESH = text(
    "UPDATE ebay_tokens SET refresh_requested_at = now() "
    "WHERE account_id = ANY(CAST(:ids AS uuid[]))"
)
_MARK_HEALTH = text(
    "UPDATE ebay_accounts SET health_requested_at = now() WHERE id = ANY(CAST(:ids AS uuid[]))"
)


async def mark_refresh_requested(session: AsyncSession, account_ids: list[uuid.UUID]) -> None:
    if account_ids:
        await session.execute(_MARK_REFRESH, {"ids": account_ids})


def _health_due() -> list[ColumnElement[bool]]:
    return [
        EbayAccount.next_health_check_at.is_not(None),
        EbayAccount.next_health_check_at <= func.now(),
    ]


def _health_ready(requeue: timedelta) -> ColumnElement[bool]:
    return or_(
        EbayAccount.health_requested_at.is_(None),
        EbayAccount.health_requested_at < func.now() - requeue,
    )


def due_health_query(
    requeue: timedelta, limit: int, after: Keyset | None = None
) -> Select[uuid.UUID, uuid.UUID, datetime | None]:
    """Accounts to check now, longest overdue first, locked so no other scheduler takes them.

    Deactivated accounts and those that need reconnecting have ``next_health_check_at`` NULL
    (contract with the API and the refresher), so the index never even shows them.
    """
    query = (
        select(EbayAccount.id, EbayAccount.org_id, EbayAccount.next_health_check_at)
        .where(*_health_due(), _health_ready(requeue), EbayAccount.is_active)
        .order_by(EbayAccount.next_health_check_at, EbayAccount.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if after is not None:
        query = query.where(
            EbayAccount.next_health_check_at >= after[0],
            tuple_(EbayAccount.next_health_check_at, EbayAccount.id) > tuple_(*after),
        )
    return query


async def claim_due_health(
    session: AsyncSession, requeue: timedelta, limit: int, after: Keyset | None = None
) -> list[DueHealth]:
    """Lock up to ``limit`` accounts due for a check (past ``after``)."""
    rows = await session.execute(due_health_query(requeue, limit, after))
    return [DueHealth(*row) for row in rows]


async def mark_health_requested(session: AsyncSession, account_ids: list[uuid.UUID]) -> None:
    if account_ids:
        await session.execute(_MARK_HEALTH, {"ids": account_ids})


async def refresh_backlog(session: AsyncSession, lead: timedelta, requeue: timedelta) -> Backlog:
    """Counts over the due tokens only (the partial index bounds the scan)."""
    waiting = and_(
        EbayToken.refresh_requested_at.is_not(None),
        EbayToken.refresh_requested_at >= func.now() - requeue,
    )
    backing_off = EbayToken.retry_at > func.now()
    row = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(waiting),
                func.count().filter(backing_off),
                func.min(EbayToken.access_expires_at),
            ).where(*_refresh_due(lead))
        )
    ).one()
    oldest = row[3] - lead if row[3] is not None else None
    return Backlog(int(row[0]), int(row[1]), int(row[2]), oldest)


async def health_backlog(session: AsyncSession, requeue: timedelta) -> Backlog:
    """Counts over the accounts due for a check only."""
    waiting = and_(
        EbayAccount.health_requested_at.is_not(None),
        EbayAccount.health_requested_at >= func.now() - requeue,
    )
    row = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(waiting),
                func.min(EbayAccount.next_health_check_at),
            ).where(*_health_due())
        )
    ).one()
    return Backlog(int(row[0]), int(row[1]), 0, row[2])
