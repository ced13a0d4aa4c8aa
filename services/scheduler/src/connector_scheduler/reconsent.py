"""Refresh tokens near or past their end (about 18 months after consent).

Each leader tick, before any work is claimed:

- a refresh token that has ended makes its account ``reconnect_required`` at once, without
  calling eBay (nothing but a new consent can renew it): refreshing and health checks stop, and
  ``account.reconnect_required`` is published once;
- a refresh token that ends within the warning window (30 days by default) publishes
  ``account.reconsent_due`` once per account and refresh token: ``reconsent_notified_for``
  remembers the ``refresh_expires_at`` it was published for, so a new consent (a new refresh
  token, a new end) warns again when its time comes, and no tick warns twice.

Both walk partial indexes on ``ebay_tokens.refresh_expires_at`` that hold only the rows still to
handle, so their cost grows with the accounts concerned, not with all accounts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.events import AccountReconsentDue, ReconnectRequired
from connector_common.logs import get_logger
from connector_common.outbox import enqueue_event

log = get_logger(__name__)

ENDED_REASON = "the refresh token has expired: the seller must consent again (reconnect)"


@dataclass(frozen=True)
class _Row:
    account_id: uuid.UUID
    org_id: uuid.UUID
    house_name: str
    refresh_expires_at: datetime
    now: datetime


async def _ended(session: AsyncSession, limit: int) -> list[_Row]:
    rows = await session.execute(
        text(
            """
            WITH ended AS (
                SELECT t.account_id
                  FROM ebay_tokens t JOIN ebay_accounts a ON a.id = t.account_id
                 WHERE t.reconnect_required_at IS NULL AND t.refresh_expires_at <= now()
                   AND a.is_active
                 ORDER BY t.refresh_expires_at
                 LIMIT :limit
                   FOR UPDATE OF t SKIP LOCKED
            )
            UPDATE ebay_tokens t
               SET reconnect_required_at = now(), refresh_enabled = false,
                   last_refresh_error = :reason, retry_at = NULL, refresh_requested_at = NULL,
                   updated_at = now()
              FROM ended, ebay_accounts a
             WHERE t.account_id = ended.account_id AND a.id = t.account_id
         RETURNING t.account_id, a.org_id, a.house_name, t.refresh_expires_at, now()
            """
        ),
        {"limit": limit, "reason": ENDED_REASON},
    )
    found = [_Row(*row) for row in rows]
    if found:
        await session.execute(
            text(
                "UPDATE ebay_accounts SET next_health_check_at = NULL, updated_at = now() "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": [row.account_id for row in found]},
        )
    return found


async def _due_for_reconsent(session: AsyncSession, window: timedelta, limit: int) -> list[_Row]:
    rows = await session.execute(
        text(
            """
            WITH due AS (
                SELECT t.account_id
                  FROM ebay_tokens t JOIN ebay_accounts a ON a.id = t.account_id
                 WHERE t.reconnect_required_at IS NULL
                   AND t.reconsent_notified_for IS DISTINCT FROM t.refresh_expires_at
                   AND t.refresh_expires_at < now() + :window
                   AND t.refresh_expires_at > now()
                   AND a.is_active
                 ORDER BY t.refresh_expires_at
                 LIMIT :limit
                   FOR UPDATE OF t SKIP LOCKED
            )
            UPDATE ebay_tokens t
               SET reconsent_notified_for = t.refresh_expires_at
              FROM due, ebay_accounts a
             WHERE t.account_id = due.account_id AND a.id = t.account_id
         RETURNING t.account_id, a.org_id, a.house_name, t.refresh_expires_at, now()
            """
        ),
        {"window": window, "limit": limit},
    )
    return [_Row(*row) for row in rows]


@dataclass
class ReconsentSweep:
    """The two sweeps, each one transaction with its events (outbox)."""

    sessions: SessionFactory
    namespace: str
    window: timedelta
    batch_size: int = 500

    async def run(self) -> tuple[int, int]:
        """Returns (accounts now reconnect-required, accounts warned)."""
        async with unit_of_work(self.sessions) as session:
            ended = await _ended(session, self.batch_size)
            for row in ended:
                enqueue_event(
                    session,
                    ReconnectRequired(
                        org_id=row.org_id,
                        account_id=row.account_id,
                        house_name=row.house_name,
                        reason=ENDED_REASON,
                    ),
                    self.namespace,
                )
        async with unit_of_work(self.sessions) as session:
            due = await _due_for_reconsent(session, self.window, self.batch_size)
            for row in due:
                left = row.refresh_expires_at - row.now
                enqueue_event(
                    session,
                    AccountReconsentDue(
                        org_id=row.org_id,
                        account_id=row.account_id,
                        house_name=row.house_name,
                        refresh_expires_at=row.refresh_expires_at,
                        days_left=max(0, left.days),
                    ),
                    self.namespace,
                )
        if ended or due:
            log.info(
                "refresh tokens near their end",
                reconnect_required=len(ended),
                reconsent_due=len(due),
            )
        return len(ended), len(due)
