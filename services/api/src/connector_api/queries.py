"""Reads behind the admin console's glance panels and account page. Like the repository, every
function takes the caller's ``org_id``: nothing here reads another organisation's rows."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.db.models import (
    AccountHistory,
    AuditEntry,
    EbayAccount,
    EbayToken,
    HealthCheck,
)


async def next_refreshes(
    session: AsyncSession, org_id: uuid.UUID, limit: int
) -> list[tuple[EbayAccount, EbayToken]]:
    """The org's accounts the refresher will refresh next (soonest token expiry first)."""
    rows = await session.execute(
        select(EbayAccount, EbayToken)
        .join(EbayToken, EbayToken.account_id == EbayAccount.id)
        .where(
            EbayAccount.org_id == org_id,
            EbayAccount.is_active,
            EbayToken.refresh_enabled,
            EbayToken.reconnect_required_at.is_(None),
            EbayToken.access_expires_at.is_not(None),
        )
        .order_by(EbayToken.access_expires_at, EbayAccount.id)
        .limit(limit)
    )
    return [(account, token) for account, token in rows.all()]


async def recent_failures(
    session: AsyncSession, org_id: uuid.UUID, limit: int
) -> list[tuple[AccountHistory, str]]:
    """The org's latest failures (refresh failures, reconnects needed, turns unhealthy), each
    with its account's current house name (walks a small partial index)."""
    rows = await session.execute(
        select(AccountHistory, EbayAccount.house_name)
        .join(EbayAccount, EbayAccount.id == AccountHistory.account_id)
        .where(AccountHistory.org_id == org_id, AccountHistory.failure)
        .order_by(AccountHistory.occurred_at.desc(), AccountHistory.id.desc())
        .limit(limit)
    )
    return [(entry, str(name)) for entry, name in rows.all()]


async def account_history(
    session: AsyncSession, org_id: uuid.UUID, account_id: uuid.UUID, limit: int
) -> list[AccountHistory]:
    """An account's history, newest first."""
    rows = await session.scalars(
        select(AccountHistory)
        .where(AccountHistory.account_id == account_id, AccountHistory.org_id == org_id)
        .order_by(AccountHistory.occurred_at.desc(), AccountHistory.id.desc())
        .limit(limit)
    )
    return list(rows.all())


async def health_checks_since(
    session: AsyncSession,
    org_id: uuid.UUID,
    account_id: uuid.UUID,
    since: datetime,
    limit: int,
) -> list[HealthCheck]:
    """An account's checks since a moment, oldest first (at most ``limit``, the newest)."""
    rows = await session.scalars(
        select(HealthCheck)
        .join(EbayAccount, EbayAccount.id == HealthCheck.account_id)
        .where(
            HealthCheck.account_id == account_id,
            EbayAccount.org_id == org_id,
            HealthCheck.checked_at >= since,
        )
        .order_by(HealthCheck.checked_at.desc(), HealthCheck.id.desc())
        .limit(limit)
    )
    return list(reversed(rows.all()))


async def audit_entries(
    session: AsyncSession, org_id: uuid.UUID, account_id: uuid.UUID, limit: int
) -> list[AuditEntry]:
    """Who did what to an account, newest first."""
    rows = await session.scalars(
        select(AuditEntry)
        .where(AuditEntry.account_id == account_id, AuditEntry.org_id == org_id)
        .order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
        .limit(limit)
    )
    return list(rows.all())
