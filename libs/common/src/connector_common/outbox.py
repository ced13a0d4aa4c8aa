"""Transactional outbox: a message is published if and only if its database change committed.

Writers call :func:`enqueue_event` / :func:`enqueue_command` inside their transaction. The
:class:`OutboxRelay` (run by every service that writes) claims unpublished rows with
``FOR UPDATE SKIP LOCKED``, publishes them to JetStream with ``Nats-Msg-Id`` = the row id,
waits for the acks, then marks them published. A NATS outage delays messages, never loses
them; a crash between publish and mark repeats a publish that JetStream de-duplicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from nats.js import JetStreamContext
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.db.models import AccountHistory, OutboxMessage
from connector_common.events import (
    AppEvent,
    CheckHealth,
    Event,
    RefreshToken,
    event_payload,
    utcnow,
)
from connector_common.logs import get_logger
from connector_common.redaction import redact_text
from connector_common.telemetry import inject_trace_headers

log = get_logger(__name__)


# Events an account's history keeps (health.checked is in health_checks already; an
# account.deleted event has no account left to belong to). A new event type is not recorded
# until it is named here.
HISTORY_TYPES = frozenset(
    {
        "account.connected",
        "account.reconnected",
        "account.renamed",
        "account.purpose_changed",
        "account.deactivated",
        "account.reactivated",
        "account.reconnect_required",
        "token.refreshed",
        "token.refresh_failed",
        "health.changed",
        "account.reconsent_due",
        "account.username_changed",  # personal data: the eBay account deletion purges it
        "account.deleted_by_ebay",
    }
)
_ENVELOPE = {"event_id", "org_id", "account_id", "occurred_at", "version"}


def enqueue_event(session: AsyncSession, event: Event | AppEvent, namespace: str) -> None:
    """Add an event to the outbox in the caller's transaction (the event id is the row id),
    and an account's event to that account's history."""
    session.add(
        OutboxMessage(
            id=event.event_id,
            subject=event.subject(namespace),
            payload=event_payload(event).decode(),
            headers=inject_trace_headers(),
        )
    )
    if isinstance(event, Event) and event.type in HISTORY_TYPES:
        details = event.model_dump(mode="json", exclude=_ENVELOPE)
        session.add(
            AccountHistory(
                org_id=event.org_id,
                account_id=event.account_id,
                occurred_at=event.occurred_at,
                type=event.type,
                failure=is_failure(event.type, details),
                details=details,
            )
        )


def is_failure(event_type: str, details: dict[str, Any]) -> bool:
    """Whether a history entry is a failure (listed among an org's last failures)."""
    if event_type in ("token.refresh_failed", "account.reconnect_required"):
        return True
    return event_type == "health.changed" and details.get("outcome") == "unhealthy"


def enqueue_command(
    session: AsyncSession, command: RefreshToken | CheckHealth, namespace: str
) -> None:
    """Add work to the outbox; its Nats-Msg-Id is the command's de-duplication id."""
    headers = inject_trace_headers({"Nats-Msg-Id": command.dedup_id()})
    session.add(
        OutboxMessage(
            id=command.command_id,
            subject=command.subject(namespace),
            payload=command.to_json().decode(),
            headers=headers,
        )
    )


class OutboxRelay:
    """Publishes committed outbox rows to JetStream; safe to run in many replicas at once."""

    def __init__(
        self,
        sessions: SessionFactory,
        js: JetStreamContext,
        *,
        batch_size: int = 200,
        poll_interval: float = 0.5,
        publish_timeout: float = 5.0,
        retention: timedelta = timedelta(days=1),
        history_retention: timedelta = timedelta(days=7),
        on_cycle: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._js = js
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._publish_timeout = publish_timeout
        self._retention = retention
        self._history_retention = history_retention
        self._wake = asyncio.Event()
        self._on_cycle = on_cycle
        self._cycles = 0

    def wake(self) -> None:
        """Publish soon: call after committing a transaction that enqueued messages."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; errors are logged and retried, never fatal."""
        while not stop.is_set():
            published = 0
            try:
                published = await self.publish_pending()
                self._cycles += 1
                if self._cycles % 600 == 0:
                    await self.purge_published()
            except Exception as exc:  # keep relaying: the database or NATS may come back
                log.warning("outbox relay cycle failed", error=redact_text(str(exc))[:300])
            if self._on_cycle is not None:
                result = self._on_cycle()
                if result is not None:
                    await result
            if published >= self._batch_size:
                continue  # more are waiting
            self._wake.clear()
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            _done, pending = await asyncio.wait(
                waiters, timeout=self._poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()

    async def publish_pending(self) -> int:
        """Publish one batch of due rows; returns how many were published."""
        async with unit_of_work(self._sessions) as session:
            rows = (
                await session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.published_at.is_(None))
                    .where(OutboxMessage.available_at <= utcnow())
                    .order_by(OutboxMessage.available_at, OutboxMessage.created_at)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            # Many publishes in flight at once, acks awaited together: order on the wire is
            # the order of the rows.
            results = await asyncio.gather(
                *(self._publish(row) for row in rows), return_exceptions=True
            )
            now = utcnow()
            published = 0
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, BaseException):
                    row.attempts += 1
                    row.last_error = redact_text(f"{type(result).__name__}: {result}")[:500]
                    delay = min(60.0, 0.5 * 2 ** min(row.attempts, 7))
                    row.available_at = now + timedelta(seconds=delay)
                else:
                    row.published_at = now
                    published += 1
            if published < len(rows):
                log.warning(
                    "outbox publish failed for some messages",
                    failed=len(rows) - published,
                    published=published,
                )
            return published

    async def _publish(self, row: OutboxMessage) -> None:
        headers = {str(k): str(v) for k, v in (row.headers or {}).items()}
        headers.setdefault("Nats-Msg-Id", str(row.id))
        await self._js.publish(
            row.subject, row.payload.encode(), timeout=self._publish_timeout, headers=headers
        )

    async def purge_published(self) -> int:
        """Delete rows published longer ago than the retention, and account history older than
        its own; returns how many outbox rows went."""
        async with unit_of_work(self._sessions) as session:
            result = await session.execute(
                delete(OutboxMessage).where(OutboxMessage.published_at < utcnow() - self._retention)
            )
            await session.execute(
                delete(AccountHistory).where(
                    AccountHistory.occurred_at < utcnow() - self._history_retention
                )
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def pending_count(self) -> int:
        """How many rows are waiting (a lag metric)."""
        async with unit_of_work(self._sessions) as session:
            return int(
                await session.scalar(
                    select(func.count()).where(OutboxMessage.published_at.is_(None))
                )
                or 0
            )
