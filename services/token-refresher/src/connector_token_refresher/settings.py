"""Token refresher settings: the shared worker settings (``CONNECTOR_WORKER__*``,
``CONNECTOR_PIPELINE__*``, ``CONNECTOR_PROBE_PORT``) and the eBay app (``CONNECTOR_EBAY__*``)."""

from __future__ import annotations

from connector_common.worker.settings import WorkerSettings


class TokenRefresherSettings(WorkerSettings):
    """``connector token-refresher`` settings (see docs/pipeline.md for the table)."""
