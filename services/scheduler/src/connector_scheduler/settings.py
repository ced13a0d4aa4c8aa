"""Scheduler settings: the shared pipeline timing (``CONNECTOR_PIPELINE__*``) is all it needs."""

from __future__ import annotations

from connector_common.worker.settings import WorkerSettings


class SchedulerSettings(WorkerSettings):
    """``connector scheduler`` settings (see docs/pipeline.md for the table)."""
