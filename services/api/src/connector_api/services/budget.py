"""eBay's daily call budget as the API shows it, and the guard on what people ask for.

The numbers come from the counters every process adds to (``ebay_call_counts``) and the limits
eBay reported (``ebay_rate_limits``), through the same functions the scheduler plans with.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from connector_api import repository as repo
from connector_api.errors import TooManyRequests
from connector_api.schemas import BudgetBucket, EbayBudget, ReportedLimit, WorkBudget
from connector_api.services.context import RequestContext
from connector_common.budget import repository as budget_repo
from connector_common.budget.buckets import REFRESH_GRANT
from connector_common.budget.plan import (
    DAY,
    day_of,
    figures,
    next_day_start,
    plan_health,
    plan_refresh,
)
from connector_common.platform_settings import BudgetSettings
from connector_common.status import AccountStatus


async def budget_view(session: AsyncSession, settings: BudgetSettings) -> EbayBudget:
    """Today's use of every eBay budget, and whether scheduled work is held back."""
    now = await budget_repo.database_now(session)
    day = day_of(now)
    usage = await budget_repo.usage(session, day)
    yesterday = await budget_repo.usage(session, day - DAY)
    reported = await budget_repo.reported_limits(session)
    found = figures(settings, reported, usage, now)
    resets_at = next_day_start(now)
    buckets = []
    for name, figure in found.items():
        ebay = reported.get(name)
        buckets.append(
            BudgetBucket(
                bucket=name,
                limit=figure.limit,
                limit_source=figure.source,
                used=figure.used,
                remaining=figure.remaining,
                user_reserve=figure.user_reserve,
                ebay_reported=None
                if ebay is None
                else ReportedLimit(
                    daily_limit=ebay.daily_limit,
                    count=ebay.ebay_count,
                    remaining=ebay.ebay_remaining,
                    reset=ebay.ebay_reset,
                    fetched_at=ebay.fetched_at,
                ),
            )
        )
    # Work in flight is the scheduler's to know; the view shows what the counters say.
    health = plan_health(
        settings,
        found,
        now=now,
        in_flight_health=0,
        in_flight_refresh=0,
        refresh_used_yesterday=yesterday.get(REFRESH_GRANT, 0),
        lookahead_seconds=0.0,
    )
    refresh = plan_refresh(settings, found, 0)
    return EbayBudget(
        day=day,
        resets_at=resets_at,
        enabled=settings.enabled,
        buckets=buckets,
        health_checks=WorkBudget(
            state=health.state,
            reason=health.reason,
            deferred_until=resets_at if health.state == "deferred" else None,
            allowed_by_now=health.target,
        ),
        refreshes=WorkBudget(
            state="deferred" if refresh.exhausted else "open",
            reason="the refresh grant's daily budget is used up" if refresh.exhausted else None,
            deferred_until=resets_at if refresh.exhausted else None,
        ),
    )


async def require_budget(session: AsyncSession, ctx: RequestContext, bucket: str) -> None:
    """429 when today's budget of ``bucket`` is used up: eBay would refuse the call anyway.

    What people ask for may use the user reserve the scheduler leaves; only the limit stops it.
    """
    settings = ctx.budget
    if settings is None or not settings.enabled:
        return
    now = await budget_repo.database_now(session)
    usage = await budget_repo.usage(session, day_of(now))
    reported = await budget_repo.reported_limits(session)
    figure = figures(settings, reported, usage, now).get(bucket)
    if figure is None or figure.used < figure.limit:
        return
    resets_at = next_day_start(now)
    wait = max(1, math.ceil((resets_at - now).total_seconds()))
    raise TooManyRequests(
        f"eBay's daily {bucket} budget ({figure.limit} calls) is used up; "
        f"it starts again at {resets_at.isoformat()}",
        headers={"Retry-After": str(wait)},
    )


async def admin_notices(session: AsyncSession, ctx: RequestContext) -> dict[str, Any]:
    """What the admin page shows about eBay's rules: how many of the org's accounts must be
    reconnected soon, and (to admins) the installation's eBay budget today."""
    reconsent = await repo.count_with_status(
        session, ctx.principal.org_id, AccountStatus.RECONSENT_DUE, ctx.now, ctx.reconsent_window
    )
    budget = None
    if ctx.principal.can_write and ctx.budget is not None:
        budget = await budget_view(session, ctx.budget)
    return {"reconsent_due": reconsent, "ebay_budget": budget}
