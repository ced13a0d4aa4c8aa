"""Counting eBay calls: exact across processes (recorders), cheap (one row per day and API),
kept across restarts and database outages; and the eBay client counts each request it sends."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.budget import repository
from connector_common.budget.analytics import LimitsReader
from connector_common.budget.buckets import APP_GRANT, CODE_GRANT, REFRESH_GRANT, TRADING
from connector_common.budget.recorder import CallRecorder
from connector_common.db.engine import create_engine, create_session_factory, unit_of_work
from connector_common.db.models import CallCount
from connector_common.ebay import EbayClient, TransientError
from connector_common.events import utcnow
from connector_common.settings import DatabaseSettings, EbaySettings
from tests.fixtures.sandbox import SandboxHandle


async def counts(engine: AsyncEngine) -> dict[str, int]:
    async with unit_of_work(create_session_factory(engine)) as session:
        return await repository.usage(session, utcnow().date())


async def test_many_recorders_flushing_at_once_lose_no_call(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    recorders = [CallRecorder(sessions) for _ in range(4)]

    async def work(recorder: CallRecorder, n: int) -> None:
        for i in range(n):
            recorder.record("trading", "GetUser")
            recorder.record("oauth", "refresh_token")
            if i % 50 == 0:
                await recorder.flush()  # flushes interleave with the other recorders'
                await asyncio.sleep(0)

    await asyncio.gather(*(work(r, 500) for r in recorders))
    await asyncio.gather(*(r.close() for r in recorders))
    assert await counts(engine) == {TRADING: 2000, REFRESH_GRANT: 2000}
    async with unit_of_work(sessions) as session:
        rows = await session.scalar(select(func.count()).select_from(CallCount))
    assert rows == 2  # one row per day and bucket, not one per call


async def test_counts_survive_a_restart(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    first = CallRecorder(sessions)
    for _ in range(7):
        first.record("trading", "GetUser")
    await first.close()
    second = CallRecorder(sessions)  # a new process
    for _ in range(3):
        second.record("trading", "GetUser")
    await second.close()
    assert (await counts(engine))[TRADING] == 10


async def test_counts_are_kept_while_the_database_is_unreachable(
    engine: AsyncEngine, database_url: str
) -> None:
    dead = create_engine(
        DatabaseSettings(url=SecretStr(database_url.rsplit("/", 1)[0] + "/no_such_db"))
    )
    sessions = create_session_factory(dead)
    recorder = CallRecorder(sessions)
    recorder.record("trading", "GetUser")
    recorder.record("trading", "GetUser")
    with pytest.raises(OperationalError):
        await recorder.flush()
    await dead.dispose()
    assert recorder.pending == 2
    # The database is back (the factory now binds a reachable one): what was kept is written.
    sessions.configure(bind=engine)
    assert await recorder.flush() == 2
    assert (await counts(engine))[TRADING] == 2


async def test_calls_are_counted_on_the_day_they_were_made(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    clock = [datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)]
    recorder = CallRecorder(sessions, clock=lambda: clock[0])
    recorder.record("trading", "GetUser")
    clock[0] = datetime(2026, 12, 2, 0, 0, 1, tzinfo=UTC)
    recorder.record("trading", "GetUser")
    recorder.record("trading", "GetUser")
    await recorder.close()
    async with unit_of_work(sessions) as session:
        first = await repository.usage(session, datetime(2026, 12, 1).date())
        second = await repository.usage(session, datetime(2026, 12, 2).date())
    assert (first, second) == ({TRADING: 1}, {TRADING: 2})


async def test_the_client_counts_every_request_that_reached_ebay(
    ebay_settings: EbaySettings, sandbox: SandboxHandle, engine: AsyncEngine
) -> None:
    recorder = CallRecorder(create_session_factory(engine))
    seen: Counter[tuple[str, str]] = Counter()

    def on_call(api: str, operation: str) -> None:
        seen[(api, operation)] += 1
        recorder.record(api, operation)

    client = EbayClient(
        ebay_settings, backoff_seconds=0.01, max_backoff_seconds=0.02, on_call=on_call
    )
    try:
        sandbox.fault("trading", "error", status=503, count=1)  # one retry: two requests
        token = await client.exchange_code(sandbox.grant("demo_uk_seller"))
        access = token.access_token.get_secret_value()
        await client.get_user(access)
        assert token.refresh_token is not None
        await client.refresh_access_token(
            token.refresh_token.get_secret_value(), list(sandbox.scopes)
        )
        await client.app_rate_limits()
    finally:
        await client.aclose()
    await recorder.close()
    assert await counts(engine) == {
        CODE_GRANT: 1,
        TRADING: 2,
        REFRESH_GRANT: 1,
        APP_GRANT: 1,
        "analytics": 1,
    }
    # The same number of requests as the sandbox's call log.
    assert sum(seen.values()) == len(sandbox.calls())


async def test_a_request_that_never_left_is_not_counted(ebay_settings: EbaySettings) -> None:
    seen: list[tuple[str, str]] = []
    unreachable = ebay_settings.model_copy(
        update={"local_base_url": "http://127.0.0.1:9", "max_attempts": 2}
    )
    client = EbayClient(
        unreachable,
        backoff_seconds=0.01,
        max_backoff_seconds=0.02,
        on_call=lambda api, op: seen.append((api, op)),
    )
    try:
        with pytest.raises(TransientError) as raised:
            await client.get_user("v^1.1#token")
    finally:
        await client.aclose()
    assert raised.value.error_code == "connect_error"
    assert seen == []


async def test_ebays_limits_are_read_from_developer_analytics(
    ebay_client: EbayClient, sandbox: SandboxHandle, engine: AsyncEngine
) -> None:
    sessions = create_session_factory(engine)
    reader = LimitsReader(ebay_client, sessions, interval=3600)
    stored = await reader.maybe_read()
    assert stored is not None
    assert {r.bucket: r.daily_limit for r in stored} == {
        "analytics": 5000,
        "identity": 5000,
        "notification": 10_000,
        TRADING: 5000,
    }
    assert await reader.maybe_read() is None  # not again within the interval
    async with unit_of_work(sessions) as session:
        assert (await repository.reported_limits(session))[TRADING].daily_limit == 5000


async def test_one_replica_of_many_reads_each_interval_and_stores_the_quotas(
    ebay_client: EbayClient, sandbox: SandboxHandle, engine: AsyncEngine
) -> None:
    sessions = create_session_factory(engine)
    replicas = [LimitsReader(ebay_client, sessions, interval=3600) for _ in range(5)]
    since = sandbox.calls()[-1]["at"] if sandbox.calls() else 0.0
    results = await asyncio.gather(*(r.maybe_read() for r in replicas))
    assert sum(r is not None for r in results) == 1  # the others found the reading taken
    reads = [c for c in sandbox.calls(since=since) if c["route"] == "rate_limit"]
    assert len(reads) == 1
    async with unit_of_work(sessions) as session:
        read_at, quotas = await repository.latest_quotas(session)
    assert read_at is not None
    trading = [q for q in quotas if q["api_name"] == "TradingAPI" and q["resource"] == "TradingAPI"]
    assert trading
    assert trading[0]["limit"] == 5000
    assert all(
        set(q) == {"api_context", "api_name", "resource", "limit", "remaining", "window_s"}
        for q in quotas
    )


async def test_limits_stay_configured_when_the_app_token_is_refused(
    ebay_client: EbayClient, sandbox: SandboxHandle, engine: AsyncEngine
) -> None:
    sandbox.fault("rate_limit", "ebay_error", error_code="1100", status=403, count=10)
    sessions = create_session_factory(engine)
    reader = LimitsReader(ebay_client, sessions, interval=3600)
    assert await reader.maybe_read() is None
    async with unit_of_work(sessions) as session:
        assert await repository.reported_limits(session) == {}
        assert await repository.latest_quotas(session) == (None, [])
        # Tried again within minutes, not after the whole hour.
        wait = await session.scalar(
            text("SELECT extract(epoch FROM next_read_at - now()) FROM ebay_limits_reading")
        )
    assert wait is not None
    assert 0 < wait <= 301
