"""The collector reads the real JetStream and PostgreSQL state into bounded gauges."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.budget import repository as budget_repo
from connector_common.crypto import TokenCipher
from connector_common.db.engine import create_session_factory, unit_of_work
from connector_common.db.models import (
    CircuitBreakerState,
    EbayAccount,
    EbayToken,
    HealthCheck,
    OutboxMessage,
)
from connector_common.events import RefreshToken, utcnow
from connector_common.messaging import Topology
from connector_common.observability.collector import BudgetUsage, PipelineCollector
from connector_common.outbox import enqueue_command
from connector_common.settings import parse_key_ring
from connector_common.status import AccountStatus, account_status
from tests.fixtures.factories import make_account, make_org, make_token

BOUNDED_LABELS = {"kind", "consumer", "state", "status", "marketplace", "budget"}


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    data = reader.get_metrics_data()
    found: dict[str, list[tuple[dict[str, Any], float]]] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", 0)
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


async def seed_accounts(engine: AsyncEngine, cipher: TokenCipher) -> None:
    """One account in most statuses, over two marketplaces."""
    sessions = create_session_factory(engine)
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        healthy = await make_account(session, org, "Healthy")
        await make_token(session, healthy, cipher)
        soon = await make_account(session, org, "Soon", marketplace_id="EBAY_GB")
        await make_token(session, soon, cipher, expires_in=timedelta(minutes=5))
        expired = await make_account(session, org, "Expired", marketplace_id="EBAY_GB")
        await make_token(session, expired, cipher, expires_in=timedelta(minutes=-5))
        gone = await make_account(session, org, "Gone")
        await make_token(session, gone, cipher, reconnect_required_at=utcnow())
        failing = await make_account(session, org, "Failing")
        await make_token(session, failing, cipher, last_refresh_error="eBay said no")
        await make_account(session, org, "NoToken")
        off = await make_account(session, org, "Off", is_active=False, deactivated_at=utcnow())
        await make_token(session, off, cipher)
        sick = await make_account(session, org, "Sick", last_health_outcome="unhealthy")
        await make_token(session, sick, cipher)


async def python_statuses(engine: AsyncEngine) -> dict[tuple[str, str], int]:
    """The same counts through :func:`account_status`, row by row."""
    sessions = create_session_factory(engine)
    counts: dict[tuple[str, str], int] = {}
    async with unit_of_work(sessions) as session:
        rows = await session.execute(
            select(EbayAccount, EbayToken).outerjoin(
                EbayToken, EbayToken.account_id == EbayAccount.id
            )
        )
        now = utcnow()
        for account, token in rows:
            health = (
                HealthCheck(outcome=account.last_health_outcome)
                if account.last_health_outcome
                else None
            )
            key = (
                account_status(account, token, health, now).value,
                account.marketplace_id or "unknown",
            )
            counts[key] = counts.get(key, 0) + 1
    return counts


async def test_one_collection_reads_queues_dlq_outbox_breakers_and_accounts(
    engine: AsyncEngine, js: JetStreamContext, topology: Topology, token_keys: str
) -> None:
    cipher = TokenCipher(parse_key_ring(token_keys))
    await seed_accounts(engine, cipher)
    sessions = create_session_factory(engine)
    # The refresher's durable consumer, as the worker declares it: 3 requests, 1 taken.
    await js.add_consumer(
        topology.work_stream,
        ConsumerConfig(
            durable_name=topology.refresher_durable,
            filter_subject=topology.refresh_subject,
            ack_policy=AckPolicy.EXPLICIT,
        ),
    )
    for _ in range(3):
        command = RefreshToken(account_id=uuid.uuid4(), org_id=uuid.uuid4(), token_version=1)
        await js.publish(topology.refresh_subject, command.to_json())
    puller = await js.pull_subscribe_bind(topology.refresher_durable, topology.work_stream)
    taken = await puller.fetch(1, timeout=5)
    assert len(taken) == 1
    for kind, count in (("refresh", 2), ("health", 1)):
        for _ in range(count):
            await js.publish(topology.dlq_subject(kind), b"{}")
    # Two messages waiting in the outbox, the older one two minutes old.
    async with unit_of_work(sessions) as session:
        for _ in range(2):
            enqueue_command(
                session,
                RefreshToken(account_id=uuid.uuid4(), org_id=uuid.uuid4(), token_version=1),
                topology.namespace,
            )
    async with unit_of_work(sessions) as session:
        first = await session.scalar(select(OutboxMessage.id).limit(1))
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == first)
            .values(created_at=utcnow() - timedelta(minutes=2))
        )
        for key, state in (("a", "open"), ("b", "open"), ("c", "half_open"), ("d", "closed")):
            session.add(CircuitBreakerState(key=key, state=state, consecutive_failures=5))

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("tests")

    async def budget() -> list[BudgetUsage]:
        return [BudgetUsage("oauth.refresh_token", used=120, limit=50_000)]

    collector = PipelineCollector(sessions, js, topology, meter, budget=budget)
    collector.snapshot = await collector.collect()
    seen = points(reader)

    consumers = {a["kind"]: v for a, v in seen["connector.jetstream.consumer.pending"]}
    assert consumers == {"refresh": 2}  # the health checker has not declared its consumer
    assert seen["connector.jetstream.consumer.ack_pending"] == [
        ({"kind": "refresh", "consumer": topology.refresher_durable}, 1)
    ]
    assert [v for _a, v in seen["connector.jetstream.consumer.delivered"]] == [1]
    assert {a["kind"]: v for a, v in seen["connector.dlq.messages"]} == {
        "refresh": 2,
        "health": 1,
    }
    assert seen["connector.outbox.backlog"] == [({}, 2)]
    [(_attrs, age)] = seen["connector.outbox.oldest_age"]
    assert 110 < age < 600
    assert {a["state"]: v for a, v in seen["connector.circuit_breakers"]} == {
        "open": 2,
        "half_open": 1,
    }
    accounts = {(a["status"], a["marketplace"]): v for a, v in seen["connector.accounts"]}
    expected = await python_statuses(engine)
    assert {k: v for k, v in accounts.items() if v} == expected
    assert len({status for status, _m in expected}) >= 7  # not vacuous: most statuses seen
    # Zeros for every status of every marketplace in use, so rates see the first account.
    assert accounts[(AccountStatus.EXPIRED.value, "EBAY_US")] == 0
    assert set(accounts) == {(s.value, m) for s in AccountStatus for m in ("EBAY_US", "EBAY_GB")}
    assert seen["connector.ebay.budget.used"] == [({"budget": "oauth.refresh_token"}, 120)]
    for name, series in seen.items():
        for attributes, _value in series:
            assert set(attributes) <= BOUNDED_LABELS, name


async def test_a_replica_that_does_not_lead_reports_nothing_and_runs_no_query(
    engine: AsyncEngine, js: JetStreamContext, topology: Topology
) -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("tests")
    leading = False
    collector = PipelineCollector(
        create_session_factory(engine),
        js,
        topology,
        meter,
        interval=0.05,
        active=lambda: leading,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while collector.cycles < 3:  # several intervals while not leading
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        assert collector.snapshot is None
        assert "connector.outbox.backlog" not in points(reader)
        leading = True
        while collector.snapshot is None:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        assert points(reader)["connector.outbox.backlog"] == [({}, 0)]
        leading = False
        while collector.snapshot is not None:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        assert "connector.outbox.backlog" not in points(reader)
    finally:
        stop.set()
        await task


async def test_ebays_quotas_are_reported_from_the_last_reading_while_it_is_fresh(
    engine: AsyncEngine, js: JetStreamContext, topology: Topology
) -> None:
    """A health checker stores what Developer Analytics said; the leading scheduler reports it
    (it holds no client secret to ask eBay itself), and stops once the reading is stale."""
    sessions = create_session_factory(engine)
    quota = {
        "api_context": "tradingapi",
        "api_name": "TradingAPI",
        "resource": "TradingAPI",
        "limit": 5000,
        "remaining": 4200,
        "window_s": 86400,
    }
    async with unit_of_work(sessions) as session:
        assert await budget_repo.claim_limits_reading(session, timedelta(hours=1))
        await budget_repo.store_quotas(session, [quota], utcnow() - timedelta(minutes=10))
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("tests")
    collector = PipelineCollector(sessions, js, topology, meter, quotas_max_age=900)
    collector.snapshot = await collector.collect()
    labels = {
        "ebay.api": "analytics",
        "ebay.api_context": "tradingapi",
        "ebay.api_name": "TradingAPI",
        "ebay.resource": "TradingAPI",
    }
    seen = points(reader)
    assert seen["ebay.rate_limit.remaining"] == [(labels, 4200)]
    assert seen["ebay.rate_limit.limit"] == [(labels, 5000)]

    async with unit_of_work(sessions) as session:  # the health checkers stopped reading
        await budget_repo.store_quotas(session, [quota], utcnow() - timedelta(minutes=20))
    collector.snapshot = await collector.collect()
    assert "ebay.rate_limit.remaining" not in points(reader)
