"""Scheduler settings: the shared pipeline timing (``CONNECTOR_PIPELINE__*``) and how often the
leader reads the pipeline's metrics (``CONNECTOR_METRICS__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from connector_common.worker.settings import WorkerSettings


class MetricsSettings(BaseModel):
    """``CONNECTOR_METRICS__*``: the leader's collector of queue and account gauges."""

    interval_seconds: float = Field(default=15.0, gt=0, le=3600)
    # eBay's Developer Analytics quotas (ebay.rate_limit.remaining / .limit); 0 = never.
    rate_limit_poll_seconds: float = Field(default=300.0, ge=0)


class SchedulerSettings(WorkerSettings):
    """``connector scheduler`` settings (see docs/pipeline.md for the table)."""

    metrics: MetricsSettings = MetricsSettings()

    def secret_problems(self) -> list[str]:
        """Only the eBay client secret: the scheduler decrypts no token (no token keys), but it
        takes an application token to read eBay's daily limits and quotas (Developer
        Analytics) for the call budget and the rate-limit gauges."""
        return [p for p in super().secret_problems() if "CONNECTOR_TOKEN_KEYS" not in p]
