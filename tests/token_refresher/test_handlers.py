"""The token refresher's consumer on real JetStream, PostgreSQL and the sandbox (in-process)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, create_session_factory
from connector_common.ebay import EbayClient
from connector_common.events import RefreshToken
from connector_common.messaging import Topology
from connector_common.settings import EbaySettings, parse_key_ring
from connector_common.worker.components import ConsumerComponent
from connector_common.worker.deadletter import REASON_HEADER
from connector_token_refresher.main import SPEC
from tests.fixtures.pipeline import (
    connect_seller,
    dead_letters,
    eventually,
    make_org_row,
    outbox_types,
    token_row,
    work_left,
    worker_context,
)
from tests.fixtures.sandbox import SandboxHandle

SELLER = "demo_de_seller"
Running = Callable[..., AbstractAsyncContextManager[ConsumerComponent]]


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return create_session_factory(engine)


@pytest.fixture
async def account(
    sessions: SessionFactory,
    token_keys: str,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
) -> tuple[uuid.UUID, uuid.UUID]:
    """(org id, account id) of a connected German seller."""
    org = await make_org_row(sessions)
    cipher = TokenCipher(parse_key_ring(token_keys))
    return org.id, await connect_seller(sessions, cipher, ebay_client, sandbox, SELLER, org=org)


@pytest.fixture
def refresher(
    engine: AsyncEngine,
    nats_client: NatsClient,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
    ebay_settings: EbaySettings,
) -> Running:
    @asynccontextmanager
    async def run(
        ebay: dict[str, Any] | None = None, **worker: Any
    ) -> AsyncIterator[ConsumerComponent]:
        settings = ebay_settings.model_copy(update=ebay or {})
        async with worker_context(
            engine=engine,
            nats_client=nats_client,
            js=js,
            topology=topology,
            token_keys=token_keys,
            ebay=settings,
            worker=worker,
        ) as context:
            component = ConsumerComponent(context, SPEC)
            await component.start()
            try:
                yield component
            finally:
                await component.stop()

    return run


async def publish(js: JetStreamContext, topology: Topology, payload: bytes, msg_id: str) -> None:
    await js.publish(topology.refresh_subject, payload, headers={"Nats-Msg-Id": msg_id})


def command(account: tuple[uuid.UUID, uuid.UUID], version: int = 1) -> RefreshToken:
    return RefreshToken(
        account_id=account[1], org_id=account[0], token_version=version, reason="manual"
    )


async def test_a_refresh_request_refreshes_the_token_and_is_acknowledged(
    refresher: Running,
    js: JetStreamContext,
    topology: Topology,
    sessions: SessionFactory,
    account: tuple[uuid.UUID, uuid.UUID],
) -> None:
    async with refresher():
        cmd = command(account)
        await publish(js, topology, cmd.to_json(), cmd.dedup_id())

        async def refreshed() -> bool:
            return (await token_row(sessions, account[1])).version == 2

        await eventually(refreshed, what="the token refreshed")
        await eventually(lambda: _empty(js, topology), what="the message acknowledged")
    assert await outbox_types(sessions, account[1]) == ["token.refreshed"]


async def _empty(js: JetStreamContext, topology: Topology) -> bool:
    return await work_left(js, topology) == 0


async def test_malformed_and_unknown_account_requests_are_dead_lettered_and_work_goes_on(
    refresher: Running,
    js: JetStreamContext,
    topology: Topology,
    sessions: SessionFactory,
    account: tuple[uuid.UUID, uuid.UUID],
) -> None:
    unknown = RefreshToken(account_id=uuid.uuid4(), org_id=account[0], token_version=1)
    good = command(account)
    async with refresher():
        await publish(js, topology, b'{"account_id": "not a uuid"', "bad-1")
        await publish(js, topology, unknown.to_json(), unknown.dedup_id())
        await publish(js, topology, good.to_json(), good.dedup_id())

        async def refreshed() -> bool:
            return (await token_row(sessions, account[1])).version == 2

        await eventually(refreshed, what="the good request processed")
        await eventually(lambda: _empty(js, topology), what="the WORK stream emptied")
    letters = await dead_letters(js, topology)
    assert [subject for subject, _h, _p in letters] == [topology.dlq_subject("refresh")] * 2
    reasons = [headers[REASON_HEADER] for _s, headers, _p in letters]
    assert reasons[0].startswith("malformed refresh request")
    assert reasons[1] == f"unknown account {unknown.account_id}"
    assert letters[0][2] == b'{"account_id": "not a uuid"'  # the original payload, unchanged
    assert letters[1][1]["Connector-Original-Msg-Id"] == unknown.dedup_id()


async def test_a_transient_failure_is_retried_later_and_then_succeeds(
    refresher: Running,
    js: JetStreamContext,
    topology: Topology,
    sessions: SessionFactory,
    sandbox: SandboxHandle,
    account: tuple[uuid.UUID, uuid.UUID],
) -> None:
    # Three 503s use up the client's own three attempts: the message must come back later.
    sandbox.fault("token", "error", status=503, count=3, seller=SELLER)
    async with refresher():
        cmd = command(account)
        await publish(js, topology, cmd.to_json(), cmd.dedup_id())

        async def refreshed() -> bool:
            token = await token_row(sessions, account[1])
            return token.version == 2 and token.consecutive_failures == 0

        await eventually(refreshed, what="the retry succeeded")
    assert await outbox_types(sessions, account[1]) == ["token.refresh_failed", "token.refreshed"]
    info = await js.consumer_info(topology.work_stream, topology.refresher_durable)
    assert info.num_redelivered == 0  # settled; the one redelivery is done


async def test_a_rate_limited_refresh_is_not_retried_before_ebay_allows(
    refresher: Running,
    js: JetStreamContext,
    topology: Topology,
    sessions: SessionFactory,
    sandbox: SandboxHandle,
    account: tuple[uuid.UUID, uuid.UUID],
) -> None:
    sandbox.fault("token", "rate_limit", retry_after=2, count=1, seller=SELLER)
    since = time.time()
    # The client's own retry budget is shorter than eBay's wait: the message is naked instead.
    async with refresher(ebay={"max_retry_seconds": 1.0}):
        cmd = command(account)
        await publish(js, topology, cmd.to_json(), cmd.dedup_id())

        async def refreshed() -> bool:
            return (await token_row(sessions, account[1])).version == 2

        await eventually(refreshed, what="the refresh after the wait")
    calls = sandbox.calls(seller=SELLER, route="token", since=since)
    assert [c["status"] for c in calls] == [429, 200]
    assert calls[1]["at"] - calls[0]["at"] >= 2.0


async def test_a_request_whose_deliveries_are_spent_is_dead_lettered(
    refresher: Running,
    js: JetStreamContext,
    topology: Topology,
    sessions: SessionFactory,
    sandbox: SandboxHandle,
    account: tuple[uuid.UUID, uuid.UUID],
) -> None:
    sandbox.fault("token", "error", status=503, seller=SELLER)
    async with refresher(max_deliver=2, retry_max_seconds=0.3):
        cmd = command(account)
        await publish(js, topology, cmd.to_json(), cmd.dedup_id())

        async def dead() -> bool:
            return len(await dead_letters(js, topology)) == 1

        await eventually(dead, what="the dead letter")
        await eventually(lambda: _empty(js, topology), what="the WORK stream emptied")
    [(_subject, headers, _payload)] = await dead_letters(js, topology)
    assert headers[REASON_HEADER].startswith("retries spent after 2 deliveries")
    assert headers["Connector-Deliveries"] == "2"
    token = await token_row(sessions, account[1])
    assert token.consecutive_failures == 2
    assert token.last_refresh_error is not None


async def test_a_long_ebay_call_keeps_its_message_from_being_redelivered(
    refresher: Running,
    js: JetStreamContext,
    topology: Topology,
    sessions: SessionFactory,
    sandbox: SandboxHandle,
    account: tuple[uuid.UUID, uuid.UUID],
) -> None:
    sandbox.fault("token", "latency", latency_ms=4500, count=1, seller=SELLER)
    slow = {"read_timeout_seconds": 10.0}
    # Two replicas: the idle one would receive the message if its AckWait ran out.
    async with refresher(ebay=slow, ack_wait_seconds=3), refresher(ebay=slow, ack_wait_seconds=3):
        cmd = command(account)
        await publish(js, topology, cmd.to_json(), cmd.dedup_id())

        async def refreshed() -> bool:
            return (await token_row(sessions, account[1])).version == 2

        await eventually(refreshed, what="the slow refresh")
        await eventually(lambda: _empty(js, topology), what="the message acknowledged")
        info = await js.consumer_info(topology.work_stream, topology.refresher_durable)
    assert info.delivered.consumer_seq == 1  # delivered once: in-progress acks held it
    assert len(sandbox.calls(seller=SELLER, route="token")) == 2  # the exchange and one refresh


async def test_an_idle_consumer_keeps_reporting_loop_progress(
    refresher: Running, js: JetStreamContext, topology: Topology
) -> None:
    async with refresher() as component:
        progress = component.context.progress
        start = progress.cycles

        async def cycled() -> bool:
            return progress.cycles >= start + 3  # empty fetches (0.5 s each) are progress

        await eventually(cycled, timeout=10, what="fetch cycles on an empty queue")
        assert progress.alive()[0]
