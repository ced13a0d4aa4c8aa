"""FastAPI dependencies: the transaction (owned by the edge) and the caller's principal.

Org scoping starts here: :func:`current_principal` turns a verified token into a
:class:`Principal` carrying the internal org id, and every repository function takes it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from connector_api.auth import Identity, Principal, bearer_token, require_role
from connector_api.errors import InvalidInput, account_not_found
from connector_api.repository import Reader
from connector_api.services.context import RequestContext
from connector_api.state import AppState
from connector_common.db.engine import unit_of_work

# Declared for the OpenAPI schema ("Authorize" button); the header is parsed by us, so that a
# wrong scheme gets RFC 6750's invalid_request rather than a generic answer.
bearer_scheme = HTTPBearer(auto_error=False, description="A JWT from your identity provider.")


# Dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a
# thread hand-off per dependency and request (measured: ~9 % of the list route's CPU, issue 11).


async def app_state(request: Request) -> AppState:
    """The state the lifespan built."""
    state: AppState = request.app.state.connector
    return state


StateDep = Annotated[AppState, Depends(app_state)]


async def db_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back if it raises.

    ``scope="function"`` (where it is used) commits before the response is sent, so a client
    never sees success for a write that then failed to commit.
    """
    async with unit_of_work(state.sessions) as session:
        yield session
    state.wake_relay()


SessionDep = Annotated[AsyncSession, Depends(db_session, scope="function")]


async def read_session(state: StateDep) -> AsyncIterator[Reader]:
    """For routes that only read, one statement per answer: no transaction around it (each
    statement sees its own snapshot), which saves the BEGIN and COMMIT round trips, about a
    fifth of such a route's CPU; and a Core connection, no ORM session around it (issue 11).
    Never for a route that writes."""
    if state.read_engine is None:
        async with state.sessions() as session:
            yield session
        return
    async with state.read_engine.connect() as connection:
        yield connection


ReadSessionDep = Annotated[Reader, Depends(read_session, scope="function")]


def log_context(request: Request) -> dict[str, object]:
    """Fields the access log line of this request will carry (set by dependencies)."""
    context: dict[str, object] = request.scope.setdefault("state", {}).setdefault("log_context", {})
    return context


async def principal_for(state: AppState, identity: Identity, request: Request) -> Principal:
    """The principal of a verified identity, its org created on first use."""
    require_role(identity)
    org_id = await state.orgs.resolve(identity.org_external_id)
    await state.limits.check("org", str(org_id))
    log_context(request)["org_id"] = str(org_id)
    structlog.contextvars.bind_contextvars(org_id=str(org_id))
    return Principal(
        org_id=org_id,
        org_external_id=identity.org_external_id,
        subject=identity.subject,
        roles=identity.roles,
    )


async def current_principal(
    request: Request,
    state: StateDep,
    _scheme: Annotated[object, Security(bearer_scheme)] = None,
) -> Principal:
    """The caller of a REST route, from its bearer token (401 without a valid one)."""
    token = bearer_token(request.headers.get("authorization"))
    identity = await state.verifier.verify(token)
    return await principal_for(state, identity, request)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def request_id(request: Request) -> str | None:
    """The id the access log and audit log share."""
    value = log_context(request).get("request_id")
    return str(value) if value else None


async def request_context(
    request: Request, state: StateDep, principal: PrincipalDep
) -> RequestContext:
    """Principal, request id and namespace for the service functions."""
    return RequestContext(
        principal=principal,
        namespace=state.namespace,
        request_id=request_id(request),
        reconsent_window=state.reconsent_window,
        budget=state.settings.ebay.budget,
    )


ContextDep = Annotated[RequestContext, Depends(request_context)]


async def account_id_param(request: Request, account_id: str) -> uuid.UUID:
    """An account id from the path; anything that is not a UUID is simply not found."""
    return parse_account_id(request, account_id)


def parse_account_id(request: Request, account_id: str) -> uuid.UUID:
    """An account id from the path (bound to the log context); 404 unless it is a UUID."""
    try:
        parsed = uuid.UUID(account_id)
    except ValueError:
        raise account_not_found() from None
    log_context(request)["account_id"] = str(parsed)
    structlog.contextvars.bind_contextvars(account_id=str(parsed))
    return parsed


AccountIdDep = Annotated[uuid.UUID, Depends(account_id_param)]


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def known_query_params(request: Request) -> None:
    """422 for a query parameter the route does not take: a misspelt filter would otherwise be
    ignored and the answer silently cover every account."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    # Worked out once per route and kept on it (a route's dependant never changes).
    names: frozenset[str] | None = getattr(route, "_connector_query_names", None)
    if names is None:
        names = frozenset(_query_names(dependant))
        setattr(route, "_connector_query_names", names)  # noqa: B010
    unknown = sorted(set(request.query_params) - names)
    if unknown:
        raise InvalidInput("unknown query parameter", field=unknown[0][:100])
