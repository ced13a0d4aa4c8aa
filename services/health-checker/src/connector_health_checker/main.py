"""``connector health-checker``: check accounts against eBay from the health work queue."""

from __future__ import annotations

from collections.abc import Sequence

from connector_common.budget.analytics import LimitsReader
from connector_common.ebay import EbayClient
from connector_common.worker.components import Background, ConsumerSpec, run_consumer_service
from connector_common.worker.runtime import WorkerContext
from connector_health_checker.handlers import make_handler
from connector_health_checker.settings import HealthCheckerSettings


def read_ebay_limits(context: WorkerContext, client: EbayClient) -> Background:
    """eBay's daily limits and quotas (Developer Analytics), read by one health checker of all
    per interval and stored for the scheduler's budget and gauges."""
    reader = LimitsReader(
        client, context.sessions, context.settings.ebay.budget.limits_refresh_seconds
    )
    return reader.run


SPEC = ConsumerSpec(
    service="health-checker",
    kind="health",
    summary=("health check", "healthy", "healthy"),
    make_handler=make_handler,
    background=read_ebay_limits,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``connector health-checker``."""
    return run_consumer_service(
        argv,
        SPEC,
        HealthCheckerSettings,
        "Check eBay accounts (Trading GetUser) from the health work queue and record their "
        "health. Configured by CONNECTOR_* environment variables (docs/pipeline.md).",
    )
