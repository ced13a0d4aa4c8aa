"""``connector scheduler``: tick, and while leading, publish the work that is due."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta

from opentelemetry.metrics import CallbackOptions, Observation

from connector_common.budget.usage import current_usage
from connector_common.logs import Throttle, get_logger
from connector_common.observability.collector import PipelineCollector
from connector_common.redaction import redact_text
from connector_common.settings import load_settings
from connector_common.worker.runtime import WorkerContext, run_until_complete, run_worker
from connector_scheduler.budget import BudgetPacer
from connector_scheduler.reconsent import ReconsentSweep
from connector_scheduler.service import Scheduler, SchedulerInstruments
from connector_scheduler.settings import SchedulerSettings

SERVICE = "scheduler"
log = get_logger(__name__)


class SchedulerLoop:
    """Runs :meth:`Scheduler.tick` every tick interval until stopped; while leading, also
    collects the pipeline's gauges (queues, outbox, breakers, accounts, eBay quotas)."""

    def __init__(self, context: WorkerContext) -> None:
        settings = context.settings
        assert isinstance(settings, SchedulerSettings)
        self._context = context
        self._interval = settings.pipeline.scheduler_tick_seconds
        budget = settings.ebay.budget
        self._scheduler = Scheduler(
            sessions=context.sessions,
            js=context.js,
            namespace=context.topology.namespace,
            holder=context.instance_id,
            settings=settings.pipeline,
            tracer=context.telemetry.tracer(SERVICE),
            instruments=SchedulerInstruments.create(context.telemetry.meter(SERVICE)),
            pacer=BudgetPacer(
                sessions=context.sessions,
                settings=budget,
                namespace=context.topology.namespace,
                tick_seconds=self._interval,
                requeue_seconds=settings.pipeline.requeue_seconds,
                refresh_lead_seconds=settings.pipeline.refresh_lead_seconds,
                meter=context.telemetry.meter(SERVICE),
            ),
            sweep=ReconsentSweep(
                sessions=context.sessions,
                namespace=context.topology.namespace,
                window=timedelta(days=settings.ebay.reconsent_warning_days),
            ),
        )
        self._task: asyncio.Task[None] | None = None
        self._halt = asyncio.Event()
        self.leading = False
        meter = context.telemetry.meter(SERVICE)
        meter.create_observable_gauge(
            "connector.scheduler.leader",
            [self._observe_leader],
            unit="1",
            description="1 while this scheduler replica holds the leader lease, else 0",
        )
        self.collector = PipelineCollector(
            context.sessions,
            context.js,
            context.topology,
            meter,
            interval=settings.metrics.interval_seconds,
            active=lambda: self.leading,
            budget=lambda: current_usage(context.sessions, budget),
            # eBay's quotas as the health checkers stored them (they read Developer Analytics:
            # the scheduler holds no eBay client secret); a reading three intervals old is stale.
            quotas_max_age=3 * budget.limits_refresh_seconds,
        )
        self._collector_task: asyncio.Task[None] | None = None
        self._failures = Throttle(30.0)  # an outage: one line per kind per 30 s

    def _observe_leader(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(1 if self.leading else 0)]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler-ticks")
        self._collector_task = asyncio.create_task(
            self.collector.run(self._halt), name="pipeline-metrics"
        )

    async def stop(self) -> int:
        self._halt.set()
        unfinished = 0
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self._interval + 30)
            except TimeoutError:
                unfinished = 1  # a tick still running: its rows stay due, the next leader has them
            except asyncio.CancelledError:
                pass
        if self._collector_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._collector_task, 10)
        with contextlib.suppress(Exception):
            await self._scheduler.resign()
        self.leading = False
        return unfinished

    async def _run(self) -> None:
        while not self._halt.is_set():
            try:
                report = await self._scheduler.tick()
            except Exception as exc:  # the database or NATS may come back next tick
                self.leading = False  # the lease could not be renewed
                if (held := self._failures.ready(type(exc).__name__)) is not None:
                    log.error(
                        "scheduler tick failed",
                        error=redact_text(f"{type(exc).__name__}: {exc}")[:300],
                        more_since_last_line=held,
                    )
            else:
                self._failures.reset()
                self.leading = report.leader
                line = log.info if report.leader else log.debug
                line(
                    "scheduler tick",
                    leader=report.leader,
                    epoch=report.epoch,
                    due_refresh=report.due_refresh,
                    due_health=report.due_health,
                    published=report.published,
                    published_refresh=report.by_kind.get("refresh", 0),
                    published_health=report.by_kind.get("health", 0),
                    duplicates=report.duplicates,
                    skipped=report.skipped,
                    failed=report.failed,
                    refresh_lag_s=round(report.refresh_lag_seconds, 1),
                    health_lag_s=round(report.health_lag_seconds, 1),
                    duration_ms=report.duration_ms,
                )
            self._context.progress.cycle()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._halt.wait(), self._interval)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector scheduler",
        description="Publish refresh and health-check work for the accounts that are due. "
        "Configured by CONNECTOR_* environment variables (docs/pipeline.md).",
    )
    parser.add_argument("--probe-port", type=int, help="probe port (CONNECTOR_PROBE_PORT)")
    parser.add_argument(
        "--tick-seconds", type=float, help="CONNECTOR_PIPELINE__SCHEDULER_TICK_SECONDS"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``connector scheduler``."""
    args = _parser().parse_args(argv)
    overrides: dict[str, object] = {}
    if args.probe_port is not None:
        overrides["probe_port"] = args.probe_port
    if args.tick_seconds is not None:
        overrides["pipeline"] = {"scheduler_tick_seconds": args.tick_seconds}
    settings = load_settings(SchedulerSettings, **overrides)
    tick = settings.pipeline.scheduler_tick_seconds
    return run_until_complete(
        run_worker(
            settings,
            SERVICE,
            SchedulerLoop,
            stall_after=3 * tick + 30,
            handler_timeout=tick + 60,
        ),
        settings.event_loop,
    )
