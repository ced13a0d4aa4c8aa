"""The daily eBay call budget, applied by the scheduler's tick.

Before each tick publishes, :meth:`BudgetPacer.plan` reads today's counters (every replica's
calls, see ``connector_common.budget.recorder``), the limits (eBay's from Developer Analytics
when allowed, as the health checkers stored them, else the settings) and the work in flight,
and says how many refreshes and health checks may start (``connector_common.budget.plan``).
After it published, :meth:`settle` notes work that was held back because a budget is gone for
the day: one ``budget.exhausted`` event and one log line per UTC day and kind of work,
whichever replica sees it first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from opentelemetry import metrics

from connector_common.budget import repository as budget_repo
from connector_common.budget.plan import (
    DAY,
    Figures,
    HealthPlan,
    RefreshPlan,
    day_of,
    figures,
    next_day_start,
    plan_health,
    plan_refresh,
)
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.events import BudgetExhausted
from connector_common.logs import get_logger
from connector_common.outbox import enqueue_event
from connector_common.platform_settings import BudgetSettings
from connector_common.redaction import redact_text
from connector_scheduler import repository

log = get_logger(__name__)


@dataclass(frozen=True)
class Caps:
    """What this tick may start, and why."""

    now: datetime
    refresh: RefreshPlan
    health: HealthPlan
    ready_refresh: int  # due and not in flight or backing off
    ready_health: int

    @property
    def refresh_cap(self) -> int | None:
        return self.refresh.cap

    @property
    def health_cap(self) -> int | None:
        return self.health.cap


@dataclass
class BudgetPacer:
    """Plans each tick within the budget; one per scheduler process."""

    sessions: SessionFactory
    settings: BudgetSettings
    namespace: str
    tick_seconds: float
    requeue_seconds: float
    refresh_lead_seconds: float
    meter: metrics.Meter | None = None
    clock: Callable[[], datetime] | None = None  # tests: a day's times; default PostgreSQL's
    _health_state: str = "open"

    def __post_init__(self) -> None:
        meter = self.meter or metrics.get_meter(__name__)
        self._used = meter.create_gauge(
            "connector.ebay.budget.used", unit="{call}", description="eBay calls made today"
        )
        self._limit = meter.create_gauge(
            "connector.ebay.budget.limit", unit="{call}", description="eBay's daily limit"
        )

    async def plan(self) -> Caps:
        """How many refreshes and health checks may start now."""
        lead = timedelta(seconds=self.refresh_lead_seconds)
        requeue = timedelta(seconds=self.requeue_seconds)
        async with unit_of_work(self.sessions) as session:
            now = self.clock() if self.clock else await budget_repo.database_now(session)
            day = day_of(now)
            today = await budget_repo.usage(session, day)
            yesterday = await budget_repo.usage(session, day - DAY)
            reported = await budget_repo.reported_limits(session)
            refresh_backlog = await repository.refresh_backlog(session, lead, requeue)
            health_backlog = await repository.health_backlog(session, requeue)
        found = figures(self.settings, reported, today, now)
        refresh = plan_refresh(self.settings, found, refresh_backlog.waiting)
        health = plan_health(
            self.settings,
            found,
            now=now,
            in_flight_health=health_backlog.waiting,
            in_flight_refresh=refresh_backlog.waiting,
            refresh_used_yesterday=yesterday.get(refresh.figures.bucket, 0)
            if refresh.figures
            else 0,
            lookahead_seconds=self.tick_seconds,
        )
        self._measure(found)
        return Caps(
            now=now,
            refresh=refresh,
            health=health,
            ready_refresh=max(
                0, refresh_backlog.due - refresh_backlog.waiting - refresh_backlog.backing_off
            ),
            ready_health=max(0, health_backlog.due - health_backlog.waiting),
        )

    async def settle(self, caps: Caps, published_refresh: int, published_health: int) -> None:
        """Announce (once a day) work held back because its budget is gone; log pacing
        changes (one line per change, not one per tick or account)."""
        health = caps.health
        try:
            if caps.refresh.exhausted and caps.ready_refresh > published_refresh:
                assert caps.refresh.figures is not None
                await self._defer(caps, "refresh", caps.refresh.figures, None)
            if health.state == "deferred" and caps.ready_health > published_health:
                assert health.figures is not None
                await self._defer(caps, "health", health.figures, health)
        except Exception as exc:  # the next tick tries again; the work itself is only late
            log.warning(
                "recording a budget deferral failed",
                error=redact_text(f"{type(exc).__name__}: {exc}")[:200],
            )
        # Held back by the pace (more is due than may start) reads "paced" even on ticks that
        # start a few checks, so the log line comes once per change, not every other tick.
        held_back = health.cap is not None and caps.ready_health > published_health
        state = ("deferred" if health.state == "deferred" else "paced") if held_back else "open"
        if state != self._health_state:
            log.info(
                "health checks pacing",
                state=state,
                reason=health.reason,
                target=health.target,
                used=health.figures.used if health.figures else None,
                daily_limit=health.figures.limit if health.figures else None,
            )
            self._health_state = state

    async def _defer(
        self, caps: Caps, work: str, found: Figures, health: HealthPlan | None
    ) -> None:
        bucket = health.bucket if health is not None and health.bucket else found.bucket
        until = next_day_start(caps.now)
        async with unit_of_work(self.sessions) as session:
            first = await budget_repo.record_deferral(
                session,
                day=day_of(caps.now),
                work=work,
                bucket=bucket,
                daily_limit=found.limit,
                used=found.used,
                deferred_until=until,
            )
            if not first:
                return
            enqueue_event(
                session,
                BudgetExhausted(
                    work="health" if work == "health" else "refresh",
                    bucket=bucket,
                    day=day_of(caps.now),
                    daily_limit=found.limit,
                    used=found.used,
                    deferred_until=until,
                ),
                self.namespace,
            )
        log.warning(
            "daily eBay budget used up: work deferred to the next UTC day",
            work=work,
            bucket=bucket,
            daily_limit=found.limit,
            used=found.used,
            deferred_until=until.isoformat(),
            reason=health.reason if health is not None else None,
        )

    def _measure(self, found: dict[str, Figures]) -> None:
        for bucket, figure in found.items():
            self._used.set(figure.used, {"bucket": bucket})
            self._limit.set(figure.limit, {"bucket": bucket, "source": figure.source})
