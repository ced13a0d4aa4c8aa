"""The admin console's pages: the accounts at a glance (``/admin``) and one account in full
(``/admin/accounts/{id}``). Both are whole pages for a browser, and their live part alone for
htmx, which asks again every few seconds (``CONNECTOR_API__CONSOLE_REFRESH_SECONDS``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from connector_api import views
from connector_api.deps import StateDep
from connector_api.errors import ApiError
from connector_api.routes.admin import (
    account_from_path,
    admin_context,
    current_session,
    login_page,
    read_flash,
    redirect_with_flash,
    shown_flash,
)

router = APIRouter(prefix="/admin", include_in_schema=False)


def _session_ended(request: Request) -> Response:
    """An htmx request without a session: reload the page, which shows the login form."""
    return Response(status_code=204, headers={"HX-Refresh": "true"})


@router.get("")
async def console_page(request: Request, app: StateDep) -> Response:
    """The console, or the login form without a session."""
    flash = read_flash(request, app)
    session = await current_session(request, app)
    if session is None:
        if views.is_fragment(request, "live"):
            return _session_ended(request)
        return shown_flash(login_page(request, app, flash), flash)
    ctx = await admin_context(app, request, session)
    query = views.ConsoleQuery.from_request(request)
    response = await views.render_console(request, app, session, ctx, query, flash=flash)
    return shown_flash(response, flash)


@router.get("/accounts/{account_id}")
async def account_page(request: Request, app: StateDep, account_id: str) -> Response:
    """Everything about one account."""
    session = await current_session(request, app)
    if session is None:
        if views.is_fragment(request, "account-live"):
            return _session_ended(request)
        return RedirectResponse("/admin", status_code=303)
    flash = read_flash(request, app)
    try:
        target = account_from_path(request, account_id)
        ctx = await admin_context(app, request, session)
        response = await views.render_account(request, app, session, ctx, target, flash=flash)
    except ApiError as exc:  # not found (or another org's: the same answer)
        return redirect_with_flash(app, "error", exc.message)
    return shown_flash(response, flash)
