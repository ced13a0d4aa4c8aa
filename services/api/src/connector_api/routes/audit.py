"""`GET /audit-events`: the org's audit trail, for admins."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BeforeValidator, StringConstraints

from connector_api.audit_repository import AuditFilter
from connector_api.deps import ContextDep, SessionDep, StateDep, known_query_params
from connector_api.errors import InvalidInput
from connector_api.schemas import Actor, AuditEventPage, error_responses
from connector_api.services import audit as service


def _not_a_number(value: object) -> object:
    # pydantic would read "1700000000" (or "9.5e-153") as a Unix time: the document says an
    # ISO 8601 date-time, so a bare number is refused like any other malformed time.
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("must be an ISO 8601 date-time with an offset, e.g. 2026-01-01T00:00:00Z")
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
IsoTime = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]
Action = Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,30}(\.[a-z_]{1,30}){0,2}$")]
router = APIRouter(tags=["audit"], dependencies=[Depends(known_query_params)])


@router.get(
    "/audit-events", response_model=AuditEventPage, responses=error_responses(401, 403, 422)
)
async def list_audit_events(
    session: SessionDep,
    ctx: ContextDep,
    state: StateDep,
    account_id: Annotated[uuid.UUID | None, Query(description="Only this account.")] = None,
    actor: Annotated[Actor | None, Query(description="Only what this person did (`sub`).")] = None,
    action: Annotated[
        list[Action] | None,
        Query(description="Any of these actions, e.g. `account.renamed` (repeatable)."),
    ] = None,
    since: Annotated[
        IsoTime | None, Query(description="From this time on (inclusive, with offset).")
    ] = None,
    until: Annotated[
        IsoTime | None, Query(description="Before this time (exclusive, with offset).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> AuditEventPage:
    """Who did what in your organisation, newest first: actor, action, account, the house name
    at the time, each changed field before and after, and the request id. Admins only. Never a
    token, a secret or the seller's eBay data. Entries older than the retention
    (`CONNECTOR_API__AUDIT_RETENTION_DAYS`) are purged daily."""
    _check_range(since, until)
    filters = AuditFilter(
        account_id=account_id,
        actor=actor,
        actions=tuple(action or ()),
        since=since,
        until=until,
    )
    return await service.list_events(session, ctx, state.cursors, filters, limit, cursor)


def _check_range(since: datetime | None, until: datetime | None) -> None:
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and not 1970 <= moment.year <= 9998:
            raise InvalidInput("must be between the years 1970 and 9998", field=name)
    if since is not None and until is not None and until <= since:
        raise InvalidInput("must be later than since", field="until")
