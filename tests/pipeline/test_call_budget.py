"""The daily call counters with the real processes: two schedulers, two token refreshers and two
health checkers count exactly the calls the sandbox received, and the counts survive a restart
of every process."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.db.models import CallCount, EbayAccount, EbayToken, HealthCheck
from connector_common.ebay import EbayClient
from connector_common.events import utcnow
from connector_common.settings import parse_key_ring
from tests.fixtures.pipeline import eventually, make_org_row, seed_many
from tests.fixtures.sandbox import SandboxHandle
from tests.pipeline.conftest import Fleet

pytestmark = pytest.mark.slow

ACCOUNTS = 30
# The sandbox's call log outcome on the token route -> the grant it used.
TOKEN_OUTCOMES = {
    "refreshed": "oauth.refresh_token",
    "app_token": "oauth.client_credentials",
    "exchanged": "oauth.authorization_code",
}
ROUTES = {"trading": "trading", "identity": "identity", "rate_limit": "analytics"}


def sandbox_counts(sandbox: SandboxHandle, since: float) -> Counter[str]:
    """The calls the sandbox received, per budget bucket."""
    found: Counter[str] = Counter()
    for call in sandbox.calls(since=since):
        if call["route"] == "token":
            found[TOKEN_OUTCOMES[call["outcome"]]] += 1
        else:
            found[ROUTES[call["route"]]] += 1
    return found


async def our_counts(sessions: SessionFactory) -> Counter[str]:
    async with unit_of_work(sessions) as session:
        rows = await session.execute(
            select(CallCount.bucket, func.sum(CallCount.calls)).group_by(CallCount.bucket)
        )
        return Counter({bucket: int(calls) for bucket, calls in rows})


async def checks(sessions: SessionFactory) -> int:
    async with unit_of_work(sessions) as session:
        return int(await session.scalar(select(func.count()).select_from(HealthCheck)) or 0)


def start_everything(fleet: Fleet) -> None:
    for service in ("scheduler", "token-refresher", "health-checker"):
        for _ in range(2):
            fleet.start(service)


async def test_two_of_each_count_every_call_exactly_and_the_counts_survive_a_restart(
    fleet: Fleet,
    sandbox: SandboxHandle,
    sessions: SessionFactory,
    token_keys: str,
    ebay_client: EbayClient,
) -> None:
    sandbox.settings(access_token_lifetime=300)  # inside the 600 s lead: every token is due
    org = await make_org_row(sessions)
    cipher = TokenCipher(parse_key_ring(token_keys))
    await seed_many(sessions, cipher, ebay_client, sandbox, org, ACCOUNTS)
    sandbox.settings(access_token_lifetime=3600)
    async with unit_of_work(sessions) as session:
        await session.execute(update(EbayAccount).values(next_health_check_at=utcnow()))
    since = time.time()  # the seeding's calls were the test's own, not counted

    start_everything(fleet)
    await fleet.ready(*fleet.services)

    async def all_done() -> bool:
        async with unit_of_work(sessions) as session:
            refreshed = await session.scalar(
                select(func.count()).select_from(EbayToken).where(EbayToken.version >= 2)
            )
        return refreshed == ACCOUNTS and await checks(sessions) == ACCOUNTS

    await eventually(all_done, timeout=90, what="every account refreshed and checked")
    fleet.stop_all()  # each process adds its last counts as it stops
    first = sandbox_counts(sandbox, since)
    assert first["trading"] >= ACCOUNTS
    assert first["oauth.refresh_token"] >= ACCOUNTS
    assert await our_counts(sessions) == first

    # New processes: the counters carry on from what is stored. (Refreshes: a new token
    # version is new work at once, where a repeated health check of the same slot would wait
    # out JetStream's de-duplication window.)
    async with unit_of_work(sessions) as session:
        await session.execute(
            update(EbayToken).values(access_expires_at=utcnow() + timedelta(minutes=1))
        )
    await fleet.ready(fleet.start("scheduler"), fleet.start("token-refresher"))

    async def refreshed_again() -> bool:
        async with unit_of_work(sessions) as session:
            done = await session.scalar(
                select(func.count()).select_from(EbayToken).where(EbayToken.version >= 3)
            )
        return done == ACCOUNTS

    await eventually(refreshed_again, timeout=90, what="every account refreshed again")
    fleet.stop_all()
    total = sandbox_counts(sandbox, since)
    print(f"calls after the first run: {dict(first)}; after the restart: {dict(total)}")
    assert total["oauth.refresh_token"] >= 2 * ACCOUNTS
    assert await our_counts(sessions) == total
