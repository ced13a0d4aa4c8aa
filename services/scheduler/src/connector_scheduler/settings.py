"""Scheduler settings: the shared pipeline timing (``CONNECTOR_PIPELINE__*``) is all it needs."""

from __future__ import annotations

from connector_common.worker.settings import WorkerSettings


class SchedulerSettings(WorkerSettings):
    """``connector scheduler`` settings (see docs/pipeline.md for the table)."""

    def secret_problems(self) -> list[str]:
        """None: the scheduler decrypts no token and calls no eBay API, so it needs neither the
        token keys nor the eBay client secret (its pod does not mount them)."""
        return []
