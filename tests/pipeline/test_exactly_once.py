"""Two schedulers and two token refreshers (real processes) on 200 due accounts: every account
refreshed exactly once, counted in the sandbox's call log."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.db.models import EbayToken
from connector_common.ebay import EbayClient
from connector_common.settings import parse_key_ring
from tests.fixtures.pipeline import eventually, make_org_row, seed_many
from tests.fixtures.sandbox import SandboxHandle
from tests.pipeline.conftest import Fleet

pytestmark = pytest.mark.slow

ACCOUNTS = 200
# Tokens from the seeding live 300 s, inside the 400 s lead: all due at once. Refreshed tokens
# live an hour: once refreshed, an account is not due again in this test.
TIMING = {
    "CONNECTOR_PIPELINE__REFRESH_LEAD_SECONDS": "400",
    "CONNECTOR_PIPELINE__SCHEDULER_BATCH_SIZE": "50",
    "CONNECTOR_WORKER__CONCURRENCY": "16",
    # Every refresh logs its own line at DEBUG: the secret check below reads them all.
    "CONNECTOR_LOG_LEVEL": "DEBUG",
}


async def test_two_schedulers_and_two_refreshers_refresh_each_due_account_exactly_once(
    fleet: Fleet,
    sandbox: SandboxHandle,
    sessions: SessionFactory,
    token_keys: str,
    ebay_client: EbayClient,
) -> None:
    sandbox.settings(access_token_lifetime=300)
    org = await make_org_row(sessions)
    cipher = TokenCipher(parse_key_ring(token_keys))
    accounts = await seed_many(sessions, cipher, ebay_client, sandbox, org, ACCOUNTS)
    sandbox.settings(access_token_lifetime=3600)
    since = time.time()
    services = [
        *(fleet.start("token-refresher", **TIMING) for _ in range(2)),
        *(fleet.start("scheduler", **TIMING) for _ in range(2)),
    ]
    await fleet.ready(*services)

    async def all_refreshed() -> bool:
        async with unit_of_work(sessions) as session:
            done = await session.scalar(
                select(func.count()).select_from(EbayToken).where(EbayToken.version >= 2)
            )
        return done == ACCOUNTS

    await eventually(all_refreshed, timeout=60, what="every account refreshed")
    await asyncio.sleep(3)  # three more ticks: nothing may be refreshed a second time
    refreshes = Counter(
        call["seller"]
        for call in sandbox.calls(route="token", since=since)
        # (the scheduler's application token, for eBay's rate limits, is no refresh)
        if call["status"] == 200 and call["outcome"] == "refreshed"
    )
    assert set(refreshes) == set(accounts.values())
    assert set(refreshes.values()) == {1}
    async with unit_of_work(sessions) as session:
        versions = set((await session.scalars(select(EbayToken.version))).all())
    assert versions == {2}
    # Both refreshers did part of the work (the consumer is shared, not duplicated).
    logs = [s.log() for s in services if s.name.startswith("token-refresher")]
    assert all('"token refreshed"' in log for log in logs)
    # 400 tokens went through these processes: not one in their logs.
    for log in (s.log() for s in services):
        assert "v^1.1#" not in log
        assert "V%5E1.1" not in log.upper()
