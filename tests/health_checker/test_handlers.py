"""The health checker's consumer on real JetStream, PostgreSQL and the sandbox (in-process)."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.crypto import TokenCipher
from connector_common.db.engine import create_session_factory
from connector_common.ebay import EbayClient
from connector_common.events import CheckHealth, utcnow
from connector_common.messaging import Topology
from connector_common.settings import EbaySettings, parse_key_ring
from connector_common.worker.components import ConsumerComponent
from connector_common.worker.deadletter import REASON_HEADER
from connector_health_checker.main import SPEC
from tests.fixtures.pipeline import (
    account_row,
    connect_seller,
    dead_letters,
    eventually,
    make_org_row,
    work_left,
    worker_context,
)
from tests.fixtures.sandbox import SandboxHandle


async def test_malformed_and_unknown_account_checks_are_dead_lettered_and_work_goes_on(
    engine: AsyncEngine,
    nats_client: NatsClient,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
    ebay_settings: EbaySettings,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
) -> None:
    sessions = create_session_factory(engine)
    org = await make_org_row(sessions)
    cipher = TokenCipher(parse_key_ring(token_keys))
    account_id = await connect_seller(
        sessions,
        cipher,
        ebay_client,
        sandbox,
        "demo_au_seller",
        org=org,
        next_health_check_at=utcnow(),
    )
    unknown = CheckHealth(account_id=uuid.uuid4(), org_id=org.id, slot=7)
    good = CheckHealth(account_id=account_id, org_id=org.id, slot=7)
    async with worker_context(
        engine=engine,
        nats_client=nats_client,
        js=js,
        topology=topology,
        token_keys=token_keys,
        ebay=ebay_settings,
    ) as context:
        component = ConsumerComponent(context, SPEC)
        await component.start()
        try:
            for payload, msg_id in (
                (b"\xff\xfe not even text", "bad"),
                (unknown.to_json(), unknown.dedup_id()),
                (good.to_json(), good.dedup_id()),
            ):
                await js.publish(topology.health_subject, payload, headers={"Nats-Msg-Id": msg_id})

            async def checked() -> bool:
                return (await account_row(sessions, account_id)).last_health_outcome == "healthy"

            async def drained() -> bool:
                return await work_left(js, topology) == 0

            await eventually(checked, what="the good check recorded")
            await eventually(drained, what="the WORK stream emptied")
        finally:
            await component.stop()
    letters = await dead_letters(js, topology)
    assert [subject for subject, _h, _p in letters] == [topology.dlq_subject("health")] * 2
    assert letters[0][1][REASON_HEADER].startswith("malformed health request")
    assert letters[0][2] == b"\xff\xfe not even text"
    assert letters[1][1][REASON_HEADER] == f"unknown account {unknown.account_id}"
