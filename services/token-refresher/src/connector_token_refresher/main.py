"""``connector token-refresher``: refresh access tokens from the refresh work queue."""

from __future__ import annotations

from collections.abc import Sequence

from connector_common.worker.components import ConsumerSpec, run_consumer_service
from connector_token_refresher.handlers import make_handler
from connector_token_refresher.settings import TokenRefresherSettings

SPEC = ConsumerSpec(
    service="token-refresher",
    kind="refresh",
    summary=("token refresh", "refreshed", "refreshed"),
    make_handler=make_handler,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``connector token-refresher``."""
    return run_consumer_service(
        argv,
        SPEC,
        TokenRefresherSettings,
        "Refresh eBay access tokens from the refresh work queue, one replica per account at a "
        "time. Configured by CONNECTOR_* environment variables (docs/pipeline.md).",
    )
