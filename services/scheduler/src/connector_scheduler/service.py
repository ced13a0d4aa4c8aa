"""One scheduler tick: if this replica leads, publish one work message per due account.

Duplicates are stopped three times over: the leader lease (one replica works at a time), row locks
with ``SKIP LOCKED`` plus the ``*_requested_at`` guard (a second leader, or the next tick, does
not take rows already requested), and the ``Nats-Msg-Id`` of every command (JetStream drops a
repeat inside its de-duplication window). Work is published straight to JetStream while the
rows are locked and marked requested only when JetStream confirmed it, so a failed publish is
simply due again next tick.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nats.js import JetStreamContext
from opentelemetry import metrics, trace

from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.events import CheckHealth, Command, RefreshToken, utcnow
from connector_common.logs import get_logger
from connector_common.messaging import BulkPublisher
from connector_common.observability.messaging import (
    MESSAGE_ID_HEADER,
    carry,
    end_publish_span,
    start_publish_span,
)
from connector_common.redaction import redact_text
from connector_common.telemetry import inject_trace_headers, traced_span
from connector_common.worker.settings import PipelineSettings
from connector_scheduler import repository
from connector_scheduler.budget import BudgetPacer, Caps
from connector_scheduler.reconsent import ReconsentSweep

log = get_logger(__name__)


@dataclass
class TickReport:
    """What one tick did; logged as one line."""

    leader: bool = False
    epoch: int | None = None
    due_refresh: int = 0
    due_health: int = 0
    published: int = 0
    duplicates: int = 0
    skipped: int = 0  # due, but a worker has it already or it is backing off
    failed: int = 0
    refresh_lag_seconds: float = 0.0
    health_lag_seconds: float = 0.0
    duration_ms: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass
class SchedulerInstruments:
    published: metrics.Counter
    lag: metrics._Gauge
    due: metrics._Gauge

    @classmethod
    def create(cls, meter: metrics.Meter) -> SchedulerInstruments:
        return cls(
            published=meter.create_counter(
                "connector.scheduler.published",
                unit="{message}",
                description="work messages published, by kind and de-duplication",
            ),
            lag=meter.create_gauge(
                "connector.work.lag",
                unit="s",
                description="age of the oldest due account whose work is not done, by kind",
            ),
            due=meter.create_gauge(
                "connector.work.due", unit="{account}", description="accounts due now, by kind"
            ),
        )


@dataclass
class Scheduler:
    """Finds due accounts and publishes their work; call :meth:`tick` on an interval."""

    sessions: SessionFactory
    js: JetStreamContext
    namespace: str
    holder: str
    settings: PipelineSettings
    tracer: trace.Tracer
    instruments: SchedulerInstruments
    publish_timeout: float = 5.0
    # eBay's platform rules (docs/ebay-compliance.md): the daily call budget, and refresh
    # tokens near or past their end. Both optional, so the tick works without them.
    pacer: BudgetPacer | None = None
    sweep: ReconsentSweep | None = None
    publisher: BulkPublisher = field(init=False)

    def __post_init__(self) -> None:
        self.publisher = BulkPublisher.for_jetstream(self.js)

    async def tick(self) -> TickReport:
        """Publish the work that is due now (only while this replica holds the lease)."""
        started = time.monotonic()
        report = TickReport()
        with traced_span(self.tracer, "scheduler tick") as span:
            async with unit_of_work(self.sessions) as session:
                report.epoch = await repository.claim_leadership(
                    session, self.holder, timedelta(seconds=self.settings.scheduler_lease)
                )
            report.leader = report.epoch is not None
            span.set_attribute("connector.scheduler.leader", report.leader)
            if report.leader:
                await self._measure(report)
                if self.sweep is not None:
                    await self.sweep.run()  # before claims: an ended token is never refreshed
                caps = await self.pacer.plan() if self.pacer is not None else None
                await self._publish_due(report, caps)
                if self.pacer is not None and caps is not None:
                    await self.pacer.settle(
                        caps, report.by_kind.get("refresh", 0), report.by_kind.get("health", 0)
                    )
                # Due rows this tick did not publish: a worker has them, or they back off.
                report.skipped = max(0, report.due_refresh + report.due_health - report.published)
                span.set_attribute("connector.scheduler.published", report.published)
        report.duration_ms = int((time.monotonic() - started) * 1000)
        return report

    async def resign(self) -> None:
        """Give up leadership (on shutdown)."""
        async with unit_of_work(self.sessions) as session:
            await repository.release_leadership(session, self.holder)

    async def _publish_due(self, report: TickReport, caps: Caps | None = None) -> None:
        settings = self.settings
        lead = timedelta(seconds=settings.refresh_lead_seconds)
        requeue = timedelta(seconds=settings.requeue_seconds)
        budget = settings.scheduler_max_per_tick
        # What eBay's daily budget lets start now (docs/ebay-compliance.md).
        refresh_left = _within(budget, caps.refresh_cap if caps else None)
        after: repository.Keyset | None = None
        while refresh_left > 0:  # refresh first: an expired token is worse than a late check
            async with unit_of_work(self.sessions) as session:
                rows = await repository.claim_due_refresh(
                    session, lead, requeue, min(settings.scheduler_batch_size, refresh_left), after
                )
                now = utcnow()
                commands: list[Command] = [
                    RefreshToken.model_construct(
                        **_scheduled(r.account_id, r.org_id, now), token_version=r.token_version
                    )
                    for r in rows
                ]
                done = await self._publish(commands, report, "refresh")
                await repository.mark_refresh_requested(session, done)
            budget -= len(rows)
            refresh_left -= len(rows)
            # A refused publish leaves its rows due: the next batch would claim the same rows
            # again, so a NATS outage would spin through the whole budget. Next tick instead.
            if len(rows) < settings.scheduler_batch_size or len(done) < len(rows):
                break
            after = rows[-1].key
        slot = int(utcnow().timestamp() // settings.health_interval_seconds)
        health_left = _within(budget, caps.health_cap if caps else None)
        after = None
        while health_left > 0:
            async with unit_of_work(self.sessions) as session:
                due = await repository.claim_due_health(
                    session, requeue, min(settings.scheduler_batch_size, health_left), after
                )
                now = utcnow()
                commands = [
                    CheckHealth.model_construct(
                        **_scheduled(r.account_id, r.org_id, now), slot=slot
                    )
                    for r in due
                ]
                done = await self._publish(commands, report, "health")
                await repository.mark_health_requested(session, done)
            health_left -= len(due)
            if len(due) < settings.scheduler_batch_size or len(done) < len(due):
                break
            after = due[-1].key

    async def _publish(
        self, commands: Sequence[Command], report: TickReport, kind: str
    ) -> list[uuid.UUID]:
        """Publish every command at once and await their acks together; returns the account
        ids JetStream confirmed.

        One PRODUCER span for the batch (``messaging.batch.message_count``), not one per
        message: every message carries its context, so each worker's process span is its child
        (per-message spans were measured, docs/benchmarks.md)."""
        if not commands:
            return []
        span = start_publish_span(
            self.tracer, commands[0].subject(self.namespace), batch_size=len(commands)
        )
        trace_headers = carry(span, inject_trace_headers())
        messages = []
        for command in commands:
            assert isinstance(command, RefreshToken | CheckHealth)
            headers = {**trace_headers, MESSAGE_ID_HEADER: command.dedup_id()}
            messages.append((command.subject(self.namespace), command.to_json(), headers))
        try:
            results = await self.publisher.publish(messages, self.publish_timeout)
        except BaseException as exc:
            end_publish_span(span, False, type(exc).__name__)
            raise
        confirmed = [c.account_id for c, r in zip(commands, results, strict=True) if r.ok]
        failures = [r.error for r in results if not r.ok]
        duplicates = sum(1 for r in results if r.ok and r.duplicate)
        if span.is_recording():
            span.set_attribute("connector.publish.failed", len(failures))
            span.set_attribute("connector.publish.duplicates", duplicates)
        end_publish_span(span, not failures, failures[0] if failures else None)
        report.failed += len(failures)
        report.published += len(confirmed)
        report.duplicates += duplicates
        self.instruments.published.add(
            len(confirmed) - duplicates, {"kind": kind, "duplicate": False}
        )
        if duplicates:
            self.instruments.published.add(duplicates, {"kind": kind, "duplicate": True})
        report.by_kind[kind] = report.by_kind.get(kind, 0) + len(confirmed)
        if failures:
            log.warning(
                "some work was not published; it stays due",
                kind=kind,
                failed=len(failures),
                error=redact_text(str(failures[0]))[:200],
            )
        return confirmed

    async def _measure(self, report: TickReport) -> None:
        lead = timedelta(seconds=self.settings.refresh_lead_seconds)
        requeue = timedelta(seconds=self.settings.requeue_seconds)
        async with unit_of_work(self.sessions) as session:
            refresh = await repository.refresh_backlog(session, lead, requeue)
            health = await repository.health_backlog(session, requeue)
        now = utcnow()
        report.due_refresh = refresh.due
        report.due_health = health.due
        report.refresh_lag_seconds = _lag(refresh.oldest_due_at, now)
        report.health_lag_seconds = _lag(health.oldest_due_at, now)
        for kind, backlog, lag in (
            ("refresh", refresh, report.refresh_lag_seconds),
            ("health", health, report.health_lag_seconds),
        ):
            self.instruments.lag.set(lag, {"kind": kind})
            self.instruments.due.set(backlog.due, {"kind": kind})


def _within(budget: int, cap: int | None) -> int:
    return budget if cap is None else min(budget, cap)


def _lag(oldest_due_at: datetime | None, now: datetime) -> float:
    if oldest_due_at is None:
        return 0.0
    return max(0.0, (now - oldest_due_at).total_seconds())


def _scheduled(account_id: uuid.UUID, org_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    """Every field a scheduled command shares, for ``model_construct``.

    The values come typed from our own database: validating them again was ~15 % of a tick's
    CPU. Every field is given: a default left to ``model_construct`` costs an
    ``inspect.signature`` of its factory per message (12.5 against 5-6 us per command)."""
    return {
        "command_id": uuid.uuid4(),
        "requested_at": now,
        "version": 1,
        "account_id": account_id,
        "org_id": org_id,
        "reason": "scheduled",
    }
