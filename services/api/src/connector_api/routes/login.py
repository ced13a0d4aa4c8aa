"""Admin page login: paste a token once (development and tools), or the company's OIDC login.

Either way the browser gets our own session cookie (HttpOnly, SameSite=Strict, Secure over
https); the token itself is not kept.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from connector_api.auth import Identity, require_role
from connector_api.deps import StateDep, principal_for
from connector_api.errors import ApiError
from connector_api.oidc import LoginRequest, OidcError
from connector_api.pages import render
from connector_api.routes.admin import redirect_with_flash as _redirect
from connector_api.sessions import LOGIN_CSRF_COOKIE, SESSION_COOKIE
from connector_api.signing import constant_time_equal
from connector_api.state import AppState
from connector_common.events import utcnow

# Resolved at each use, so it follows configure_logging even when imported earlier.
log = structlog.stdlib.get_logger(__name__)
router = APIRouter(prefix="/admin", include_in_schema=False)
OIDC_COOKIE = "connector_oidc"


def _start_session(app: AppState, identity: Identity, response: Response) -> None:
    cookie, session = app.admin_sessions.issue(identity)
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


@router.post("/login")
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
    try:
        identity = await app.verifier.verify(token.strip())
        require_role(identity)
        await principal_for(app, identity, request)
    except ApiError as exc:
        return _redirect(app, "error", f"That token was not accepted: {exc.message}.")
    response = _redirect(app, "success", f"Logged in as {identity.subject}.")
    _start_session(app, identity, response)
    return response


@router.post("/logout")
async def logout(request: Request, app: StateDep) -> Response:
    """End the session (CSRF-checked, so another site cannot log you out)."""
    session = app.admin_sessions.read(request.cookies.get(SESSION_COOKIE))
    form = await request.form()
    csrf = form.get("csrf")
    if session is not None and not app.admin_sessions.csrf_ok(
        session, csrf if isinstance(csrf, str) else None
    ):
        return _redirect(app, "error", "The form had expired. Try again.")
    response = _redirect(app, "info", "Logged out.")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/oidc/login")
async def oidc_login(app: StateDep) -> Response:
    """Off to the identity provider (404 when OIDC is not configured)."""
    if app.oidc is None:
        return _redirect(app, "error", "OIDC login is not configured.")
    attempt = LoginRequest.new()
    try:
        url = await app.oidc.authorization_url(attempt)
    except OidcError as exc:
        return _redirect(app, "error", f"OIDC login failed: {exc}.")
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        OIDC_COOKIE,
        app.oidc_signer.dumps([attempt.state, attempt.nonce, attempt.verifier]),
        max_age=600,
        httponly=True,
        samesite="lax",  # it must come back with the identity provider's redirect
        secure=app.settings.api.secure_cookies,
        path="/admin/oidc",
    )
    return response


@router.get("/oidc/callback")
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
        require_role(identity)
        await principal_for(app, identity, request)
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
    response = render(
        request,
        "callback.html",
        {"kind": "success", "message": f"Logged in as {identity.subject}."},
    )
    _start_session(app, identity, response)
    response.delete_cookie(OIDC_COOKIE, path="/admin/oidc")
    return response
