"""The API's daily housekeeping: audit entries past their retention, ended admin sessions and
old rate-limit windows. Every replica tries now and then; a lease in ``leases`` held for a day
lets exactly one of them run it once a day, across restarts too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass

import structlog

from connector_api import audit_repository as audit_repo
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.redaction import redact_text

# Resolved at each use, so it follows configure_logging even when imported earlier.
log = structlog.stdlib.get_logger(__name__)
LEASE_NAME = "api-daily-purge"
BATCH = 5_000  # rows per delete: short transactions, however much is due


@dataclass(frozen=True)
class PurgeReport:
    audit_entries: int
    sessions_and_counters: int


class DailyPurge:
    """Deletes what has outlived its retention, once a day across all replicas."""

    def __init__(
        self, sessions: SessionFactory, retention_days: int, holder: str | None = None
    ) -> None:
        self._sessions = sessions
        self._retention_days = retention_days
        self._holder = holder or f"{socket.gethostname()}:{os.getpid()}"

    async def run_once(self) -> PurgeReport | None:
        """Purge if this replica won today's turn; None when another one has it."""
        async with unit_of_work(self._sessions) as session:
            if not await audit_repo.claim_daily(session, LEASE_NAME, self._holder):
                return None
        purged = 0
        if self._retention_days > 0:  # 0: keep the audit trail forever
            while True:
                async with unit_of_work(self._sessions) as session:
                    deleted = await audit_repo.purge_audit(session, self._retention_days, BATCH)
                purged += deleted
                if deleted < BATCH:
                    break
        async with unit_of_work(self._sessions) as session:
            others = await audit_repo.purge_sessions_and_counters(session)
        report = PurgeReport(purged, others)
        log.info(
            "daily purge done",
            audit_entries=report.audit_entries,
            sessions_and_counters=report.sessions_and_counters,
            retention_days=self._retention_days,
        )
        return report

    async def run(self, stop: asyncio.Event, check_seconds: float) -> None:
        """Try every ``check_seconds`` until ``stop`` is set; a failure waits for the next try."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # database away: the next try will do
                log.warning("daily purge failed", error=redact_text(str(exc))[:200])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), check_seconds)
