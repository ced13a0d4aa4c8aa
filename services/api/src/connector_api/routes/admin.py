"""The admin page: one server-rendered table of the org's accounts and its actions.

Every POST carries the session's CSRF token; every action runs the same service function as
the REST API, in its own transaction, and comes back to ``/admin`` with a flash message.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from connector_api.auth import Identity
from connector_api.deps import StateDep, account_id_param, principal_for, request_id
from connector_api.errors import ApiError
from connector_api.pages import BADGES, relative, render
from connector_api.ratelimit import RateLimited
from connector_api.repository import AccountFilter
from connector_api.schemas import AccountUpdate, ConnectRequest, SortKey
from connector_api.services import accounts, connect, listing
from connector_api.services.context import RequestContext
from connector_api.sessions import (
    CONSENT_COOKIE,
    FLASH_COOKIE,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    AdminSession,
    FlashKind,
)
from connector_api.state import AppState
from connector_common.db.engine import unit_of_work
from connector_common.events import utcnow
from connector_common.status import AccountStatus

router = APIRouter(prefix="/admin", include_in_schema=False)
PAGE_SIZE = 50
Action = Callable[[AsyncSession, RequestContext], Awaitable[Any]]


def redirect_with_flash(
    app: AppState, kind: FlashKind | None = None, message: str = "", to: str = "/admin"
) -> RedirectResponse:
    response = RedirectResponse(to, status_code=303)
    if kind is not None:
        response.set_cookie(
            FLASH_COOKIE,
            app.admin_sessions.flash(kind, message),
            max_age=120,
            httponly=True,
            samesite="lax",
            secure=app.settings.api.secure_cookies,
            path="/admin",
        )
    return response


async def admin_context(app: AppState, request: Request, session: AdminSession) -> RequestContext:
    """The request context of an admin-page request (same as a REST request's)."""
    identity = Identity(session.subject, session.org_external_id, session.roles, session.expires_at)
    principal = await principal_for(app, identity, request)
    return RequestContext(
        principal=principal, namespace=app.namespace, request_id=request_id(request)
    )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    field = ".".join(str(p) for p in error["loc"]) or "form"
    return f"{field.replace('_', ' ')}: {str(error['msg']).removeprefix('Value error, ')}"


@router.get("")
async def admin_page(
    request: Request,
    app: StateDep,
    status: Annotated[AccountStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    """The accounts table, or the login form without a session."""
    flash = app.admin_sessions.read_flash(request.cookies.get(FLASH_COOKIE))
    session = await app.admin_sessions.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return _login_page(request, app, flash)
    ctx = await admin_context(app, request, session)
    filters = AccountFilter(statuses=(status,) if status else ())
    try:
        async with unit_of_work(app.sessions) as db:
            page = await listing.list_accounts(
                db, ctx, app.cursors, filters, SortKey.HOUSE_NAME, PAGE_SIZE, cursor
            )
    except ApiError:
        return redirect_with_flash(app, "error", "That page link is no longer valid.")
    response = render(
        request,
        "admin.html",
        {
            "session": session,
            "org": session.org_external_id,
            "can_write": ctx.principal.can_write,
            "csrf": app.admin_sessions.csrf_token(session),
            "accounts": page.items,
            "next_cursor": page.next_cursor,
            "status_filter": status.value if status else "",
            "statuses": [s.value for s in AccountStatus],
            "badges": BADGES,
            "relative": relative,
            "now": utcnow(),
            "flash": flash,
        },
    )
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    return response


def _login_page(request: Request, app: AppState, flash: Any) -> Response:
    cookie, token = app.admin_sessions.login_csrf()
    response = render(
        request,
        "login.html",
        {
            "csrf": token,
            "flash": flash,
            "oidc": app.settings.api.oidc.enabled,
            "development": app.settings.is_development,
        },
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        cookie,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=app.settings.api.secure_cookies,
        path="/admin",
    )
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    return response


async def _act(
    request: Request, app: AppState, action: Action, success: str | Callable[[Any], str]
) -> Response:
    """Check session and CSRF, run one service function in one transaction, flash the result."""
    session = await app.admin_sessions.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return redirect_with_flash(app, "error", "Your session has ended: log in again.")
    form = await request.form()
    csrf = form.get("csrf")
    if not app.admin_sessions.csrf_ok(session, csrf if isinstance(csrf, str) else None):
        return redirect_with_flash(
            app, "error", "The form had expired; nothing was changed. Try again."
        )
    ctx = await admin_context(app, request, session)
    try:
        async with unit_of_work(app.sessions) as db:
            result = await action(db, ctx)
    except RateLimited:
        raise  # a 429 page with Retry-After, not a flash message
    except ApiError as exc:
        return redirect_with_flash(app, "error", exc.message)
    app.wake_relay()
    return redirect_with_flash(app, "success", success(result) if callable(success) else success)


def _text(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


@router.post("/connect")
async def connect_account(request: Request, app: StateDep) -> Response:
    """Start connecting a seller: off to eBay's consent page."""
    form = await request.form()
    try:
        body = ConnectRequest(
            house_name=_text(form, "house_name") or "", purpose=_text(form, "purpose") or ""
        )
    except ValidationError as exc:
        return redirect_with_flash(app, "error", _first_error(exc))

    nonce = _browser_nonce(request)

    async def start(db: AsyncSession, ctx: RequestContext) -> Any:
        await app.limits.check("connect", str(ctx.principal.org_id))
        started = await connect.start_connect(
            db,
            ctx,
            app.ebay,
            body,
            app.settings.api.oauth_state_ttl_seconds,
            browser_hash=connect.hash_browser(nonce),
        )
        request.scope.setdefault("state", {})["consent_url"] = started.consent_url
        return started

    response = await _act(request, app, start, "")
    return _to_consent(app, response, request, nonce)


def _browser_nonce(request: Request) -> str:
    """This browser's consent nonce: the one it has (several consents may be under way), or
    a new one."""
    current = request.cookies.get(CONSENT_COOKIE)
    if current and 32 <= len(current) <= connect.MAX_STATE_CHARS and current.isascii():
        return current
    return secrets.token_urlsafe(32)


def _to_consent(app: AppState, response: Response, request: Request, nonce: str) -> Response:
    # _act answered with a redirect to /admin; on success we send the browser to eBay instead,
    # holding the nonce its consent is bound to (Lax: it must come back from eBay's site).
    started = request.scope.get("state", {}).get("consent_url")
    if not started:
        return response
    to_ebay = RedirectResponse(started, status_code=303)
    to_ebay.set_cookie(
        CONSENT_COOKIE,
        nonce,
        max_age=app.settings.api.oauth_state_ttl_seconds,
        httponly=True,
        samesite="lax",
        secure=app.settings.api.secure_cookies,
        path="/",
    )
    return to_ebay


def _account(request: Request, account_id: str) -> uuid.UUID:
    return account_id_param(request, account_id)


@router.post("/accounts/{account_id}/reconnect")
async def reconnect_account(request: Request, app: StateDep, account_id: str) -> Response:
    """New consent for an existing account."""
    target = _account(request, account_id)
    nonce = _browser_nonce(request)

    async def start(db: AsyncSession, ctx: RequestContext) -> Any:
        await app.limits.check("connect", str(ctx.principal.org_id))
        started = await connect.start_reconnect(
            db,
            ctx,
            app.ebay,
            target,
            app.settings.api.oauth_state_ttl_seconds,
            browser_hash=connect.hash_browser(nonce),
        )
        request.scope.setdefault("state", {})["consent_url"] = started.consent_url
        return started

    return _to_consent(app, await _act(request, app, start, ""), request, nonce)


@router.post("/accounts/{account_id}/edit")
async def edit_account(request: Request, app: StateDep, account_id: str) -> Response:
    """Rename and/or change the purpose."""
    target = _account(request, account_id)
    form = await request.form()
    try:
        change = AccountUpdate(house_name=_text(form, "house_name"), purpose=_text(form, "purpose"))
    except ValidationError as exc:
        return redirect_with_flash(app, "error", _first_error(exc))

    async def edit(db: AsyncSession, ctx: RequestContext) -> Any:
        return await accounts.update_account(db, ctx, target, change)

    return await _act(request, app, edit, lambda a: f"Saved {a.house_name!r}.")


def _simple(name: str, run: Callable[..., Awaitable[Any]], done: Callable[[Any], str]) -> None:
    async def endpoint(request: Request, app: StateDep, account_id: str) -> Response:
        target = _account(request, account_id)

        async def action(db: AsyncSession, ctx: RequestContext) -> Any:
            return await run(db, ctx, target)

        return await _act(request, app, action, done)

    endpoint.__name__ = name.replace("-", "_")
    router.post(f"/accounts/{{account_id}}/{name}", name=f"admin_{endpoint.__name__}")(endpoint)


_simple("deactivate", accounts.deactivate, lambda a: f"Deactivated {a.house_name!r}.")
_simple("reactivate", accounts.reactivate, lambda a: f"Reactivated {a.house_name!r}.")
_simple("refresh", accounts.request_refresh, lambda _: "Token refresh requested.")
_simple("health-check", accounts.request_health_check, lambda _: "Health check requested.")
_simple("delete", accounts.delete, lambda _: "Account deleted.")
