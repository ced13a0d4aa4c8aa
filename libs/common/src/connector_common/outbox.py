"""Transactional outbox: a message is published if and only if its database change committed.

Writers call :func:`enqueue_event` / :func:`enqueue_command` inside their transaction. The
:class:`OutboxRelay` (run by every service that writes) claims unpublished rows with
``FOR UPDATE SKIP LOCKED``, publishes them to JetStream with ``Nats-Msg-Id`` = the row id,
waits for the acks, then marks them published. A NATS outage delays messages, never loses
them; a crash between publish and mark repeats a publish that JetStream de-duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nats.js import JetStreamContext
from opentelemetry import trace
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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
from connector_common.logs import Throttle, get_logger
from connector_common.messaging import BulkPublisher
from connector_common.observability.messaging import (
    MESSAGE_ID_HEADER,
    carry,
    end_publish_span,
    start_publish_span,
)
from connector_common.redaction import redact_text
from connector_common.telemetry import extract_trace_context, inject_trace_headers, untraced

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


@dataclass(frozen=True)
class HistoryRow:
    """An account history row, for statements that write it with the event it records."""

    org_id: uuid.UUID
    account_id: uuid.UUID
    occurred_at: datetime
    type: str
    failure: bool
    details: str  # a JSON object


@dataclass(frozen=True)
class OutboxRow:
    """An outbox row, for statements that write it together with the change it announces,
    and the account history row of the event when the history keeps it."""

    id: uuid.UUID
    subject: str
    payload: str
    headers: str  # a JSON object
    history: HistoryRow | None = None


def outbox_row(event: Event, namespace: str) -> OutboxRow:
    """The outbox row of an event (with the current trace context), not yet written."""
    history = None
    if event.type in HISTORY_TYPES:
        details = event.model_dump(mode="json", exclude=_ENVELOPE)
        history = HistoryRow(
            org_id=event.org_id,
            account_id=event.account_id,
            occurred_at=event.occurred_at,
            type=event.type,
            failure=is_failure(event.type, details),
            details=json.dumps(details),
        )
    return OutboxRow(
        id=event.event_id,
        subject=event.subject(namespace),
        payload=event_payload(event).decode(),
        headers=json.dumps(inject_trace_headers()),
        history=history,
    )


def enqueue_event(
    session: AsyncSession,
    event: Event | AppEvent,
    namespace: str,
    *,
    trace_headers: dict[str, str] | None = None,
) -> None:
    """Add an event to the outbox in the caller's transaction (the event id is the row id),
    and an account's event to that account's history.

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


# How long a relay has a claimed batch to itself before another relay may take it again.
CLAIM = timedelta(seconds=30)
_CLAIM = text(
    """
    UPDATE outbox SET available_at = now() + :claim
     WHERE id IN (SELECT id FROM outbox
                   WHERE published_at IS NULL AND available_at <= now()
                   ORDER BY available_at, created_at
                   LIMIT :limit FOR UPDATE SKIP LOCKED)
 RETURNING id, subject, payload, headers, created_at
    """
)
_PUBLISHED = text("UPDATE outbox SET published_at = now() WHERE id = ANY(CAST(:ids AS uuid[]))")
_FAILED = text(
    """
    UPDATE outbox AS o
       SET attempts = o.attempts + 1, last_error = f.error,
           available_at = now() + least(60, 0.5 * 2 ^ least(o.attempts + 1, 7))
                                  * interval '1 second'
      FROM unnest(CAST(:ids AS uuid[]), CAST(:errors AS text[])) AS f(id, error)
     WHERE o.id = f.id
    """
)


def _headers(row: Any) -> dict[str, str]:
    headers = {str(k): str(v) for k, v in (row.headers or {}).items()}
    headers.setdefault(MESSAGE_ID_HEADER, str(row.id))
    return headers


class OutboxRelay:
    """Publishes committed outbox rows to JetStream; safe to run in many replicas at once.

    Each row's publish is a PRODUCER span, child of the trace context stored with the row (the
    request or refresh that wrote it), and the published headers carry that span's context, so
    the consumer's span is its child: one trace from the write to the handling.
    """

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
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._sessions = sessions
        self._tracer = tracer or trace.get_tracer(__name__)
        self._js = js
        self._publisher = BulkPublisher.for_jetstream(js)
        self._failures = Throttle(30.0)  # an outage: one line per kind per 30 s
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
                if (held := self._failures.ready(type(exc).__name__)) is not None:
                    log.warning(
                        "outbox relay cycle failed; retrying",
                        error=redact_text(f"{type(exc).__name__}: {exc}")[:300],
                        more_since_last_line=held,
                    )
            else:
                self._failures.reset()
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
        """Publish one batch of due rows; returns how many were published.

        Two statements, no transaction held while publishing: the first claims a batch (moves
        its ``available_at`` ``CLAIM_SECONDS`` ahead, so other relays skip it), the second marks
        what JetStream confirmed. A relay that dies in between leaves its rows to be claimed
        again after that; their repeat publish carries the same ``Nats-Msg-Id`` and JetStream
        drops it (EVENTS and WORK de-duplicate).
        """
        async with self._autocommit() as connection:
            claimed = await connection.execute(_CLAIM, {"limit": self._batch_size, "claim": CLAIM})
            rows = sorted(claimed.all(), key=lambda row: row.created_at)
        if not rows:
            return 0
        # Every publish in flight at once, their acks awaited together; order on the wire is
        # the order of the rows. One span per row: each continues the trace of its own writer.
        messages = []
        spans = []
        for row in rows:
            headers = _headers(row)
            span = start_publish_span(
                self._tracer,
                row.subject,
                parent=extract_trace_context(headers),
                message_id=headers[MESSAGE_ID_HEADER],
            )
            spans.append(span)
            messages.append((row.subject, row.payload.encode(), carry(span, headers)))
        try:
            results = await self._publisher.publish(messages, self._publish_timeout)
        except BaseException as exc:
            for span in spans:
                end_publish_span(span, False, type(exc).__name__)
            raise
        for span, result in zip(spans, results, strict=True):
            end_publish_span(span, result.ok, result.error, duplicate=result.duplicate)
        published = [row.id for row, result in zip(rows, results, strict=True) if result.ok]
        failed = [
            (row.id, redact_text(result.error or "not published")[:500])
            for row, result in zip(rows, results, strict=True)
            if not result.ok
        ]
        async with self._autocommit() as connection:
            if published:
                await connection.execute(_PUBLISHED, {"ids": published})
            if failed:
                await connection.execute(
                    _FAILED,
                    {"ids": [i for i, _ in failed], "errors": [e for _, e in failed]},
                )
        if failed:
            log.warning(
                "outbox publish failed for some messages",
                failed=len(failed),
                published=len(published),
                error=failed[0][1][:200],
            )
        return len(published)

    @contextlib.asynccontextmanager
    async def _autocommit(self) -> AsyncIterator[AsyncConnection]:
        # The relay's own statements (a claim every poll, in every process) are not traced:
        # each would be a trace of its own. Its publishes are, in their writers' traces.
        with untraced():
            async with self._sessions() as session:
                yield await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})

    async def purge_published(self) -> int:
        """Delete rows published longer ago than the retention, and account history older than
        its own; returns how many outbox rows went."""
        with untraced():
            return await self._purge()

    async def _purge(self) -> int:
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
