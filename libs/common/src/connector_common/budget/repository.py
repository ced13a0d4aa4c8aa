"""SQL of the daily call budget: counters, limits eBay reported, deferrals."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.db.models import (
    BudgetDeferral,
    CallCount,
    LimitsReading,
    ReportedRateLimit,
)


@dataclass(frozen=True)
class Reported:
    """A daily limit read from Developer Analytics."""

    bucket: str
    daily_limit: int
    ebay_count: int | None
    ebay_remaining: int | None
    ebay_reset: datetime | None
    fetched_at: datetime


async def add_counts(session: AsyncSession, counts: Mapping[tuple[date, str], int]) -> None:
    """Add calls to the day's counters (one statement; rows in key order, so two replicas
    flushing the same counters lock them in the same order and never deadlock)."""
    rows = [
        {"day": day, "bucket": bucket, "calls": calls}
        for (day, bucket), calls in sorted(counts.items())
        if calls
    ]
    if not rows:
        return
    statement = pg_insert(CallCount).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[CallCount.day, CallCount.bucket],
            set_={
                "calls": CallCount.calls + statement.excluded.calls,
                "updated_at": text("now()"),
            },
        )
    )


async def usage(session: AsyncSession, day: date) -> dict[str, int]:
    """Calls made on ``day`` per bucket."""
    rows = await session.execute(
        select(CallCount.bucket, CallCount.calls).where(CallCount.day == day)
    )
    return {bucket: int(calls) for bucket, calls in rows}


async def database_now(session: AsyncSession) -> datetime:
    """PostgreSQL's clock: every replica plans against the same time."""
    now: datetime = (await session.execute(text("SELECT now()"))).scalar_one()
    return now


async def reported_limits(session: AsyncSession) -> dict[str, Reported]:
    """What Developer Analytics last said, per bucket."""
    rows = await session.scalars(select(ReportedRateLimit))
    return {
        r.bucket: Reported(
            r.bucket, r.daily_limit, r.ebay_count, r.ebay_remaining, r.ebay_reset, r.fetched_at
        )
        for r in rows
    }


async def store_reported(session: AsyncSession, reported: Iterable[Reported]) -> None:
    """Replace what Developer Analytics said for the buckets it answered for."""
    rows = [
        {
            "bucket": r.bucket,
            "daily_limit": r.daily_limit,
            "ebay_count": r.ebay_count,
            "ebay_remaining": r.ebay_remaining,
            "ebay_reset": r.ebay_reset,
            "fetched_at": r.fetched_at,
        }
        for r in sorted(reported, key=lambda r: r.bucket)
    ]
    if not rows:
        return
    statement = pg_insert(ReportedRateLimit).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[ReportedRateLimit.bucket],
            set_={
                name: getattr(statement.excluded, name)
                for name in (
                    "daily_limit",
                    "ebay_count",
                    "ebay_remaining",
                    "ebay_reset",
                    "fetched_at",
                )
            },
        )
    )


async def record_deferral(
    session: AsyncSession,
    *,
    day: date,
    work: str,
    bucket: str,
    daily_limit: int,
    used: int,
    deferred_until: datetime,
) -> bool:
    """Note that ``work`` waits for the next day; True only for the first note of the day (so
    exactly one replica announces it, once)."""
    inserted = await session.scalar(
        pg_insert(BudgetDeferral)
        .values(
            day=day,
            work=work,
            bucket=bucket,
            daily_limit=daily_limit,
            used=used,
            deferred_until=deferred_until,
        )
        .on_conflict_do_nothing(index_elements=[BudgetDeferral.day, BudgetDeferral.work])
        .returning(BudgetDeferral.work)
    )
    return inserted is not None


async def deferrals(session: AsyncSession, day: date) -> list[BudgetDeferral]:
    """The day's deferrals."""
    return list(
        (await session.scalars(select(BudgetDeferral).where(BudgetDeferral.day == day))).all()
    )


async def claim_limits_reading(session: AsyncSession, every: timedelta) -> bool:
    """Take the reading of eBay's limits that is due, if any: True for exactly one caller per
    ``every`` across all replicas (one conditional upsert; the row is made on first use)."""
    statement = pg_insert(LimitsReading).values(id=1, next_read_at=text("now() + :every"))
    claimed = await session.execute(
        statement.on_conflict_do_update(
            index_elements=[LimitsReading.id],
            set_={"next_read_at": text("now() + :every")},
            where=LimitsReading.next_read_at <= text("now()"),
        ).returning(LimitsReading.id),
        {"every": every},
    )
    return claimed.first() is not None


async def retry_limits_reading(session: AsyncSession, after: timedelta) -> None:
    """A claimed reading failed: the next one is due sooner than a whole interval."""
    await session.execute(
        text("UPDATE ebay_limits_reading SET next_read_at = least(next_read_at, now() + :after)"),
        {"after": after},
    )


async def store_quotas(
    session: AsyncSession, quotas: list[dict[str, Any]], read_at: datetime
) -> None:
    """What eBay said per API resource (the rate-limit gauges' source)."""
    await session.execute(
        text("UPDATE ebay_limits_reading SET quotas = CAST(:quotas AS jsonb), read_at = :at"),
        {"quotas": json.dumps(quotas), "at": read_at},
    )


async def latest_quotas(session: AsyncSession) -> tuple[datetime | None, list[dict[str, Any]]]:
    """The quotas last read and when (None, [] before the first reading)."""
    row = (await session.execute(select(LimitsReading.read_at, LimitsReading.quotas))).first()
    if row is None:
        return None, []
    return row.read_at, list(row.quotas or [])
