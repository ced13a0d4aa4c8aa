"""``connector health-checker``: check accounts against eBay from the health work queue."""

from __future__ import annotations

from collections.abc import Sequence

from connector_common.worker.components import ConsumerSpec, run_consumer_service
from connector_health_checker.handlers import make_handler
from connector_health_checker.settings import HealthCheckerSettings

SPEC = ConsumerSpec(
    service="health-checker",
    kind="health",
    summary=("health check", "healthy", "healthy"),
    make_handler=make_handler,
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
