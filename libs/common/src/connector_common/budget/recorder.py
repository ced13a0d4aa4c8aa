"""Counting eBay calls, cheaply and exactly, across every replica.

Each process counts its calls in memory per (UTC day, bucket) and adds them to PostgreSQL with
one upsert (``calls = calls + n``) every ``flush_seconds`` and when it stops. Additions commute,
so any number of replicas flushing at once never lose a call; a flush that fails keeps its
counts for the next one. What a process killed with SIGKILL had not flushed (at most one
interval of its calls) is lost: the budget's reserves are far larger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime

from connector_common.budget import repository
from connector_common.budget.buckets import bucket_for
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.events import utcnow
from connector_common.logs import get_logger
from connector_common.redaction import redact_text

log = get_logger(__name__)


class CallRecorder:
    """Buffers call counts and adds them to ``ebay_call_counts``; one per process."""

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        flush_seconds: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._pending: Counter[tuple[date, str]] = Counter()
        self._lock = asyncio.Lock()
        self.flushed = 0  # calls written so far (for tests and logs)

    def record(self, api: str, operation: str) -> None:
        """Count one HTTP request that reached eBay (or may have): never blocks, never fails."""
        self._pending[(self._clock().date(), bucket_for(api, operation))] += 1

    @property
    def pending(self) -> int:
        """Calls counted but not yet in PostgreSQL."""
        return sum(self._pending.values())

    async def flush(self) -> int:
        """Add the buffered counts to PostgreSQL; returns how many calls were written."""
        async with self._lock:
            if not self._pending:
                return 0
            batch, self._pending = self._pending, Counter()
            try:
                async with unit_of_work(self._sessions) as session:
                    await repository.add_counts(session, batch)
            except BaseException:
                self._pending.update(batch)  # not lost: the next flush tries again
                raise
            written = sum(batch.values())
            self.flushed += written
            return written

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every interval until ``stop``, then once more."""
        failing = False
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._flush_seconds)
            try:
                await self.flush()
            except Exception as exc:  # the database may come back: keep the counts
                if not failing:
                    log.warning(
                        "eBay call counts could not be saved; kept for the next attempt",
                        pending=self.pending,
                        error=redact_text(f"{type(exc).__name__}: {exc}")[:200],
                    )
                failing = True
            else:
                failing = False

    async def close(self) -> None:
        """The last flush (shutdown); a failure is logged with what is lost."""
        try:
            await self.flush()
        except Exception as exc:
            log.error(
                "eBay call counts lost at shutdown",
                calls=self.pending,
                error=redact_text(f"{type(exc).__name__}: {exc}")[:200],
            )
