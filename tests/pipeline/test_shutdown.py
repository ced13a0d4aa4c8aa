"""SIGTERM in the middle of a batch: the refresher finishes what it holds, hands back the
rest, exits in time, and nothing is lost or done twice."""

from __future__ import annotations

import signal
import time
from collections import Counter

import httpx
import pytest
from nats.js import JetStreamContext
from sqlalchemy import func, select

from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.db.models import EbayToken
from connector_common.ebay import EbayClient
from connector_common.events import RefreshToken
from connector_common.messaging import Topology
from connector_common.settings import parse_key_ring
from tests.fixtures.pipeline import eventually, make_org_row, seed_many, work_left
from tests.fixtures.sandbox import SandboxHandle
from tests.pipeline.conftest import Fleet

pytestmark = pytest.mark.slow

ACCOUNTS = 30
BATCH = 10


async def refreshed(sessions: SessionFactory) -> int:
    async with unit_of_work(sessions) as session:
        count = await session.scalar(
            select(func.count()).select_from(EbayToken).where(EbayToken.version >= 2)
        )
    return int(count or 0)


async def test_sigterm_mid_batch_finishes_the_batch_and_loses_nothing(
    fleet: Fleet,
    sandbox: SandboxHandle,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
    ebay_client: EbayClient,
) -> None:
    org = await make_org_row(sessions)
    cipher = TokenCipher(parse_key_ring(token_keys))
    accounts = await seed_many(sessions, cipher, ebay_client, sandbox, org, ACCOUNTS)
    since = time.time()
    sandbox.fault("token", "latency", latency_ms=1500)
    worker_env = {
        "CONNECTOR_WORKER__CONCURRENCY": str(BATCH),
        "CONNECTOR_WORKER__ACK_WAIT_SECONDS": "5",
    }
    # All the work is queued before the refresher starts, so its first fetch is a full batch.
    for account_id in accounts:
        command = RefreshToken(
            account_id=account_id, org_id=org.id, token_version=1, reason="manual"
        )
        await js.publish(
            topology.refresh_subject, command.to_json(), headers={"Nats-Msg-Id": command.dedup_id()}
        )
    first = fleet.start("token-refresher", **worker_env)
    await fleet.ready(first)

    async def batch_in_work() -> bool:
        # In the handlers, not merely delivered: JetStream counts a fetched message as pending
        # before its handler starts, and a SIGTERM then rightly hands it back unprocessed.
        async with httpx.AsyncClient(timeout=2.0) as http:
            live = (await http.get(f"{first.url}/livez")).json()
        return bool(live["in_work"] >= BATCH)

    await eventually(batch_in_work, timeout=15, what="a batch in work")
    stopping = time.monotonic()
    first.signal(signal.SIGTERM)
    assert await first.wait_exit(timeout=25) == 0
    assert time.monotonic() - stopping < 10  # well inside the grace period
    assert await refreshed(sessions) >= BATCH  # the batch in hand was finished, not dropped
    assert "stopping: finishing the work in hand" in first.log()

    sandbox.clear_faults()
    second = fleet.start("token-refresher", **worker_env)
    await fleet.ready(second)

    async def all_done() -> bool:
        return await refreshed(sessions) == ACCOUNTS and await work_left(js, topology) == 0

    await eventually(all_done, timeout=30, what="every account refreshed, the queue empty")
    refreshes = Counter(
        call["seller"]
        for call in sandbox.calls(route="token", since=since)
        if call["status"] == 200 and call["outcome"] == "refreshed"
    )
    assert set(refreshes) == set(accounts.values())
    assert set(refreshes.values()) == {1}  # nothing lost, nothing done twice
