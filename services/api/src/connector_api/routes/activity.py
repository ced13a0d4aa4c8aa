"""The admin page's "Activity" view: the org's audit trail, for admins, through the same
service function as ``GET /audit-events``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from connector_api.audit_repository import AuditFilter
from connector_api.deps import StateDep
from connector_api.errors import ApiError
from connector_api.pages import relative, render
from connector_api.routes.admin import admin_context, redirect_with_flash
from connector_api.services import audit
from connector_api.sessions import SESSION_COOKIE
from connector_common.db.engine import unit_of_work
from connector_common.events import utcnow

router = APIRouter(prefix="/admin", include_in_schema=False)
PAGE_SIZE = 50


@router.get("/activity")
async def activity_page(
    request: Request,
    app: StateDep,
    action: Annotated[str | None, Query(max_length=100)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    account: Annotated[str | None, Query(max_length=100)] = None,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    """Who did what in the org, newest first, with filters."""
    session = await app.admin_sessions.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return redirect_with_flash(app, "error", "Your session has ended: log in again.")
    try:
        account_id = uuid.UUID(account) if account else None
    except ValueError:
        return redirect_with_flash(app, "error", "That account id is not valid.", "/admin/activity")
    if not all(v is None or v.isprintable() for v in (action, actor)):
        return redirect_with_flash(app, "error", "Filters cannot hold control characters.")
    filters = AuditFilter(
        account_id=account_id,
        actor=actor or None,
        actions=(action,) if action else (),
    )
    ctx = await admin_context(app, request, session)
    try:
        async with unit_of_work(app.sessions) as db:
            page = await audit.list_events(db, ctx, app.cursors, filters, PAGE_SIZE, cursor)
    except ApiError as exc:
        return redirect_with_flash(app, "error", exc.message)
    return render(
        request,
        "activity.html",
        {
            "session": session,
            "org": session.org_external_id,
            "can_write": ctx.principal.can_write,
            "csrf": app.admin_sessions.csrf_token(session),
            "events": page.items,
            "next_cursor": page.next_cursor,
            "filters": {"action": action or "", "actor": actor or "", "account": account or ""},
            "relative": relative,
            "now": utcnow(),
            "flash": None,
        },
    )
