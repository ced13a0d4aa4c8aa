"""The health checker's SQL: what to check, and recording a verdict."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.db.models import EbayAccount, EbayToken, HealthCheck, UsernameChange

Outcome = Literal["healthy", "unhealthy"]


@dataclass(frozen=True)
class Target:
    """The account as the check starts."""

    account_id: uuid.UUID
    org_id: uuid.UUID
    house_name: str
    is_active: bool
    site_id: int
    has_token: bool
    reconnect_required: bool


@dataclass(frozen=True)
class Verdict:
    """One check's outcome, as the history and the account record it."""

    checked_at: datetime
    outcome: Outcome
    reason: str | None
    latency_ms: int | None
    http_status: int | None
    ebay_error_code: str | None
    ebay_request_id: str | None
    api: str
    # What eBay says the account is now (None: unknown, leave as is).
    username: str | None = None
    eias_token: str | None = None
    site_id: int | None = None
    site_code: str | None = None
    marketplace_id: str | None = None


@dataclass(frozen=True)
class Recorded:
    """What recording changed, for the events."""

    org_id: uuid.UUID
    house_name: str
    previous_outcome: Outcome | None
    next_check_at: datetime | None
    identity_changes: dict[str, tuple[object, object]]


async def load_target(session: AsyncSession, account_id: uuid.UUID) -> Target | None:
    row = (
        await session.execute(
            select(
                EbayAccount.id,
                EbayAccount.org_id,
                EbayAccount.house_name,
                EbayAccount.is_active,
                EbayAccount.site_id,
                EbayToken.account_id.is_not(None),
                # A refresh token that has ended needs a new consent: no point asking eBay.
                or_(
                    EbayToken.reconnect_required_at.is_not(None),
                    EbayToken.refresh_expires_at <= func.now(),
                ),
            )
            .outerjoin(EbayToken, EbayToken.account_id == EbayAccount.id)
            .where(EbayAccount.id == account_id)
        )
    ).one_or_none()
    if row is None:
        return None
    site_id = row[4] if row[4] is not None else 0  # NULL only on a tombstone (never checked)
    return Target(row[0], row[1], row[2], row[3], site_id, bool(row[5]), bool(row[6]))


async def record_verdict(
    session: AsyncSession,
    account_id: uuid.UUID,
    verdict: Verdict,
    next_check_at: datetime | None,
) -> Recorded | None:
    """History row + the account's current health; None if the account is gone.

    The account row is locked so two checks of one account (manual + scheduled) compare their
    verdict with each other's, never with the same stale one. ``next_check_at`` is applied only
    while the account is still scheduled: a deactivation or a reconnect-required mark that
    happened during the check stands.
    """
    account = await session.scalar(
        select(EbayAccount).where(EbayAccount.id == account_id).with_for_update()
    )
    if account is None or account.deleted_by_ebay_at is not None:
        # Gone, or purged because the seller deleted their eBay account while we checked:
        # nothing of what eBay just said may be written back.
        return None
    previous: Outcome | None = None
    if account.last_health_outcome == "healthy":
        previous = "healthy"
    elif account.last_health_outcome == "unhealthy":
        previous = "unhealthy"
    session.add(
        HealthCheck(
            account_id=account_id,
            checked_at=verdict.checked_at,
            outcome=verdict.outcome,
            latency_ms=verdict.latency_ms,
            http_status=verdict.http_status,
            ebay_error_code=verdict.ebay_error_code,
            ebay_request_id=verdict.ebay_request_id,
            api=verdict.api,
            detail=verdict.reason[:500] if verdict.reason else None,
        )
    )
    account.last_health_at = verdict.checked_at
    account.last_health_outcome = verdict.outcome
    account.last_health_latency_ms = verdict.latency_ms
    account.last_health_error = verdict.reason[:500] if verdict.reason else None
    account.health_requested_at = None
    scheduled = account.is_active and account.next_health_check_at is not None
    if scheduled and next_check_at is not None:
        account.next_health_check_at = next_check_at
    changes: dict[str, tuple[object, object]] = {}
    for name in ("username", "eias_token", "site_id", "site_code", "marketplace_id"):
        new = getattr(verdict, name)
        old = getattr(account, name)
        if new is not None and new != old:
            changes[name] = (old, new)
            setattr(account, name, new)
    if "username" in changes and changes["username"][0] is not None:
        old_name, new_name = changes["username"]
        session.add(
            UsernameChange(
                account_id=account_id,
                old_username=str(old_name),
                new_username=str(new_name),
                changed_at=verdict.checked_at,
                source="health_check",
            )
        )
    await session.flush()
    return Recorded(
        org_id=account.org_id,
        house_name=account.house_name,
        previous_outcome=previous,
        next_check_at=account.next_health_check_at,
        identity_changes=changes,
    )
