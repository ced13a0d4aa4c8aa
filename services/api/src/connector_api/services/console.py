"""What the admin console shows: the org at a glance and one account in full. It reads through
the same service functions as the REST API (listing) plus a few console-only queries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from connector_api import queries
from connector_api.repository import AccountFilter
from connector_api.schemas import Account, AccountPage, SortKey
from connector_api.services import listing
from connector_api.services.context import RequestContext
from connector_api.signing import CursorCodec
from connector_common.status import AccountStatus

GLANCE_ROWS = 5
HISTORY_ROWS = 100
AUDIT_ROWS = 50
# A check every 15 minutes is 672 a week; a faster schedule is thinned to the newest.
CHART_MAX_CHECKS = 5000


@dataclass(frozen=True)
class Entry:
    """One line of an account's history, or of the org's last failures."""

    at: datetime
    type: str
    failure: bool
    details: dict[str, Any]
    account_id: uuid.UUID | None = None
    house_name: str | None = None


@dataclass(frozen=True)
class Check:
    """One health check, as the chart and its table show it."""

    at: datetime
    outcome: str
    latency_ms: int | None
    http_status: int | None
    ebay_error_code: str | None
    api: str | None
    detail: str | None


@dataclass(frozen=True)
class AuditLine:
    at: datetime
    actor: str
    action: str
    details: dict[str, Any]
    request_id: str | None


@dataclass
class Glance:
    """Counts by status, the next refreshes due, the last failures."""

    counts: dict[AccountStatus, int]
    next_due: list[Account]
    failures: list[Entry]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class ConsoleView:
    glance: Glance
    page: AccountPage


@dataclass
class AccountView:
    account: Account
    since: datetime
    checks: list[Check]
    history: list[Entry] = field(default_factory=list)
    audit: list[AuditLine] = field(default_factory=list)


async def glance(session: AsyncSession, ctx: RequestContext) -> Glance:
    """The org at a glance."""
    org_id = ctx.principal.org_id
    due = await queries.next_refreshes(session, org_id, GLANCE_ROWS)
    failures = await queries.recent_failures(session, org_id, GLANCE_ROWS + 1)
    return Glance(
        counts=await listing.status_counts(session, ctx),
        next_due=[listing.to_account(account, token, ctx.now) for account, token in due],
        failures=[
            Entry(e.occurred_at, e.type, e.failure, e.details, e.account_id, name)
            for e, name in failures
        ],
    )


async def console_view(
    session: AsyncSession,
    ctx: RequestContext,
    cursors: CursorCodec,
    filters: AccountFilter,
    sort: SortKey,
    limit: int,
    cursor: str | None,
) -> ConsoleView:
    """The console: the glance panels and one page of accounts (the REST list's own pages)."""
    page = await listing.list_accounts(session, ctx, cursors, filters, sort, limit, cursor)
    return ConsoleView(glance=await glance(session, ctx), page=page)


async def account_view(
    session: AsyncSession, ctx: RequestContext, account_id: uuid.UUID, window: timedelta
) -> AccountView:
    """Everything about one account: itself, its checks in the window, history and audit."""
    account = await listing.get_account(session, ctx, account_id)  # 404 for another org's
    org_id = ctx.principal.org_id
    since = ctx.now - window
    checks = await queries.health_checks_since(session, org_id, account_id, since, CHART_MAX_CHECKS)
    history = await queries.account_history(session, org_id, account_id, HISTORY_ROWS)
    audit = await queries.audit_entries(session, org_id, account_id, AUDIT_ROWS)
    return AccountView(
        account=account,
        since=since,
        checks=[
            Check(
                c.checked_at,
                c.outcome,
                c.latency_ms,
                c.http_status,
                c.ebay_error_code,
                c.api,
                c.detail,
            )
            for c in checks
        ],
        history=[Entry(e.occurred_at, e.type, e.failure, e.details) for e in history],
        audit=[AuditLine(a.created_at, a.actor, a.action, a.details, a.request_id) for a in audit],
    )
