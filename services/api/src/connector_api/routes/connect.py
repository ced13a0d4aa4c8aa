"""Connecting eBay accounts: start the consent (REST) and eBay's redirect back (the browser).

``GET /ebay/oauth/callback`` is the accept URL registered for the RuName (and may be the
decline URL too). It is unauthenticated: the seller's browser arrives from eBay, and the
single-use ``state`` ties the request to the org and person who started it.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, Response

from connector_api.deps import AccountIdDep, ContextDep, SessionDep, StateDep, request_id
from connector_api.errors import Conflict
from connector_api.pages import render
from connector_api.ratelimit import rate_limit
from connector_api.schemas import ConnectRequest, ConnectStarted, error_responses
from connector_api.services import connect as service
from connector_api.sessions import CONSENT_COOKIE, FLASH_COOKIE, FlashKind
from connector_api.state import AppState
from connector_common.db.engine import unit_of_work
from connector_common.events import utcnow

# Resolved at each use, so it follows configure_logging even when imported earlier.
log = structlog.stdlib.get_logger(__name__)
router = APIRouter(tags=["connect"])
# (flash kind, message for the person, HTTP status, outcome for the log)
Outcome = tuple[FlashKind, str, int, str]


@router.post(
    "/ebay-accounts/connect",
    status_code=status.HTTP_201_CREATED,
    response_model=ConnectStarted,
    responses=error_responses(401, 403, 409, 422, 429),
)
async def start_connect(
    session: SessionDep, ctx: ContextDep, state: StateDep, body: ConnectRequest
) -> ConnectStarted:
    """Start connecting a seller: returns eBay's consent URL (valid for 10 minutes, once)."""
    await state.limits.check("connect", str(ctx.principal.org_id))
    return await service.start_connect(
        session, ctx, state.ebay, body, state.settings.api.oauth_state_ttl_seconds
    )


@router.post(
    "/ebay-accounts/{account_id}/reconnect",
    status_code=status.HTTP_201_CREATED,
    response_model=ConnectStarted,
    responses=error_responses(401, 403, 404, 422, 429),
)
async def start_reconnect(
    session: SessionDep, ctx: ContextDep, state: StateDep, account_id: AccountIdDep
) -> ConnectStarted:
    """New consent for an existing account (e.g. after it needs reconnecting); the seller must
    consent as the same eBay user for the same account id to get the new tokens."""
    await state.limits.check("connect", str(ctx.principal.org_id))
    return await service.start_reconnect(
        session, ctx, state.ebay, account_id, state.settings.api.oauth_state_ttl_seconds
    )


@router.get(
    "/ebay/oauth/callback",
    response_class=HTMLResponse,
    dependencies=[Depends(rate_limit("callback"))],
    responses={400: {"description": "Declined, unknown/expired/used state, bad code."}},
)
async def oauth_callback(request: Request, state: StateDep) -> Response:
    """eBay's redirect after the seller agreed (``code``) or declined (``error``). The browser
    ends on the admin page with a message; a failure leaves nothing behind."""
    kind, message, status_code, reason = await complete_consent(state, request)
    response = render(
        request,
        "callback.html",
        {"kind": kind, "message": message},
        status_code=status_code,
    )
    response.set_cookie(
        FLASH_COOKIE,
        state.admin_sessions.flash(kind, message),
        max_age=120,
        httponly=True,
        # Lax, not Strict: the page is reached from eBay, a cross-site navigation.
        samesite="lax",
        secure=state.settings.api.secure_cookies,
        path="/admin",
    )
    response.headers["Cache-Control"] = "no-store"
    log.info("consent finished", outcome=reason, http_status=status_code)
    return response


async def complete_consent(app: AppState, request: Request) -> Outcome:
    """Claim the state, exchange the code, store the account; each failure says why."""
    params = request.query_params
    now = utcnow()
    rid = request_id(request)
    browser = service.hash_browser(request.cookies.get(CONSENT_COOKIE))
    try:
        service.check_callback(params.get("state"), params.get("code"), params.get("error"))
        if params.get("error"):
            # Declined on eBay's page: burn the state too, so the link cannot be replayed.
            try:
                async with unit_of_work(app.sessions) as session:
                    await service.claim_state(session, params.get("state"), now, browser)
            except service.ConnectFailed:
                pass
            raise service.ConnectFailed(
                "declined", "The seller declined eBay's consent: nothing was connected."
            )
        async with unit_of_work(app.sessions) as session:
            pending = await service.claim_state(session, params.get("state"), now, browser)
        context = request.scope.setdefault("state", {}).setdefault("log_context", {})
        context["org_id"] = str(pending.org_id)  # the callback has no token: the state says
        token, seller = await service.read_seller(app.ebay, params.get("code"))
        async with unit_of_work(app.sessions) as session:
            result = await service.store_connection(
                session,
                app.cipher,
                pending,
                token,
                seller,
                scopes=list(app.settings.ebay.scopes),
                namespace=app.namespace,
                request_id=rid,
                now=utcnow(),
            )
        app.wake_relay()
    except service.ConnectFailed as exc:
        code = 502 if exc.reason == "ebay_error" else 400
        return "error", exc.message, code, exc.reason
    except Conflict as exc:
        return "error", exc.message, 409, "conflict"
    request.scope.setdefault("state", {}).setdefault("log_context", {})["account_id"] = str(
        result.account_id
    )
    return "success", result.message, 200, result.kind
