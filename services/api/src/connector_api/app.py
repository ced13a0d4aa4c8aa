"""The FastAPI application factory. The lifespan opens the database engine, the eBay client,
telemetry, and (in the background) NATS with the outbox relay; it closes them on shutdown."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from connector_api import __doc__ as package_doc
from connector_api.auth import TokenVerifier
from connector_api.deps import request_id
from connector_api.errors import ApiError
from connector_api.middleware import RequestMiddleware
from connector_api.oidc import OIDC_LOGIN_SECONDS, OidcClient
from connector_api.pages import STATIC_DIR, render
from connector_api.ratelimit import RateLimited, RateLimitMiddleware, RateLimits
from connector_api.routes import (
    accounts,
    activity,
    admin,
    audit,
    budget,
    connect,
    console,
    docs,
    home,
    login,
    notifications,
    ops,
)
from connector_api.schemas import ErrorBody, FieldError
from connector_api.services.deletion import DeletionEndpoint
from connector_api.sessions import SessionManager
from connector_api.settings import ApiSettings
from connector_api.shedding import LoadShedder, LoadSheddingMiddleware
from connector_api.signing import CursorCodec, Sealed
from connector_api.state import AppState, OrgDirectory
from connector_common.budget.recorder import CallRecorder
from connector_common.crypto import TokenCipher
from connector_common.db.engine import create_engine, create_session_factory
from connector_common.ebay import EbayClient
from connector_common.messaging import Topology
from connector_common.observability.database import instrument_engine
from connector_common.telemetry import Telemetry, setup_telemetry

# Resolved at each use, so it follows configure_logging even when imported earlier.
log = structlog.stdlib.get_logger(__name__)

# A pooled connection unused for longer is pinged (a round trip) before it is handed out.
PING_IDLE_SECONDS = 30.0

# What FastAPI raises (400) when it cannot decode a request body at all.
FASTAPI_BODY_ERROR = "There was an error parsing the body"

DESCRIPTION = """
Connect eBay seller accounts ("houses") to your organisation, see their token and health
status, and ask the workers for a refresh or a health check.

Every route except the probes, the OAuth callback and these docs needs
`Authorization: Bearer <JWT>` with the claims `sub`, `org_id` and `roles` (`admin` may change
things, `viewer` may only read). You only ever see your own organisation's accounts.
"""


NATIVE_TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}

COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "The request body is larger than the limit."},
    429: {
        "model": ErrorBody,
        "description": "Too many requests from this address or organisation: wait for "
        "`Retry-After` seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
    500: {"model": ErrorBody, "description": "Something failed on our side."},
    503: {
        "model": ErrorBody,
        "description": "A dependency (database, identity provider) cannot be reached right "
        "now: retry after `Retry-After` seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}


def build_state(settings: ApiSettings, telemetry: Telemetry) -> AppState:
    """Open what requests share (the NATS connection follows in the background)."""
    session_secret = (
        settings.api.session_secret.get_secret_value()
        if settings.api.session_secret is not None
        # Development only (production refuses to start without one): sessions end on restart.
        else secrets.token_urlsafe(32)
    )
    # A connection per request: check it with a round trip only when it may be dead (idle
    # for a while, or closed by the server), not at every checkout (issue 11).
    engine = create_engine(
        settings.database,
        application_name=settings.service_name,
        ping_idle_seconds=PING_IDLE_SECONDS,
    )
    instrument_engine(
        engine, telemetry.tracer_provider, telemetry.meter_provider, settings.service_name
    )
    sessions = create_session_factory(engine)
    oidc = None
    if settings.api.oidc.enabled:
        oidc = OidcClient(
            settings.api.oidc,
            settings.api.jwt,
            redirect_uri=f"{settings.api.public_url}/admin/oidc/callback",
        )
    calls = CallRecorder(sessions, flush_seconds=settings.ebay.budget.flush_seconds)
    ebay = EbayClient(
        settings.ebay,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        on_call=calls.record,
    )
    return AppState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        verifier=TokenVerifier.from_settings(settings.api.jwt),
        orgs=OrgDirectory(sessions),
        cursors=CursorCodec(session_secret),
        admin_sessions=SessionManager(
            session_secret,
            sessions,
            ttl_seconds=settings.api.session_ttl_seconds,
            idle_seconds=settings.api.session_idle_seconds,
            secure=settings.api.secure_cookies,
        ),
        cipher=TokenCipher(settings.key_ring()),
        ebay=ebay,
        telemetry=telemetry,
        topology=Topology(settings.nats.namespace),
        limits=RateLimits(settings.api.rate_limits, sessions),
        oidc_signer=Sealed(session_secret, "oidc-login", max_age_seconds=OIDC_LOGIN_SECONDS),
        calls=calls,
        deletion=DeletionEndpoint(settings, sessions, ebay, settings.nats.namespace),
        # The same pool; each statement its own transaction (psycopg's autocommit).
        read_engine=engine.execution_options(isolation_level="AUTOCOMMIT"),
        oidc=oidc,
    )


def create_app(settings: ApiSettings, *, telemetry: Telemetry | None = None) -> FastAPI:
    """The API; pass ``telemetry`` to capture spans in tests."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tele = telemetry or setup_telemetry(
            settings.otel, settings.service_name, environment=settings.env.value
        )
        state = build_state(settings, tele)
        app.state.connector = state
        state.start_messaging()
        state.start_maintenance()
        try:
            yield
        finally:
            await state.aclose()

    app = FastAPI(
        title="eBay connector API",
        version="1",
        description=DESCRIPTION.strip() or (package_doc or ""),
        lifespan=lifespan,
        responses=COMMON_RESPONSES,
        # One server instrumentation: ours (RequestMiddleware). FastAPI's native telemetry,
        # on by default once a global provider exists, would add a second server span whose
        # ``url.query`` carries the OAuth callback's code and state, and log request input.
        telemetry=NATIVE_TELEMETRY_OFF,
        # FastAPI's own /docs and /redoc load their scripts from a CDN: ours serve pinned copies.
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(RateLimitMiddleware)  # inside RequestMiddleware: 429s are logged too
    shedding = settings.api.shedding
    if shedding.enabled:
        # Inside RequestMiddleware (a shed request is logged, timed and has its request id),
        # outside the rate limits and everything else: a shed request costs next to nothing.
        shedder = LoadShedder(
            shedding.max_concurrent or settings.database.pool_size,
            shedding.max_queued,
            shedding.max_wait_seconds,
        )
        app.state.shedder = shedder
        app.add_middleware(
            LoadSheddingMiddleware,
            shedder=shedder,
            retry_after_seconds=shedding.retry_after_seconds,
        )
    app.add_middleware(
        RequestMiddleware,
        max_body_bytes=settings.api.max_body_bytes,
        hsts=settings.api.secure_cookies,  # served over https: HSTS
    )
    _install_error_handlers(app)
    app.include_router(ops.router)
    app.include_router(home.router)
    app.include_router(connect.router)  # before accounts: /ebay-accounts/connect is literal
    app.include_router(accounts.router)
    app.include_router(audit.router)
    app.include_router(console.router)
    app.include_router(admin.router)
    app.include_router(activity.router)
    app.include_router(login.router)
    app.include_router(notifications.router)  # public: eBay calls it (signature checked)
    app.include_router(budget.router)
    app.include_router(docs.router)
    # Swagger UI and ReDoc from the fastapi-offline wheel (the console's own vendored htmx is
    # under /static/vendor/, part of /static).
    app.mount("/static/api-docs", StaticFiles(directory=docs.VENDOR_DIR), name="api-docs")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _error(request: Request, status: int, body: ErrorBody, headers: dict[str, str]) -> JSONResponse:
    body.request_id = request_id(request)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers or None)


def _field_name(error: Mapping[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return "body"  # its location is a character offset, not a field
    return ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if isinstance(exc, RateLimited) and is_page(request.scope["path"]):
            response = render(request, "rate_limited.html", {"message": exc.message}, 429)
            response.headers.update(exc.headers)
            return response
        fields = []
        if getattr(exc, "field", None):
            fields = [FieldError(field=str(exc.field), message=exc.message)]  # type: ignore[attr-defined]
        body = ErrorBody(error=exc.code, message=exc.message, fields=fields)
        return _error(request, exc.status_code, body, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Field-level messages, never the input (it could be a pasted secret).
        fields = [
            FieldError(
                field=_field_name(err),
                message=str(err.get("msg", "invalid")).removeprefix("Value error, "),
            )
            for err in exc.errors()
        ]
        body = ErrorBody(error="invalid", message="the request is invalid", fields=fields)
        return _error(request, 422, body, {})

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeoutError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL down, restarting or failing over: the client should retry (503), not
        # report a bug (500); one line in the log, not a traceback per request.
        unreachable = isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        )
        if not unreachable:
            raise exc  # a real error: the middleware logs it with its traceback (500)
        orig = getattr(exc, "orig", None)
        log.warning("database unavailable", error=type(orig or exc).__name__)
        body = ErrorBody(
            error="unavailable", message="the database cannot be reached right now; retry shortly"
        )
        return _error(request, 503, body, {"Retry-After": "5"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:
            # A body FastAPI could not decode (not UTF-8): the documented 422, not a bare 400.
            message = "the request body must be JSON encoded as UTF-8"
            body = ErrorBody(
                error="invalid",
                message="the request is invalid",
                fields=[FieldError(field="body", message=message)],
            )
            return _error(request, 422, body, {})
        codes = {404: "not_found", 405: "method_not_allowed"}
        body = ErrorBody(error=codes.get(exc.status_code, "http_error"), message=str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route matching the path; every route counts.
            headers["Allow"] = ", ".join(allowed_methods(request))
        return _error(request, exc.status_code, body, headers)


def is_page(path: str) -> bool:
    """Routes a person's browser shows (answered with HTML, not JSON)."""
    return path.startswith(("/admin", "/ebay/oauth/callback"))


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on this request's path."""
    methods: set[str] = set()
    path = request.scope["path"]
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(route.methods or ())
    return sorted(methods)
