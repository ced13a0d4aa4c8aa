"""The admin console's actions, its login page, and what its pages share (the session).

Every POST carries the session's CSRF token; every action runs the same service function as
the REST API, in its own transaction, and comes back to the page it was started from with a
flash message. A refused form (rename, connect) is shown again with what was typed and why,
next to the field. The pages themselves are in :mod:`connector_api.routes.console`.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from connector_api import views
from connector_api.auth import Identity
from connector_api.deps import StateDep, parse_account_id, principal_for, request_id
from connector_api.errors import ApiError
from connector_api.pages import render
from connector_api.ratelimit import RateLimited
from connector_api.schemas import AccountUpdate, ConnectRequest
from connector_api.services import accounts, connect
from connector_api.services.context import RequestContext
from connector_api.sessions import (
    CONSENT_COOKIE,
    FLASH_COOKIE,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    AdminSession,
    Flash,
    FlashKind,
)
from connector_api.state import AppState
from connector_api.views import FormState
from connector_common.db.engine import unit_of_work

router = APIRouter(prefix="/admin", include_in_schema=False)
Action = Callable[[AsyncSession, RequestContext], Awaitable[Any]]
Refused = Callable[[AdminSession, RequestContext, ApiError], Awaitable[Response]]


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
        principal=principal,
        namespace=app.namespace,
        request_id=request_id(request),
        reconsent_window=app.reconsent_window,
        budget=app.settings.ebay.budget,
    )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    field = ".".join(str(p) for p in error["loc"]) or "form"
    return f"{field.replace('_', ' ')}: {str(error['msg']).removeprefix('Value error, ')}"


async def current_session(request: Request, app: AppState) -> AdminSession | None:
    """The signed-in person of this request, if any (every admin page and action asks here):
    a live server-side session, not revoked, not idle too long."""
    return await app.admin_sessions.read(request.cookies.get(SESSION_COOKIE))


def read_flash(request: Request, app: AppState) -> Flash | None:
    """The flash message the previous action left for this page."""
    return app.admin_sessions.read_flash(request.cookies.get(FLASH_COOKIE))


def shown_flash(response: Response, flash: Flash | None) -> Response:
    """Forget a flash message once a page showed it."""
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    return response


def login_page(request: Request, app: AppState, flash: Any) -> Response:
    """The login form (every admin page without a session)."""
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
    request: Request,
    app: AppState,
    action: Action,
    success: str | Callable[[Any], str],
    account: uuid.UUID | None = None,
    refused: Refused | None = None,
) -> Response:
    """Check session and CSRF, run one service function in one transaction, flash the result.

    With ``account`` and the form's ``back=account``, the answer returns to the account page.
    ``refused`` may answer a refusal with a page of its own (the form again, with the reason).
    """
    session = await current_session(request, app)
    if session is None:
        return redirect_with_flash(app, "error", "Your session has ended: log in again.")
    form = await request.form()
    to = f"/admin/accounts/{account}" if account and form.get("back") == "account" else "/admin"
    csrf = form.get("csrf")
    if not app.admin_sessions.csrf_ok(session, csrf if isinstance(csrf, str) else None):
        return redirect_with_flash(
            app, "error", "The form had expired; nothing was changed. Try again.", to
        )
    ctx = await admin_context(app, request, session)
    try:
        async with unit_of_work(app.sessions) as db:
            result = await action(db, ctx)
    except RateLimited:
        raise  # a 429 page with Retry-After, not a flash message
    except ApiError as exc:
        if refused is not None and exc.status_code in (409, 422):
            return await refused(session, ctx, exc)
        return redirect_with_flash(app, "error", exc.message, to)
    app.wake_relay()
    message = success(result) if callable(success) else success
    return redirect_with_flash(app, "success", message, to)


def _text(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


@router.post("/connect")
async def connect_account(request: Request, app: StateDep) -> Response:
    """Start connecting a seller: off to eBay's consent page (or the form again, saying why)."""
    form = await request.form()
    values = {name: _text(form, name) or "" for name in ("house_name", "purpose")}

    async def again(session: AdminSession, ctx: RequestContext, errors: FormState) -> Response:
        flash = Flash("error", next(iter(errors.errors.values())))
        return await views.render_console(
            request,
            app,
            session,
            ctx,
            views.ConsoleQuery(),
            connect=errors,
            flash=flash,
            status_code=422,
        )

    try:
        body = ConnectRequest(house_name=values["house_name"], purpose=values["purpose"])
    except ValidationError as exc:
        session = await current_session(request, app)
        if session is None:
            return redirect_with_flash(app, "error", _first_error(exc))
        return await again(
            session,
            await admin_context(app, request, session),
            FormState.from_validation(values, exc),
        )

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

    async def refused(session: AdminSession, ctx: RequestContext, exc: ApiError) -> Response:
        return await again(session, ctx, FormState(values, {_field_of(exc): exc.message}))

    response = await _act(request, app, start, "", refused=refused)
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


def account_from_path(request: Request, account_id: str) -> uuid.UUID:
    return parse_account_id(request, account_id)


@router.post("/accounts/{account_id}/reconnect")
async def reconnect_account(request: Request, app: StateDep, account_id: str) -> Response:
    """New consent for an existing account."""
    target = account_from_path(request, account_id)
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

    return _to_consent(app, await _act(request, app, start, "", target), request, nonce)


@router.post("/accounts/{account_id}/edit")
async def edit_account(request: Request, app: StateDep, account_id: str) -> Response:
    """Rename and/or change the purpose; refused, the form comes back with what was typed."""
    target = account_from_path(request, account_id)
    form = await request.form()
    values = {name: _text(form, name) for name in ("house_name", "purpose")}
    typed = {k: v for k, v in values.items() if v is not None}

    async def again(session: AdminSession, ctx: RequestContext, errors: FormState) -> Response:
        flash = Flash("error", next(iter(errors.errors.values())))
        return await views.render_account(
            request, app, session, ctx, target, edit=errors, flash=flash, status_code=422
        )

    try:
        change = AccountUpdate(house_name=values["house_name"], purpose=values["purpose"])
    except ValidationError as exc:
        session = await current_session(request, app)
        if session is None or form.get("back") != "account":
            return redirect_with_flash(app, "error", _first_error(exc))
        ctx = await admin_context(app, request, session)
        return await _or_missing(again(session, ctx, FormState.from_validation(typed, exc)), app)

    async def edit(db: AsyncSession, ctx: RequestContext) -> Any:
        return await accounts.update_account(db, ctx, target, change)

    async def refused(session: AdminSession, ctx: RequestContext, exc: ApiError) -> Response:
        errors = {_field_of(exc): exc.message}
        return await _or_missing(again(session, ctx, FormState(typed, errors)), app)

    back = refused if form.get("back") == "account" else None
    return await _act(
        request, app, edit, lambda a: f"Saved {a.house_name!r}.", target, refused=back
    )


async def _or_missing(page: Awaitable[Response], app: AppState) -> Response:
    try:
        return await page
    except ApiError as exc:  # the account went away meanwhile
        return redirect_with_flash(app, "error", exc.message)


def _field_of(exc: ApiError) -> str:
    """The form field a refusal is about (a taken house name is a 409 without a field)."""
    if getattr(exc, "field", None):
        return str(exc.field)  # type: ignore[attr-defined]
    return "house_name" if "house name" in exc.message.lower() else "form"


def _simple(name: str, run: Callable[..., Awaitable[Any]], done: Callable[[Any], str]) -> None:
    async def endpoint(request: Request, app: StateDep, account_id: str) -> Response:
        target = account_from_path(request, account_id)

        async def action(db: AsyncSession, ctx: RequestContext) -> Any:
            return await run(db, ctx, target)

        # After a delete there is no account page to return to.
        return await _act(request, app, action, done, None if name == "delete" else target)

    endpoint.__name__ = name.replace("-", "_")
    router.post(f"/accounts/{{account_id}}/{name}", name=f"admin_{endpoint.__name__}")(endpoint)


_simple("deactivate", accounts.deactivate, lambda a: f"Deactivated {a.house_name!r}.")
_simple("reactivate", accounts.reactivate, lambda a: f"Reactivated {a.house_name!r}.")
_simple("refresh", accounts.request_refresh, lambda _: "Token refresh requested.")
_simple("health-check", accounts.request_health_check, lambda _: "Health check requested.")
_simple("delete", accounts.delete, lambda _: "Account deleted.")
