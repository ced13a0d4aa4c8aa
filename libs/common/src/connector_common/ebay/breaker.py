"""A circuit breaker per eBay account, shared by every replica through PostgreSQL.

closed --(N consecutive failures)--> open --(cool-down over; ONE caller claims the probe)-->
half_open --(probe succeeds)--> closed, or --(probe fails)--> open again.

Only failures that say something about eBay or the account count (transient errors, rate
limits); a refused token or a bad request is a healthy answer from eBay and counts as success.
The store keeps its own short transactions, apart from the caller's unit of work: breaker state
must persist even when the caller's work rolls back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector_common.ebay.errors import CircuitOpen, RateLimited, TransientError
from connector_common.logs import get_logger
from connector_common.settings import EbaySettings

log = get_logger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
UNREAD: object = object()  # acquire(): read the state from the store (nothing known yet)


@dataclass(frozen=True)
class BreakerSnapshot:
    """A breaker row and the store's clock when it was read."""

    state: str
    consecutive_failures: int
    open_until: datetime | None
    probe_until: datetime | None
    now: datetime


@dataclass(frozen=True)
class Permit:
    """Permission to make one logical call (possibly as the half-open probe)."""

    key: str
    probe: bool = False
    tracked: bool = True  # False when the breaker had no row: a success needs no write


class BreakerStore(Protocol):
    """Where breaker state lives; every method is one atomic step."""

    async def read(self, key: str) -> BreakerSnapshot | None: ...

    async def claim_probe(self, key: str, probe_seconds: float) -> bool: ...

    async def record_success(self, key: str) -> None: ...

    async def record_failure(
        self, key: str, *, threshold: int, cooldown_seconds: float, probe: bool
    ) -> BreakerSnapshot: ...


def counts_as_failure(error: BaseException) -> bool:
    """Failures that say eBay (or this account on eBay) is in trouble.

    A rate limit that says how long to wait (``Retry-After``) is an instruction, not trouble:
    the caller waits exactly that long. Counting it too would open the breaker for its
    cool-down on top (one account once waited 172 s after a 429 that asked for 2 s).
    """
    if isinstance(error, RateLimited):
        return error.retry_after is None
    return isinstance(error, TransientError)


class CircuitBreaker:
    """Guards calls per key (our account id)."""

    def __init__(
        self,
        store: BreakerStore,
        *,
        failure_threshold: int = 5,
        cooldown_seconds: float = 60.0,
        probe_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self.probe_seconds = probe_seconds

    @classmethod
    def from_settings(cls, settings: EbaySettings, store: BreakerStore) -> CircuitBreaker:
        """Threshold and cool-down from ``CONNECTOR_EBAY__BREAKER_*``."""
        return cls(
            store,
            failure_threshold=settings.breaker_failure_threshold,
            cooldown_seconds=settings.breaker_cooldown_seconds,
            # A probe that never reports (crashed replica) frees the slot after this long.
            probe_seconds=max(settings.read_timeout_seconds * 2, 10.0),
        )

    async def acquire(self, key: str, known: BreakerSnapshot | object | None = UNREAD) -> Permit:
        """A permit, or :class:`CircuitOpen` while the breaker is open or probing elsewhere.

        ``known`` is the state when the caller already read it (in the same statement as its
        own work: the refresh claim does); None means there is no row.
        """
        if known is UNREAD:
            try:
                snapshot = await self.store.read(key)
            except Exception as exc:  # the breaker protects; it must not become the outage
                log.warning("breaker_store_unavailable", breaker_key=key, error=type(exc).__name__)
                return Permit(key, tracked=False)
        else:
            assert known is None or isinstance(known, BreakerSnapshot)
            snapshot = known
        if snapshot is None:
            return Permit(key, tracked=False)
        if snapshot.state == CLOSED:
            return Permit(key)
        if snapshot.state == OPEN and snapshot.open_until and snapshot.open_until > snapshot.now:
            raise CircuitOpen(key, snapshot.open_until)
        if (
            snapshot.state == HALF_OPEN
            and snapshot.probe_until
            and snapshot.probe_until > snapshot.now
        ):
            raise CircuitOpen(key, snapshot.probe_until)
        try:
            claimed = await self.store.claim_probe(key, self.probe_seconds)
        except Exception as exc:
            log.warning("breaker_store_unavailable", breaker_key=key, error=type(exc).__name__)
            return Permit(key, tracked=False)
        if claimed:
            log.info("breaker_probe_claimed", breaker_key=key)
            return Permit(key, probe=True)
        raise CircuitOpen(key, snapshot.now + timedelta(seconds=self.probe_seconds))

    async def record(self, permit: Permit, error: BaseException | None) -> None:
        """Report how the permitted call went."""
        try:
            if error is not None and counts_as_failure(error):
                snapshot = await self.store.record_failure(
                    permit.key,
                    threshold=self.failure_threshold,
                    cooldown_seconds=self.cooldown_seconds,
                    probe=permit.probe,
                )
                if snapshot.state == OPEN:
                    log.warning(
                        "breaker_open",
                        breaker_key=permit.key,
                        breaker_state=snapshot.state,
                        failures=snapshot.consecutive_failures,
                        open_until=snapshot.open_until.isoformat() if snapshot.open_until else None,
                    )
            elif permit.tracked or permit.probe:
                await self.store.record_success(permit.key)
                if permit.probe:
                    log.info("breaker_closed", breaker_key=permit.key)
        except Exception as exc:
            log.warning(
                "breaker_store_unavailable", breaker_key=permit.key, error=type(exc).__name__
            )

    async def state(self, key: str) -> BreakerSnapshot | None:
        """The current state (for tests, admin pages and metrics)."""
        return await self.store.read(key)


_READ = text(
    "SELECT now() AS now, b.state, b.consecutive_failures, b.open_until, b.probe_until "
    "FROM (SELECT 1) AS one LEFT JOIN circuit_breakers AS b ON b.key = :key"
)
# Exactly one caller wins: the row lock serialises concurrent UPDATEs and the loser re-checks
# the WHERE clause against the winner's row (probe_until now in the future) and matches nothing.
_CLAIM = text(
    "UPDATE circuit_breakers SET state = 'half_open', "
    "probe_until = now() + :probe * interval '1 second', updated_at = now() "
    "WHERE key = :key AND ((state = 'open' AND open_until <= now()) "
    "OR (state = 'half_open' AND (probe_until IS NULL OR probe_until <= now()))) "
    "RETURNING key"
)
_SUCCESS = text(
    "UPDATE circuit_breakers SET state = 'closed', consecutive_failures = 0, opened_at = NULL, "
    "open_until = NULL, probe_until = NULL, updated_at = now() "
    "WHERE key = :key AND (state <> 'closed' OR consecutive_failures <> 0)"
)
_FAILURE = text(
    "INSERT INTO circuit_breakers AS b "
    "(key, state, consecutive_failures, opened_at, open_until, updated_at) "
    "VALUES (:key, CASE WHEN 1 >= :threshold THEN 'open' ELSE 'closed' END, 1, "
    "CASE WHEN 1 >= :threshold THEN now() END, "
    "CASE WHEN 1 >= :threshold THEN now() + :cooldown * interval '1 second' END, now()) "
    "ON CONFLICT (key) DO UPDATE SET "
    "consecutive_failures = b.consecutive_failures + 1, "
    "state = CASE WHEN b.state = 'closed' AND b.consecutive_failures + 1 >= :threshold "
    "THEN 'open' ELSE b.state END, "
    "opened_at = CASE WHEN b.state = 'closed' AND b.consecutive_failures + 1 >= :threshold "
    "THEN now() ELSE b.opened_at END, "
    "open_until = CASE WHEN b.state = 'closed' AND b.consecutive_failures + 1 >= :threshold "
    "THEN now() + :cooldown * interval '1 second' ELSE b.open_until END, "
    "updated_at = now() "
    "RETURNING now() AS now, state, consecutive_failures, open_until, probe_until"
)
_PROBE_FAILED = text(
    "UPDATE circuit_breakers SET state = 'open', consecutive_failures = consecutive_failures + 1, "
    "opened_at = now(), open_until = now() + :cooldown * interval '1 second', "
    "probe_until = NULL, updated_at = now() WHERE key = :key "
    "RETURNING now() AS now, state, consecutive_failures, open_until, probe_until"
)


class PostgresBreakerStore:
    """Breaker state in the ``circuit_breakers`` table, one short transaction per step."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = session_factory

    async def read(self, key: str) -> BreakerSnapshot | None:
        async with self._factory() as session, session.begin():
            row = (await session.execute(_READ, {"key": key})).one()
        if row.state is None:
            return None
        return BreakerSnapshot(
            row.state, row.consecutive_failures, row.open_until, row.probe_until, row.now
        )

    async def claim_probe(self, key: str, probe_seconds: float) -> bool:
        async with self._factory() as session, session.begin():
            claimed = await session.execute(_CLAIM, {"key": key, "probe": probe_seconds})
            return claimed.first() is not None

    async def record_success(self, key: str) -> None:
        async with self._factory() as session, session.begin():
            await session.execute(_SUCCESS, {"key": key})

    async def record_failure(
        self, key: str, *, threshold: int, cooldown_seconds: float, probe: bool
    ) -> BreakerSnapshot:
        statement = _PROBE_FAILED if probe else _FAILURE
        params = {"key": key, "threshold": threshold, "cooldown": cooldown_seconds}
        async with self._factory() as session, session.begin():
            row = (await session.execute(statement, params)).one_or_none()
        if row is None:  # the row vanished under a probe; start counting again
            return await self.record_failure(
                key, threshold=threshold, cooldown_seconds=cooldown_seconds, probe=False
            )
        return BreakerSnapshot(
            row.state, row.consecutive_failures, row.open_until, row.probe_until, row.now
        )


@dataclass
class _Row:
    state: str = CLOSED
    failures: int = 0
    open_until: datetime | None = None
    probe_until: datetime | None = None


class MemoryBreakerStore:
    """The same state machine in one process (unit tests, single-replica tools)."""

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _now() -> datetime:
        return datetime.fromtimestamp(time.time(), UTC)

    @staticmethod
    def _snapshot(row: _Row, now: datetime) -> BreakerSnapshot:
        return BreakerSnapshot(row.state, row.failures, row.open_until, row.probe_until, now)

    async def read(self, key: str) -> BreakerSnapshot | None:
        with self._lock:
            row = self._rows.get(key)
            return self._snapshot(row, self._now()) if row else None

    async def claim_probe(self, key: str, probe_seconds: float) -> bool:
        now = self._now()
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                return False
            cooled = row.state == OPEN and row.open_until is not None and row.open_until <= now
            lapsed = row.state == HALF_OPEN and (row.probe_until is None or row.probe_until <= now)
            if cooled or lapsed:
                row.state = HALF_OPEN
                row.probe_until = now + timedelta(seconds=probe_seconds)
            return cooled or lapsed

    async def record_success(self, key: str) -> None:
        with self._lock:
            self._rows.pop(key, None)

    async def record_failure(
        self, key: str, *, threshold: int, cooldown_seconds: float, probe: bool
    ) -> BreakerSnapshot:
        now = self._now()
        with self._lock:
            row = self._rows.setdefault(key, _Row())
            row.failures += 1
            if probe or (row.state == CLOSED and row.failures >= threshold):
                row.state = OPEN
                row.open_until = now + timedelta(seconds=cooldown_seconds)
                row.probe_until = None
            return self._snapshot(row, now)
