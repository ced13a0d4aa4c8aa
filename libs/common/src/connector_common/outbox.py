"""Transactional outbox: a message is published if and only if its database change committed.

Writers call :func:`enqueue_event` / :func:`enqueue_command` inside their transaction. The
:class:`OutboxRelay` (run by every service that writes) claims unpublished rows with
``FOR UPDATE SKIP LOCKED``, publishes them to JetStream with ``Nats-Msg-Id`` = the row id,
waits for the acks, then marks them published. A NATS outage delays messages, never loses
them; a crash between publish and mark repeats a publish that JetStream de-duplicates.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from nats.js import JetStreamContext
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.db.models import OutboxMessage
from connector_common.events import CheckHealth, Event, RefreshToken, event_payload, utcnow
from connector_common.logs import get_logger
from connector_common.redaction import redact_text
from connector_common.telemetry import inject_trace_headers

log = get_logger(__name__)


@dataclass(frozen=True)
class OutboxRow:
    """An outbox row, for statements that write it together with the change it announces."""

    id: uuid.UUID
    subject: str
    payload: str
    headers: str  # a JSON object


def outbox_row(event: Event, namespace: str) -> OutboxRow:
    """The outbox row of an event (with the current trace context), not yet written."""
    return OutboxRow(
        id=event.event_id,
        subject=event.subject(namespace),
        payload=event_payload(event).decode(),
        headers=json.dumps(inject_trace_headers()),
    )


def enqueue_event(
    session: AsyncSession,
    event: Event,
    namespace: str,
    *,
    trace_headers: dict[str, str] | None = None,
) -> None:
    """Add an event to the outbox in the caller's transaction (the event id is the row id).

    Its trace context is the current one, or ``trace_headers`` when the write happens on behalf
    of another task (a batched write)."""
    session.add(
        OutboxMessage(
            id=event.event_id,
            subject=event.subject(namespace),
            payload=event_payload(event).decode(),
            headers=trace_headers if trace_headers is not None else inject_trace_headers(),
        )
    )


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
        on_cycle: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._js = js
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._publish_timeout = publish_timeout
        self._retention = retention
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
        """Delete rows published longer ago than the retention; returns how many."""
        async with unit_of_work(self._sessions) as session:
            result = await session.execute(
                delete(OutboxMessage).where(OutboxMessage.published_at < utcnow() - self._retention)
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
