"""Reading an org's eBay accounts: the API view of an account, pages of accounts, one account,
its health history. Token material never leaves here: only its metadata."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from connector_api import repository as repo
from connector_api.errors import InvalidInput, account_not_found
from connector_api.schemas import (
    Account,
    AccountPage,
    AccountSummary,
    HealthCheckPage,
    SortKey,
)
from connector_api.services.context import RequestContext
from connector_api.signing import CursorCodec
from connector_common.db.models import EbayAccount, EbayToken
from connector_common.status import RECONSENT_DUE, AccountStatus, account_status


async def load_account(
    session: AsyncSession, ctx: RequestContext, account_id: uuid.UUID, *, lock: bool = False
) -> tuple[EbayAccount, EbayToken | None]:
    """The caller's account and its token row; 404 when it is missing or another org's."""
    found = await repo.get_account(session, ctx.principal.org_id, account_id, lock=lock)
    if found is None:
        raise account_not_found()
    return found


class _Health:
    """The account's denormalised last check, in the shape the status function reads."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome


def account_view(
    account: Any,
    token: Any | None,
    now: datetime,
    reconsent_window: timedelta = RECONSENT_DUE,
) -> dict[str, Any]:
    """The API view of an account (the :class:`Account` schema's fields, in its order) from the
    ORM objects or from a row of ``repo.ACCOUNT_COLUMNS`` (passed as both ``account`` and,
    when it has a token, ``token``): token metadata only, never token material."""
    outcome = account.last_health_outcome
    last = _Health(outcome) if outcome else None
    return {
        "id": account.id,
        "house_name": account.house_name,
        "purpose": account.purpose,
        "ebay_user_id": account.ebay_user_id,
        "username": account.username,
        "marketplace_id": account.marketplace_id,
        "site_id": account.site_id,
        "site_code": account.site_code,
        "is_active": account.is_active,
        "status": account_status(account, token, last, now, reconsent_window),
        "connected_at": account.connected_at,
        "created_at": account.created_at,
        "updated_at": account.updated_at,
        "deactivated_at": account.deactivated_at,
        "deleted_by_ebay_at": account.deleted_by_ebay_at,
        "next_health_check_at": account.next_health_check_at,
        "token": None
        if token is None
        else {
            "access_expires_at": token.access_expires_at,
            "refresh_expires_at": token.refresh_expires_at,
            "last_refreshed_at": token.last_refreshed_at,
            "last_refresh_error": token.last_refresh_error,
            "consecutive_failures": token.consecutive_failures,
            "reconnect_required_at": token.reconnect_required_at,
            "retry_at": token.retry_at,
            "refresh_enabled": token.refresh_enabled,
            "scopes": list(token.scopes or []),
        },
        "last_health": None
        if account.last_health_at is None or outcome is None
        else {
            "checked_at": account.last_health_at,
            "outcome": outcome,
            "latency_ms": account.last_health_latency_ms,
            "error": account.last_health_error,
        },
    }


def row_view(
    row: Any, now: datetime, reconsent_window: timedelta = RECONSENT_DUE
) -> dict[str, Any]:
    """The API view of a row of ``repo.ACCOUNT_COLUMNS``."""
    return account_view(
        row, row if row.token_account_id is not None else None, now, reconsent_window
    )


def to_account(
    account: EbayAccount,
    token: EbayToken | None,
    now: datetime,
    reconsent_window: timedelta = RECONSENT_DUE,
) -> Account:
    """The API view of an account as the :class:`Account` model."""
    return Account.model_validate(account_view(account, token, now, reconsent_window))


def _query_key(filters: repo.AccountFilter, sort: SortKey) -> str:
    return "|".join(
        [
            ",".join(sorted(s.value for s in filters.statuses)),
            filters.purpose or "",
            ",".join(sorted(filters.marketplaces)),
            "" if filters.active is None else str(filters.active),
            filters.search or "",
            sort.value,
        ]
    )


async def account_page(
    session: repo.Reader,
    ctx: RequestContext,
    cursors: CursorCodec,
    filters: repo.AccountFilter,
    sort: SortKey,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of the caller's accounts: the :class:`AccountPage` schema's fields, as plain
    values (one query, no ORM objects, no model validation)."""
    query = _query_key(filters, sort)
    after: tuple[Any, uuid.UUID] | None = None
    if cursor:
        position = cursors.decode(query, cursor)
        try:
            after = (position[0], uuid.UUID(str(position[1])))
        except (IndexError, ValueError):
            raise InvalidInput("the cursor is not valid", field="cursor") from None
    try:
        rows = await repo.list_accounts(
            session,
            ctx.principal.org_id,
            filters,
            sort,
            after,
            limit + 1,
            ctx.now,
            ctx.reconsent_window,
        )
    except ValueError:
        raise InvalidInput("the cursor is not valid", field="cursor") from None
    more = len(rows) > limit
    rows = rows[:limit]
    now, window = ctx.now, ctx.reconsent_window
    items = [row_view(row, now, window) for row in rows]
    next_cursor = None
    if more:
        last = rows[-1]
        token = last if last.token_account_id is not None else None
        position = repo.sort_value(sort, last, token, items[-1]["status"])
        next_cursor = cursors.encode(query, [position, str(last.id)])
    return {"items": items, "next_cursor": next_cursor}


async def list_accounts(
    session: AsyncSession,
    ctx: RequestContext,
    cursors: CursorCodec,
    filters: repo.AccountFilter,
    sort: SortKey,
    limit: int,
    cursor: str | None,
) -> AccountPage:
    """One page of the caller's accounts, as the model (the console renders it)."""
    page = await account_page(session, ctx, cursors, filters, sort, limit, cursor)
    return AccountPage.model_validate(page)


async def status_counts(session: AsyncSession, ctx: RequestContext) -> dict[AccountStatus, int]:
    """How many of the caller's accounts are in each status (every status, zero included)."""
    counts = await repo.status_counts(session, ctx.principal.org_id, ctx.now, ctx.reconsent_window)
    return {status: counts.get(status.value, 0) for status in AccountStatus}


async def filter_values(session: AsyncSession, ctx: RequestContext) -> tuple[list[str], list[str]]:
    """The marketplaces and purposes the caller's accounts use (at most 200 of each)."""
    org_id = ctx.principal.org_id
    return (
        await repo.distinct_values(session, org_id, EbayAccount.marketplace_id, 200),
        await repo.distinct_values(session, org_id, EbayAccount.purpose, 200),
    )


async def summary(session: AsyncSession, ctx: RequestContext) -> AccountSummary:
    """The org's accounts at a glance (one grouped query, two small distinct lists)."""
    counts = await status_counts(session, ctx)
    marketplaces, purposes = await filter_values(session, ctx)
    return AccountSummary(
        total=sum(counts.values()),
        by_status=counts,
        marketplaces=marketplaces,
        purposes=purposes,
    )


async def account_data(
    session: repo.Reader, ctx: RequestContext, account_id: uuid.UUID
) -> dict[str, Any]:
    """One of the caller's accounts as plain values (one query); 404 for another org's."""
    row = await repo.account_row(session, ctx.principal.org_id, account_id)
    if row is None:
        raise account_not_found()
    return row_view(row, ctx.now, ctx.reconsent_window)


async def get_account(session: AsyncSession, ctx: RequestContext, account_id: uuid.UUID) -> Account:
    """One of the caller's accounts."""
    return Account.model_validate(await account_data(session, ctx, account_id))


async def health_page(
    session: repo.Reader,
    ctx: RequestContext,
    cursors: CursorCodec,
    account_id: uuid.UUID,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """The account's health checks, newest first: the :class:`HealthCheckPage` schema's fields
    as plain values; 404 for another org's account."""
    query = f"health:{account_id}"
    after = None
    if cursor:
        position = cursors.decode(query, cursor)
        try:
            after = (datetime.fromisoformat(str(position[0])), int(position[1]))
        except (IndexError, ValueError, TypeError):
            raise InvalidInput("the cursor is not valid", field="cursor") from None
    checks = await repo.health_checks(session, ctx.principal.org_id, account_id, after, limit + 1)
    # The checks query is org-scoped itself: only an empty page needs the account looked up
    # (another org's account, or none, is a 404; one of ours may have no checks yet).
    if not checks and not await repo.account_exists(session, ctx.principal.org_id, account_id):
        raise account_not_found()
    next_cursor = None
    if len(checks) > limit:
        checks = checks[:limit]
        next_cursor = cursors.encode(query, [checks[-1].checked_at.isoformat(), checks[-1].id])
    return {
        "items": [
            {
                "id": c.id,
                "checked_at": c.checked_at,
                "outcome": c.outcome,
                "latency_ms": c.latency_ms,
                "http_status": c.http_status,
                "ebay_error_code": c.ebay_error_code,
                "ebay_request_id": c.ebay_request_id,
                "api": c.api,
                "detail": c.detail,
            }
            for c in checks
        ],
        "next_cursor": next_cursor,
    }


async def health_history(
    session: AsyncSession,
    ctx: RequestContext,
    cursors: CursorCodec,
    account_id: uuid.UUID,
    limit: int,
    cursor: str | None,
) -> HealthCheckPage:
    """The account's health checks, newest first, as the model."""
    page = await health_page(session, ctx, cursors, account_id, limit, cursor)
    return HealthCheckPage.model_validate(page)
