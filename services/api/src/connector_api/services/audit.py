"""Reading an org's audit trail (admins only). What leaves here is what the audit entry
records, filtered once more on the way out: only known detail keys with plain values, so no
secret and no seller data can reach a response even if a future writer put one in."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from connector_api import audit_repository as audit_repo
from connector_api.errors import InvalidInput
from connector_api.schemas import AuditEvent, AuditEventPage, FieldChange
from connector_api.services.context import RequestContext
from connector_api.signing import CursorCodec
from connector_common.db.models import AuditEntry

# What an entry's details may show (see the writers in services/ and sessions.py).
SHOWN_DETAILS = frozenset(
    {"marketplace_id", "site_id", "token_version", "slot", "method", "sessions"}
)
# Fields whose before/after may be shown: the org's own labels and switches.
SHOWN_CHANGES = frozenset({"house_name", "purpose", "is_active"})


def _plain(value: Any) -> str | int | bool | None:
    return value if isinstance(value, str | int | bool) or value is None else str(value)


def to_event(entry: AuditEntry) -> AuditEvent:
    """The API view of an audit entry."""
    changes = {
        field: FieldChange(before=_plain(change.get("before")), after=_plain(change.get("after")))
        for field, change in (entry.changes or {}).items()
        if field in SHOWN_CHANGES and isinstance(change, dict)
    }
    details = {
        key: _plain(value)
        for key, value in (entry.details or {}).items()
        if key in SHOWN_DETAILS and isinstance(value, str | int | bool)
    }
    return AuditEvent(
        id=entry.id,
        occurred_at=entry.created_at,
        actor=entry.actor,
        action=entry.action,
        account_id=entry.account_id,
        house_name=entry.house_name,
        changes=changes,
        details=details,
        request_id=entry.request_id,
    )


def _query_key(filters: audit_repo.AuditFilter) -> str:
    return "|".join(
        [
            "audit",
            str(filters.account_id or ""),
            filters.actor or "",
            ",".join(sorted(filters.actions)),
            filters.since.isoformat() if filters.since else "",
            filters.until.isoformat() if filters.until else "",
        ]
    )


async def list_events(
    session: AsyncSession,
    ctx: RequestContext,
    cursors: CursorCodec,
    filters: audit_repo.AuditFilter,
    limit: int,
    cursor: str | None,
) -> AuditEventPage:
    """One page of the caller's org's audit trail, newest first (403 for viewers)."""
    ctx.principal.require_admin()
    query = _query_key(filters)
    before_id = None
    if cursor:
        position = cursors.decode(query, cursor)
        if len(position) != 1 or isinstance(position[0], bool) or not isinstance(position[0], int):
            raise InvalidInput("the cursor is not valid", field="cursor")
        before_id = position[0]
    entries = await audit_repo.list_entries(
        session, ctx.principal.org_id, filters, before_id, limit + 1
    )
    next_cursor = None
    if len(entries) > limit:
        entries = entries[:limit]
        next_cursor = cursors.encode(query, [entries[-1].id])
    return AuditEventPage(items=[to_event(e) for e in entries], next_cursor=next_cursor)
