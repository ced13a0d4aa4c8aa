"""Admin page login: paste a token once (development and tools), or the company's OIDC login.

Either way the browser gets our own session cookie (HttpOnly, SameSite=Strict, Secure over
https); the token itself is not kept.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from connector_api.auth import Identity, require_role
from connector_api.deps import StateDep, principal_for, request_id
from connector_api.errors import ApiError
from connector_api.oidc import OIDC_LOGIN_SECONDS, LoginRequest, OidcError
from connector_api.pages import render
from connector_api.ratelimit import rate_limit
from connector_api.routes.admin import redirect_with_flash as _redirect
from connector_api.sessions import FLASH_COOKIE, LOGIN_CSRF_COOKIE, SESSION_COOKIE, FlashKind
from connector_api.signing import constant_time_equal
from connector_api.state import AppState
from connector_common.events import utcnow

# Resolved at each use, so it follows configure_logging even when imported earlier.
log = structlog.stdlib.get_logger(__name__)
router = APIRouter(prefix="/admin", include_in_schema=False)
OIDC_COOKIE = "connector_oidc"


async def _start_session(
    app: AppState, request: Request, identity: Identity, response: Response, method: str
) -> None:
    """A server-side session for a verified identity, and its cookie on the response."""
    require_role(identity)
    principal = await principal_for(app, identity, request)
    cookie, session = await app.admin_sessions.issue(
        identity, principal.org_id, method=method, request_id=request_id(request)
    )
    max_age = max(1, int((session.expires_at - utcnow()).total_seconds()))
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=app.settings.api.secure_cookies,
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin")


@router.post("/login", dependencies=[Depends(rate_limit("login"))])
async def login(request: Request, app: StateDep) -> Response:
    """Exchange a pasted bearer token for a session."""
    form = await request.form()
    csrf, token = form.get("csrf"), form.get("token")
    if not app.admin_sessions.login_csrf_ok(
        request.cookies.get(LOGIN_CSRF_COOKIE), csrf if isinstance(csrf, str) else None
    ):
        return _redirect(app, "error", "The login form had expired. Try again.")
    if not isinstance(token, str) or not token.strip():
        return _redirect(app, "error", "Paste a token to log in.")
    response = _redirect(app)
    try:
        identity = await app.verifier.verify(token.strip())
        await _start_session(app, request, identity, response, "token")
    except ApiError as exc:
        return _redirect(app, "error", f"That token was not accepted: {exc.message}.")
    _set_flash(app, response, "success", f"Logged in as {identity.subject}.")
    return response


def _set_flash(app: AppState, response: Response, kind: FlashKind, message: str) -> None:
    response.set_cookie(
        FLASH_COOKIE,
        app.admin_sessions.flash(kind, message),
        max_age=120,
        httponly=True,
        samesite="lax",
        secure=app.settings.api.secure_cookies,
        path="/admin",
    )


@router.post("/logout")
async def logout(request: Request, app: StateDep) -> Response:
    """End this session, server-side too (CSRF-checked, so another site cannot log you out)."""
    return await _end(request, app, everywhere=False)


@router.post("/logout-everywhere")
async def logout_everywhere(request: Request, app: StateDep) -> Response:
    """End every session of this person in this org, on every browser and device."""
    return await _end(request, app, everywhere=True)


async def _end(request: Request, app: AppState, *, everywhere: bool) -> Response:
    session = await app.admin_sessions.read(request.cookies.get(SESSION_COOKIE))
    form = await request.form()
    csrf = form.get("csrf")
    if session is not None and not app.admin_sessions.csrf_ok(
        session, csrf if isinstance(csrf, str) else None
    ):
        return _redirect(app, "error", "The form had expired. Try again.")
    message = "Logged out."
    if session is not None and everywhere:
        ended = await app.admin_sessions.revoke_all(
            session.org_id, session.subject, request_id(request)
        )
        message = f"Logged out everywhere ({ended} session{'s' if ended != 1 else ''} ended)."
    elif session is not None:
        await app.admin_sessions.revoke(session, request_id(request))
    response = _redirect(app, "info", message)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/oidc/login", dependencies=[Depends(rate_limit("login"))])
async def oidc_login(app: StateDep) -> Response:
    """Off to the identity provider (404 when OIDC is not configured)."""
    if app.oidc is None:
        return _redirect(app, "error", "OIDC login is not configured.")
    try:
        url, attempt = await app.oidc.authorization_url()
    except OidcError as exc:
        return _redirect(app, "error", f"OIDC login failed: {exc}.")
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        OIDC_COOKIE,
        app.oidc_signer.dumps([attempt.state, attempt.nonce, attempt.verifier]),
        max_age=OIDC_LOGIN_SECONDS,
        httponly=True,
        samesite="lax",  # it must come back with the identity provider's redirect
        secure=app.settings.api.secure_cookies,
        path="/admin/oidc",
    )
    return response


@router.get("/oidc/callback", dependencies=[Depends(rate_limit("login"))])
async def oidc_callback(request: Request, app: StateDep) -> Response:
    """The identity provider's redirect: verify, start a session, go to the admin page."""
    params = request.query_params
    try:
        if app.oidc is None:
            raise OidcError("OIDC login is not configured")
        if params.get("error"):
            raise OidcError("the identity provider did not log you in")
        try:
            saved = app.oidc_signer.loads(request.cookies.get(OIDC_COOKIE) or "")
            attempt = LoginRequest(str(saved[0]), str(saved[1]), str(saved[2]))
        except (ValueError, IndexError, TypeError):
            raise OidcError("this login attempt is unknown or expired") from None
        state, code = params.get("state") or "", params.get("code") or ""
        if not state or not constant_time_equal(attempt.state, state):
            raise OidcError("this login attempt does not match")
        if not code or len(code) > 2048:
            raise OidcError("the identity provider sent no code")
        identity = await app.oidc.complete(attempt, code)
        response = render(
            request,
            "callback.html",
            {"kind": "success", "message": f"Logged in as {identity.subject}."},
        )
        await _start_session(app, request, identity, response, "oidc")
    except (OidcError, ApiError) as exc:
        message = exc.message if isinstance(exc, ApiError) else str(exc)
        log.info("oidc login failed", reason=message)
        response = render(
            request, "callback.html", {"kind": "error", "message": f"Login failed: {message}."}, 400
        )
        response.delete_cookie(OIDC_COOKIE, path="/admin/oidc")
        return response
    # A page, not a redirect: after a cross-site redirect chain a SameSite=Strict cookie would
    # not be sent, while a navigation from our own page carries it.
    response.delete_cookie(OIDC_COOKIE, path="/admin/oidc")
    return response
