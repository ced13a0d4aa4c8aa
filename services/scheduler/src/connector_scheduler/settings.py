"""Scheduler settings: the shared pipeline timing (``CONNECTOR_PIPELINE__*``) and how often the
leader reads the pipeline's metrics (``CONNECTOR_METRICS__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from connector_common.worker.settings import WorkerSettings


class MetricsSettings(BaseModel):
    """``CONNECTOR_METRICS__*``: the leader's collector of queue and account gauges."""

    interval_seconds: float = Field(default=15.0, gt=0, le=3600)


class SchedulerSettings(WorkerSettings):
    """``connector scheduler`` settings (see docs/pipeline.md for the table)."""

    metrics: MetricsSettings = MetricsSettings()

    def secret_problems(self) -> list[str]:
        """None: the scheduler decrypts no token (no token keys) and calls eBay for nothing (no
        client secret; the health checkers read eBay's limits and store them for it)."""
        return []
