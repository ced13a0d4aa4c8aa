"""Health checker settings: the shared worker settings (``CONNECTOR_WORKER__*``,
``CONNECTOR_PIPELINE__*`` incl. the check interval and jitter, ``CONNECTOR_PROBE_PORT``) and the
eBay app (``CONNECTOR_EBAY__*``)."""

from __future__ import annotations

from connector_common.worker.settings import WorkerSettings


class HealthCheckerSettings(WorkerSettings):
    """``connector health-checker`` settings (see docs/pipeline.md for the table)."""
