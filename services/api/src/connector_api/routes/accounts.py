"""`/ebay-accounts`: thin routes; each validates, calls one service function, returns.

The read routes answer plain values encoded once (:mod:`connector_api.fastjson`); their
``response_model`` still documents the schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import StringConstraints

from connector_api.deps import (
    AccountIdDep,
    ContextDep,
    ReadSessionDep,
    SessionDep,
    StateDep,
    known_query_params,
)
from connector_api.fastjson import json_response
from connector_api.repository import AccountFilter
from connector_api.schemas import (
    Account,
    AccountPage,
    AccountSummary,
    AccountUpdate,
    HealthCheckPage,
    PurposeFilter,
    SearchText,
    SortKey,
    WorkQueued,
    error_responses,
)
from connector_api.services import accounts as service
from connector_api.services import listing
from connector_common.status import AccountStatus

MarketplaceId = Annotated[str, StringConstraints(pattern=r"^EBAY_[A-Z_]{2,30}$")]
router = APIRouter(
    prefix="/ebay-accounts", tags=["accounts"], dependencies=[Depends(known_query_params)]
)

READ_ERRORS = error_responses(401, 403, 404, 422)
WRITE_ERRORS = error_responses(401, 403, 404, 409, 422)


@router.get("", response_model=AccountPage, responses=error_responses(401, 403, 422))
async def list_accounts(
    session: ReadSessionDep,
    ctx: ContextDep,
    state: StateDep,
    status_: Annotated[
        list[AccountStatus] | None, Query(alias="status", description="Any of these statuses.")
    ] = None,
    purpose: Annotated[
        PurposeFilter | None,
        Query(max_length=500, description="Exact purpose (case-insensitive)."),
    ] = None,
    marketplace: Annotated[
        list[MarketplaceId] | None, Query(description="Marketplace ids, e.g. EBAY_GB.")
    ] = None,
    active: Annotated[bool | None, Query(description="Only active (or deactivated).")] = None,
    search: Annotated[
        SearchText | None,
        Query(
            min_length=1,
            max_length=100,
            description="Part of the house name or eBay username (case-insensitive).",
        ),
    ] = None,
    sort: Annotated[
        SortKey,
        Query(description="Sort key; '-' for descending. `status`: the most urgent first."),
    ] = (SortKey.HOUSE_NAME),
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    """The org's accounts with status, token metadata and last health check."""
    filters = AccountFilter(
        statuses=tuple(status_ or ()),
        purpose=purpose,
        marketplaces=tuple(marketplace or ()),
        active=active,
        search=search,
    )
    page = await listing.account_page(session, ctx, state.cursors, filters, sort, limit, cursor)
    return json_response(page)


@router.get("/summary", response_model=AccountSummary, responses=error_responses(401, 403))
async def summary(session: SessionDep, ctx: ContextDep) -> AccountSummary:
    """How many of the org's accounts are in each status; the marketplaces and purposes in use."""
    return await listing.summary(session, ctx)


@router.get("/{account_id}", response_model=Account, responses=READ_ERRORS)
async def get_account(
    session: ReadSessionDep, ctx: ContextDep, account_id: AccountIdDep
) -> Response:
    """One account of the org."""
    return json_response(await listing.account_data(session, ctx, account_id))


@router.get("/{account_id}/health-checks", response_model=HealthCheckPage, responses=READ_ERRORS)
async def health_checks(
    session: ReadSessionDep,
    ctx: ContextDep,
    state: StateDep,
    account_id: AccountIdDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    """The account's health check history, newest first."""
    page = await listing.health_page(session, ctx, state.cursors, account_id, limit, cursor)
    return json_response(page)


@router.patch("/{account_id}", response_model=Account, responses=WRITE_ERRORS)
async def update_account(
    session: SessionDep, ctx: ContextDep, account_id: AccountIdDep, change: AccountUpdate
) -> Account:
    """Rename the account (house names are unique per org among active accounts) and/or
    change its purpose. Earlier events and audit entries keep the old name."""
    return await service.update_account(session, ctx, account_id, change)


@router.post("/{account_id}/deactivate", response_model=Account, responses=WRITE_ERRORS)
async def deactivate(session: SessionDep, ctx: ContextDep, account_id: AccountIdDep) -> Account:
    """Stop refreshing and checking the account (its tokens are kept)."""
    return await service.deactivate(session, ctx, account_id)


@router.post("/{account_id}/reactivate", response_model=Account, responses=WRITE_ERRORS)
async def reactivate(session: SessionDep, ctx: ContextDep, account_id: AccountIdDep) -> Account:
    """Resume the account; 409 when its house name is now used by another active account."""
    return await service.reactivate(session, ctx, account_id)


@router.delete("/{account_id}", status_code=status.HTTP_204_NO_CONTENT, responses=WRITE_ERRORS)
async def delete_account(
    session: SessionDep, ctx: ContextDep, account_id: AccountIdDep
) -> Response:
    """Remove the account, its tokens and health history; an audit entry without the
    seller's data remains."""
    await service.delete(session, ctx, account_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{account_id}/refresh",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WorkQueued,
    responses=WRITE_ERRORS,
)
async def request_refresh(
    session: SessionDep, ctx: ContextDep, account_id: AccountIdDep
) -> WorkQueued:
    """Ask the token refresher to refresh the access token now."""
    return await service.request_refresh(session, ctx, account_id)


@router.post(
    "/{account_id}/health-check",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WorkQueued,
    responses=WRITE_ERRORS,
)
async def request_health_check(
    session: SessionDep, ctx: ContextDep, account_id: AccountIdDep
) -> WorkQueued:
    """Ask the health checker to check the account now."""
    return await service.request_health_check(session, ctx, account_id)
