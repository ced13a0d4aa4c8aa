"""SQL of eBay's Marketplace Account Deletion: find the seller's accounts in every org, purge
them to tombstones, remember the notification. Runs in the caller's one transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text, bindparam, delete, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.db.models import (
    AccountHistory,
    AuditEntry,
    CircuitBreakerState,
    DeletionNotification,
    EbayAccount,
    EbayToken,
    HealthCheck,
    OAuthState,
    OutboxMessage,
    UsernameChange,
)

# Audit details that describe the seller (their registration site) rather than the org's action.
SELLER_AUDIT_KEYS = ("marketplace_id", "site_id", "site_code", "username", "ebay_user_id")


async def claim_notification(
    session: AsyncSession, notification_id: str, event_date: datetime | None
) -> bool:
    """Remember the notification; False when it was processed before (or is being processed
    by a concurrent delivery, which then commits first and this one waits for it)."""
    inserted = await session.scalar(
        pg_insert(DeletionNotification)
        .values(notification_id=notification_id, event_date=event_date)
        .on_conflict_do_nothing(index_elements=[DeletionNotification.notification_id])
        .returning(DeletionNotification.notification_id)
    )
    return inserted is not None


async def accounts_of_seller(
    session: AsyncSession, user_id: str, eias_token: str | None
) -> list[EbayAccount]:
    """Every org's account of this eBay user, locked (by the immutable user id, or the EIAS
    token, eBay's other stable id of the user)."""
    match = EbayAccount.ebay_user_id == user_id
    if eias_token:
        match = or_(match, EbayAccount.eias_token == eias_token)
    rows = await session.scalars(
        select(EbayAccount)
        .where(match, EbayAccount.deleted_by_ebay_at.is_(None))
        .order_by(EbayAccount.id)
        .with_for_update()
    )
    return list(rows.all())


async def purge_account(session: AsyncSession, account: EbayAccount, now: datetime) -> None:
    """Tokens, health history, username history, the account's event history (it quotes
    usernames and user ids), pending consents and the breaker go; the
    account row stays as a tombstone with no eBay personal data (the house name and purpose are
    the org's own labels and stay)."""
    account_id = account.id
    for model, column in (
        (EbayToken, EbayToken.account_id),
        (HealthCheck, HealthCheck.account_id),
        (UsernameChange, UsernameChange.account_id),
        (AccountHistory, AccountHistory.account_id),
        (OAuthState, OAuthState.account_id),
    ):
        await session.execute(delete(model).where(column == account_id))
    await session.execute(
        delete(CircuitBreakerState).where(CircuitBreakerState.key == str(account_id))
    )
    await session.execute(
        update(AuditEntry)
        .where(AuditEntry.account_id == account_id)
        .values(
            details=AuditEntry.details.op("-")(
                bindparam("seller_keys", list(SELLER_AUDIT_KEYS), type_=ARRAY(Text))
            )
        )
        .execution_options(synchronize_session=False)
    )
    account.ebay_user_id = None
    account.eias_token = None
    account.username = None
    account.marketplace_id = None
    account.site_id = None
    account.site_code = None
    if account.is_active:
        account.is_active = False
        account.deactivated_at = now
    account.next_health_check_at = None
    account.health_requested_at = None
    account.last_health_at = None
    account.last_health_outcome = None
    account.last_health_latency_ms = None
    account.last_health_error = None
    account.deleted_by_ebay_at = now


async def scrub_outbox(session: AsyncSession, needles: list[str]) -> int:
    """Drop already-published outbox copies of events that carried the seller's data (they
    are kept a day for the relay's bookkeeping only)."""
    terms = [n for n in needles if n]
    if not terms:
        return 0
    result = await session.execute(
        delete(OutboxMessage).where(
            OutboxMessage.published_at.is_not(None),
            or_(*(OutboxMessage.payload.contains(term, autoescape=True) for term in terms)),
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def finish_notification(session: AsyncSession, notification_id: str, purged: int) -> None:
    """Record how many accounts the notification purged."""
    await session.execute(
        update(DeletionNotification)
        .where(DeletionNotification.notification_id == notification_id)
        .values(accounts_purged=purged)
    )
