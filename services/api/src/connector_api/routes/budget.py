"""``GET /ebay-budget``: eBay's daily call budget (admin role)."""

from __future__ import annotations

from fastapi import APIRouter

from connector_api.deps import ContextDep, SessionDep, StateDep
from connector_api.schemas import EbayBudget, error_responses
from connector_api.services.budget import budget_view

router = APIRouter(tags=["operations"])


@router.get("/ebay-budget", response_model=EbayBudget, responses=error_responses(401, 403))
async def ebay_budget(session: SessionDep, ctx: ContextDep, state: StateDep) -> EbayBudget:
    """Today's eBay calls per API and OAuth grant against eBay's daily limits, the reserves,
    and whether refreshes or health checks wait for the next UTC day. One eBay app serves
    every org, so this is the installation's budget, not the org's."""
    ctx.principal.require_admin()
    return await budget_view(session, state.settings.ebay.budget)
