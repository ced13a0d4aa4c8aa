"""Changing an org's eBay accounts and asking the workers for them. Every change writes its
audit entry and its event (through the outbox) in the caller's transaction; nothing here
commits."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from connector_api import repository as repo
from connector_api.errors import Conflict
from connector_api.schemas import Account, AccountUpdate, WorkQueued
from connector_api.services.budget import require_budget
from connector_api.services.context import RequestContext
from connector_api.services.listing import load_account, to_account
from connector_common.budget.buckets import REFRESH_GRANT, TRADING
from connector_common.db.models import EbayAccount, EbayToken
from connector_common.events import (
    AccountDeactivated,
    AccountDeleted,
    AccountPurposeChanged,
    AccountReactivated,
    AccountRenamed,
    CheckHealth,
    Event,
    RefreshToken,
)
from connector_common.outbox import enqueue_command, enqueue_event

HOUSE_NAME_INDEX = "uq_ebay_accounts_org_id_house_name_active"


def _record(
    session: AsyncSession,
    ctx: RequestContext,
    account: EbayAccount,
    action: str,
    event: Event | None,
    details: dict[str, Any] | None = None,
    changes: dict[str, tuple[Any, Any]] | None = None,
) -> None:
    repo.add_audit(
        session,
        org_id=ctx.principal.org_id,
        actor=ctx.actor,
        action=action,
        account_id=account.id,
        house_name=account.house_name,
        request_id=ctx.request_id,
        details=details,
        changes=changes,
    )
    if event is not None:
        enqueue_event(session, event, ctx.namespace)


def name_taken(house_name: str) -> Conflict:
    """The 409 for a house name another active account of the org already uses."""
    return Conflict(
        f"house name {house_name!r} is already used by another active account of this org"
    )


async def _flush_unique(session: AsyncSession, house_name: str) -> None:
    """Flush; a concurrent claim of the same house name becomes the same 409 as the check."""
    try:
        await session.flush()
    except IntegrityError as exc:
        if HOUSE_NAME_INDEX in str(exc.orig):
            raise name_taken(house_name) from None
        raise


async def update_account(
    session: AsyncSession, ctx: RequestContext, account_id: uuid.UUID, change: AccountUpdate
) -> Account:
    """Rename and/or change the purpose; each change is its own event."""
    ctx.principal.require_admin()
    account, token = await load_account(session, ctx, account_id, lock=True)
    base = {"org_id": account.org_id, "account_id": account.id, "actor": ctx.actor}
    if change.house_name is not None and change.house_name != account.house_name:
        old = account.house_name
        if account.is_active and await repo.active_house_name_owner(
            session, account.org_id, change.house_name, exclude=account.id
        ):
            raise name_taken(change.house_name)
        account.house_name = change.house_name
        renamed = AccountRenamed(
            **base,
            house_name=change.house_name,
            old_house_name=old,
            new_house_name=change.house_name,
        )
        before_after = {"house_name": (old, change.house_name)}
        _record(session, ctx, account, "account.renamed", renamed, changes=before_after)
        await _flush_unique(session, change.house_name)
    if change.purpose is not None and change.purpose != account.purpose:
        old_purpose = account.purpose
        account.purpose = change.purpose
        changed = AccountPurposeChanged(
            **base,
            house_name=account.house_name,
            old_purpose=old_purpose,
            new_purpose=change.purpose,
        )
        _record(
            session,
            ctx,
            account,
            "account.purpose_changed",
            changed,
            changes={"purpose": (old_purpose, change.purpose)},
        )
        await session.flush()
    await session.refresh(account, ["updated_at"])
    return to_account(account, token, ctx.now, ctx.reconsent_window)


async def deactivate(session: AsyncSession, ctx: RequestContext, account_id: uuid.UUID) -> Account:
    """Stop refreshing and checking the account; idempotent (no second event)."""
    ctx.principal.require_admin()
    account, token = await load_account(session, ctx, account_id, lock=True)
    if account.is_active:
        account.is_active = False
        account.deactivated_at = ctx.now
        account.next_health_check_at = None
        if token is not None:
            token.refresh_enabled = False
        event = AccountDeactivated(
            org_id=account.org_id,
            account_id=account.id,
            house_name=account.house_name,
            actor=ctx.actor,
        )
        _record(
            session,
            ctx,
            account,
            "account.deactivated",
            event,
            changes={"is_active": (True, False)},
        )
        await session.flush()
        await session.refresh(account, ["updated_at"])
    return to_account(account, token, ctx.now, ctx.reconsent_window)


async def reactivate(session: AsyncSession, ctx: RequestContext, account_id: uuid.UUID) -> Account:
    """Resume the account; 409 when another active account took its house name meanwhile."""
    ctx.principal.require_admin()
    account, token = await load_account(session, ctx, account_id, lock=True)
    if account.deleted_by_ebay_at is not None:
        raise Conflict("the seller deleted their eBay account; this account cannot be reactivated")
    if not account.is_active:
        if await repo.active_house_name_owner(session, account.org_id, account.house_name):
            raise Conflict(
                f"cannot reactivate: house name {account.house_name!r} is now used by another "
                "active account; rename one of them first"
            )
        account.is_active = True
        account.deactivated_at = None
        usable = token is not None and token.reconnect_required_at is None
        if token is not None:
            token.refresh_enabled = usable
        account.next_health_check_at = ctx.now if usable else None
        event = AccountReactivated(
            org_id=account.org_id,
            account_id=account.id,
            house_name=account.house_name,
            actor=ctx.actor,
        )
        _record(
            session,
            ctx,
            account,
            "account.reactivated",
            event,
            changes={"is_active": (False, True)},
        )
        await _flush_unique(session, account.house_name)
        await session.refresh(account, ["updated_at"])
    return to_account(account, token, ctx.now, ctx.reconsent_window)


async def delete(session: AsyncSession, ctx: RequestContext, account_id: uuid.UUID) -> None:
    """Remove the account, its tokens and health history; the audit keeps no seller data."""
    ctx.principal.require_admin()
    account, _token = await load_account(session, ctx, account_id, lock=True)
    event = AccountDeleted(
        org_id=account.org_id, account_id=account.id, house_name=account.house_name, actor=ctx.actor
    )
    _record(session, ctx, account, "account.deleted", event)
    await repo.delete_account(session, ctx.principal.org_id, account.id)
    await session.flush()


def _usable_token(account: EbayAccount, token: EbayToken | None) -> EbayToken:
    if account.deleted_by_ebay_at is not None:
        raise Conflict("the seller deleted their eBay account; this account is only a record")
    if not account.is_active:
        raise Conflict("the account is deactivated; reactivate it first")
    if token is None or token.refresh_token_ct is None:
        raise Conflict("the account has no eBay token; connect it again")
    if token.reconnect_required_at is not None:
        raise Conflict("the seller must consent again: reconnect the account first")
    return token


async def request_refresh(
    session: AsyncSession, ctx: RequestContext, account_id: uuid.UUID
) -> WorkQueued:
    """Ask the token refresher for an immediate refresh (through the outbox)."""
    ctx.principal.require_admin()
    account, token = await load_account(session, ctx, account_id, lock=True)
    usable = _usable_token(account, token)
    await require_budget(session, ctx, REFRESH_GRANT)
    command = RefreshToken(
        account_id=account.id, org_id=account.org_id, token_version=usable.version, reason="manual"
    )
    enqueue_command(session, command, ctx.namespace)
    usable.refresh_requested_at = ctx.now
    _record(
        session, ctx, account, "account.refresh_requested", None, {"token_version": usable.version}
    )
    await session.flush()
    return WorkQueued(
        command_id=command.command_id,
        kind="refresh",
        account_id=account.id,
        reason=command.reason,
        dedup_id=command.dedup_id(),
        token_version=command.token_version,
    )


def health_command(
    account: EbayAccount, reason: Literal["manual", "connected", "reconnected"], now: datetime
) -> CheckHealth:
    """A health check request for now; a repeat within the same second collapses in JetStream."""
    return CheckHealth(
        account_id=account.id,
        org_id=account.org_id,
        slot=int(now.timestamp()),
        reason=reason,
    )


async def request_health_check(
    session: AsyncSession, ctx: RequestContext, account_id: uuid.UUID
) -> WorkQueued:
    """Ask the health checker for an immediate check (through the outbox)."""
    ctx.principal.require_admin()
    account, token = await load_account(session, ctx, account_id, lock=True)
    _usable_token(account, token)
    await require_budget(session, ctx, TRADING)
    command = health_command(account, "manual", ctx.now)
    enqueue_command(session, command, ctx.namespace)
    account.health_requested_at = ctx.now
    _record(session, ctx, account, "account.health_check_requested", None, {"slot": command.slot})
    await session.flush()
    return WorkQueued(
        command_id=command.command_id,
        kind="health",
        account_id=account.id,
        reason=command.reason,
        dedup_id=command.dedup_id(),
        slot=command.slot,
    )
