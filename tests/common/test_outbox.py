"""Outbox: published if and only if committed; a NATS outage delays events, loses none."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.db.engine import create_session_factory, unit_of_work
from connector_common.db.models import OutboxMessage
from connector_common.events import AccountRenamed, RefreshToken, parse_event
from connector_common.messaging import Topology, ensure_streams
from connector_common.outbox import OutboxRelay, enqueue_command, enqueue_event
from tests.fixtures.factories import make_account, make_org


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.05)


def renamed(org_id: uuid.UUID, account_id: uuid.UUID) -> AccountRenamed:
    return AccountRenamed(
        org_id=org_id,
        account_id=account_id,
        house_name="New",
        old_house_name="Old",
        new_house_name="New",
        actor="alice",
    )


async def stream_messages(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def test_committed_event_is_published_with_its_id(
    engine: AsyncEngine, js: JetStreamContext, topology: Topology
) -> None:
    sessions = create_session_factory(engine)
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        account = await make_account(session, org)
        event = renamed(org.id, account.id)
        enqueue_event(session, event, topology.namespace)
    relay = OutboxRelay(sessions, js)
    assert await relay.publish_pending() == 1
    msg = await js.get_last_msg(topology.events_stream, event.subject(topology.namespace))
    assert msg.headers is not None
    assert msg.data is not None
    assert msg.headers["Nats-Msg-Id"] == str(event.event_id)
    assert parse_event(msg.data) == event
    assert json.loads(msg.data)["type"] == "account.renamed"
    assert await relay.publish_pending() == 0  # marked published, not sent twice


async def test_rolled_back_change_publishes_nothing(
    engine: AsyncEngine, js: JetStreamContext, topology: Topology
) -> None:
    sessions = create_session_factory(engine)
    with pytest.raises(RuntimeError):
        async with unit_of_work(sessions) as session:
            org = await make_org(session)
            account = await make_account(session, org)
            enqueue_event(session, renamed(org.id, account.id), topology.namespace)
            raise RuntimeError("the write fails after the event was enqueued")
    assert await OutboxRelay(sessions, js).publish_pending() == 0
    assert await stream_messages(js, topology.events_stream) == 0


async def test_nats_outage_delays_but_loses_nothing(
    engine: AsyncEngine, nats_client: NatsClient, topology: Topology
) -> None:
    sessions = create_session_factory(engine)
    js = nats_client.jetstream()
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        account = await make_account(session, org)
        for _ in range(3):
            enqueue_event(session, renamed(org.id, account.id), topology.namespace)
    # No stream exists yet: JetStream answers no one, as in an outage.
    relay = OutboxRelay(sessions, js, publish_timeout=0.5)
    assert await relay.publish_pending() == 0
    async with unit_of_work(sessions) as session:
        attempts = await session.scalar(select(func.min(OutboxMessage.attempts)))
        pending = await session.scalar(
            select(func.count()).where(OutboxMessage.published_at.is_(None))
        )
    assert attempts == 1
    assert pending == 3
    await ensure_streams(js, topology)
    stop = asyncio.Event()
    runner = asyncio.create_task(OutboxRelay(sessions, js).run(stop))
    try:

        async def all_published() -> bool:
            return await stream_messages(js, topology.events_stream) == 3

        await wait_for(all_published, timeout=15)
    finally:
        stop.set()
        await runner
    for config in topology.stream_configs():
        assert config.name
        await js.delete_stream(config.name)


async def test_commands_collapse_on_their_dedup_id(
    engine: AsyncEngine, js: JetStreamContext, topology: Topology
) -> None:
    sessions = create_session_factory(engine)
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        account = await make_account(session, org)
        for _ in range(3):
            enqueue_command(
                session,
                RefreshToken(account_id=account.id, org_id=org.id, token_version=4),
                topology.namespace,
            )
    assert await OutboxRelay(sessions, js).publish_pending() == 3
    assert await stream_messages(js, topology.work_stream) == 1


async def test_an_accounts_events_are_kept_in_its_history_with_failures_marked(
    engine: AsyncEngine, js: JetStreamContext, topology: Topology
) -> None:
    from datetime import timedelta

    from connector_common.db.models import AccountHistory, EbayAccount
    from connector_common.events import (
        AccountDeleted,
        HealthChanged,
        HealthChecked,
        TokenRefreshed,
        TokenRefreshFailed,
        utcnow,
    )

    sessions = create_session_factory(engine)
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        account = await make_account(session, org)
        ids = {"org_id": org.id, "account_id": account.id, "house_name": account.house_name}
        refreshed = TokenRefreshed(**ids, access_expires_at=utcnow(), token_version=2)
        events = [
            refreshed,
            TokenRefreshFailed(
                **ids, error_kind="transient", reason="503", consecutive_failures=1, retry_at=None
            ),
            HealthChecked(
                **ids,
                outcome="healthy",
                checked_at=utcnow(),
                latency_ms=5,
                http_status=200,
                ebay_error_code=None,
                ebay_request_id=None,
                api="trading",
            ),
            HealthChanged(**ids, previous_outcome="healthy", outcome="unhealthy"),
            HealthChanged(**ids, previous_outcome="unhealthy", outcome="healthy"),
            AccountDeleted(**ids, actor="alice"),
        ]
        for event in events:
            enqueue_event(session, event, topology.namespace)
    async with sessions() as session:
        rows = (
            await session.scalars(
                select(AccountHistory)
                .where(AccountHistory.account_id == account.id)
                .order_by(AccountHistory.id)
            )
        ).all()
    # health.checked lives in health_checks; account.deleted has no account left.
    assert [(r.type, r.failure) for r in rows] == [
        ("token.refreshed", False),
        ("token.refresh_failed", True),
        ("health.changed", True),
        ("health.changed", False),
    ]
    assert rows[0].details == {
        "house_name": account.house_name,
        "access_expires_at": refreshed.access_expires_at.isoformat().replace("+00:00", "Z"),
        "token_version": 2,
    }
    assert rows[0].occurred_at == events[0].occurred_at

    # Old entries are purged with the published outbox rows; deleting the account removes the
    # rest (an entry may be written before its account row in one transaction: checked at commit).
    async with unit_of_work(sessions) as session:
        first = await session.get(AccountHistory, rows[0].id)
        assert first is not None
        first.occurred_at = utcnow() - timedelta(days=8)
    await OutboxRelay(sessions, js, history_retention=timedelta(days=7)).purge_published()
    async with unit_of_work(sessions) as session:
        left = (
            await session.scalars(
                select(AccountHistory.type).where(AccountHistory.account_id == account.id)
            )
        ).all()
        assert len(left) == 3
        await session.delete(await session.get(EbayAccount, account.id))
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).where(AccountHistory.account_id == account.id)
        )
    assert count == 0


async def test_each_publish_is_a_producer_span_child_of_its_writer_and_parent_of_the_message(
    engine: AsyncEngine, js: JetStreamContext, topology: Topology
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from connector_common.telemetry import extract_trace_context

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("tests")
    sessions = create_session_factory(engine)
    # Two writers in two traces (two API requests), relayed together in one batch.
    writers = []
    events = []
    for _ in range(2):
        with tracer.start_as_current_span("PATCH /ebay-accounts/{account_id}") as request:
            async with unit_of_work(sessions) as session:
                org = await make_org(session)
                account = await make_account(session, org)
                event = renamed(org.id, account.id)
                enqueue_event(session, event, topology.namespace)
        writers.append(request.get_span_context())
        events.append(event)
    relay = OutboxRelay(sessions, js, tracer=tracer)
    assert await relay.publish_pending() == 2
    publishes = {
        (s.attributes or {}).get("messaging.message.id"): s
        for s in spans.get_finished_spans()
        if s.kind is trace.SpanKind.PRODUCER
    }
    for writer, event in zip(writers, events, strict=True):
        span = publishes[str(event.event_id)]
        assert span.name == f"publish {topology.namespace}.events.{{org_id}}.account.renamed"
        attributes = dict(span.attributes or {})
        assert attributes["messaging.system"] == "nats"
        assert attributes["messaging.operation.type"] == "send"
        assert attributes["messaging.operation.name"] == "publish"
        assert attributes["messaging.destination.name"] == event.subject(topology.namespace)
        assert span.parent is not None
        assert span.context is not None
        assert span.parent.span_id == writer.span_id
        assert span.context.trace_id == writer.trace_id
        # The message carries the publish span's context: a consumer's span is its child.
        msg = await js.get_last_msg(topology.events_stream, event.subject(topology.namespace))
        carried = trace.get_current_span(extract_trace_context(msg.headers)).get_span_context()
        assert carried.span_id == span.context.span_id
        assert carried.trace_id == writer.trace_id
