"""Today's use of every eBay call budget, for the metrics collector's gauges."""

from __future__ import annotations

from connector_common.budget import repository
from connector_common.budget.plan import day_of, figures
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.observability.collector import BudgetUsage
from connector_common.platform_settings import BudgetSettings


async def current_usage(sessions: SessionFactory, settings: BudgetSettings) -> list[BudgetUsage]:
    """One :class:`BudgetUsage` per budget with a limit (eBay's when fresh, else configured)."""
    async with unit_of_work(sessions) as session:
        now = await repository.database_now(session)
        usage = await repository.usage(session, day_of(now))
        reported = await repository.reported_limits(session)
    return [
        BudgetUsage(budget=figure.bucket, used=figure.used, limit=figure.limit)
        for figure in figures(settings, reported, usage, now).values()
    ]
