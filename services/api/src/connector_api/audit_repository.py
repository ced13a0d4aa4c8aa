"""SQL of the audit trail: an org's entries, newest first (keyset by id), and the purges of
what has outlived its retention."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.db.models import AdminSessionRecord, AuditEntry, RateLimitCounter


@dataclass(frozen=True)
class AuditFilter:
    account_id: uuid.UUID | None = None
    actor: str | None = None
    actions: Sequence[str] = ()
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


async def list_entries(
    session: AsyncSession,
    org_id: uuid.UUID,
    filters: AuditFilter,
    before_id: int | None,
    limit: int,
) -> list[AuditEntry]:
    """One page of the org's entries, newest first (``limit`` rows)."""
    stmt = select(AuditEntry).where(AuditEntry.org_id == org_id)
    if filters.account_id is not None:
        stmt = stmt.where(AuditEntry.account_id == filters.account_id)
    if filters.actor is not None:
        stmt = stmt.where(AuditEntry.actor == filters.actor)
    if filters.actions:
        stmt = stmt.where(AuditEntry.action.in_(list(filters.actions)))
    if filters.since is not None:
        stmt = stmt.where(AuditEntry.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditEntry.created_at < filters.until)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    stmt = stmt.order_by(AuditEntry.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())


async def purge_audit(session: AsyncSession, older_than_days: int, batch: int) -> int:
    """Delete up to ``batch`` entries older than the retention; how many went."""
    result = await session.execute(
        text(
            """
            DELETE FROM audit_log WHERE id IN (
                SELECT id FROM audit_log
                 WHERE created_at < now() - make_interval(days => :days)
                 LIMIT :batch)
            """
        ),
        {"days": older_than_days, "batch": batch},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def purge_sessions_and_counters(session: AsyncSession) -> int:
    """Forget admin sessions ended over a day ago and rate-limit windows over an hour ago."""
    day_ago = func.now() - timedelta(days=1)
    record = AdminSessionRecord
    sessions = await session.execute(
        delete(record).where(or_(record.expires_at < day_ago, record.revoked_at < day_ago))
    )
    counters = await session.execute(
        delete(RateLimitCounter).where(
            RateLimitCounter.window_end < func.now() - timedelta(hours=1)
        )
    )
    return int(sessions.rowcount or 0) + int(counters.rowcount or 0)  # type: ignore[attr-defined]


async def claim_daily(session: AsyncSession, name: str, holder: str) -> bool:
    """True for the one replica that may run the daily job now (a lease held for a day)."""
    won = await session.scalar(
        text(
            """
            INSERT INTO leases AS l (name, holder, lease_until, epoch)
            VALUES (:name, :holder, now() + interval '1 day', 1)
            ON CONFLICT (name) DO UPDATE
               SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until,
                   epoch = l.epoch + 1
             WHERE l.lease_until < now()
            RETURNING epoch
            """
        ),
        {"name": name, "holder": holder},
    )
    return won is not None
