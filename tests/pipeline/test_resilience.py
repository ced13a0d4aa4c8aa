"""eBay rate limits and outages, with the services as real processes."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest
from nats.js import JetStreamContext

from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory
from connector_common.ebay import EbayClient
from connector_common.events import CheckHealth, utcnow
from connector_common.messaging import Topology
from connector_common.settings import parse_key_ring
from connector_common.status import AccountStatus, account_status
from tests.fixtures.pipeline import account_row, connect_seller, eventually, make_org_row, token_row
from tests.fixtures.sandbox import SandboxHandle
from tests.pipeline.conftest import Fleet

pytestmark = pytest.mark.slow

SELLERS = ("demo_us_seller", "demo_uk_seller", "demo_de_seller")
RETRY_AFTER = 3.0
TIMING = {"CONNECTOR_PIPELINE__REFRESH_LEAD_SECONDS": "955"}  # 960 s tokens: refresh every ~5 s


async def test_rate_limits_and_an_outage_are_waited_out_and_leave_no_account_in_error(
    fleet: Fleet,
    sandbox: SandboxHandle,
    sessions: SessionFactory,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
    ebay_client: EbayClient,
) -> None:
    sandbox.settings(access_token_lifetime=960)
    org = await make_org_row(sessions)
    cipher = TokenCipher(parse_key_ring(token_keys))
    accounts = {
        seller: await connect_seller(
            sessions, cipher, ebay_client, sandbox, seller, org=org, next_health_check_at=utcnow()
        )
        for seller in SELLERS
    }
    workers = [
        fleet.start("scheduler", **TIMING),
        fleet.start("token-refresher", **TIMING),
        # The outage (4 s) must be shorter than the checker's retries, or "eBay unreachable"
        # is the right verdict: redeliveries now come as soon as their delay ends (no batch to
        # wait for), so three attempts fit in 4 s; five (nak delays 0.5, 1, 2, 4 s) do not.
        fleet.start("health-checker", **TIMING, CONNECTOR_PIPELINE__HEALTH_ATTEMPTS="5"),
    ]
    await fleet.ready(*workers)

    async def versions_above(minimum: dict[uuid.UUID, int]) -> bool:
        for account_id, version in minimum.items():
            if (await token_row(sessions, account_id)).version <= version:
                return False
        return True

    baseline = {a: 1 for a in accounts.values()}
    await eventually(lambda: versions_above(baseline), timeout=20, what="the first refreshes")

    # Phase 1: eBay answers the next refreshes with 429 and asks for 3 s of patience. The
    # workers' own retry budget (2 s) is shorter, so the wait happens as a delayed redelivery.
    since = time.time()
    sandbox.fault("token", "rate_limit", retry_after=RETRY_AFTER, count=3)
    after_limits = {a: (await token_row(sessions, a)).version + 1 for a in accounts.values()}
    await eventually(lambda: versions_above(after_limits), timeout=30, what="refreshes after 429s")
    limited = 0
    for seller in SELLERS:
        calls = sandbox.calls(seller=seller, route="token", since=since)
        for call, following in itertools.pairwise(calls):
            if call["status"] == 429:
                limited += 1
                assert following["at"] - call["at"] >= RETRY_AFTER, (seller, calls)
    assert limited == 3

    # Phase 2: a 4-second outage of everything, while checks are requested.
    outage_start = time.time()
    sandbox.fault("*", "error", status=503, duration=4.0)
    for account_id in accounts.values():
        check = CheckHealth(
            account_id=account_id, org_id=org.id, slot=int(time.time()), reason="manual"
        )
        await js.publish(
            topology.health_subject, check.to_json(), headers={"Nats-Msg-Id": check.dedup_id()}
        )
    after_outage = {a: (await token_row(sessions, a)).version + 1 for a in accounts.values()}
    await eventually(lambda: versions_above(after_outage), timeout=40, what="refreshes after it")

    async def checked_after_outage() -> bool:
        for account_id in accounts.values():
            account = await account_row(sessions, account_id)
            if account.last_health_at is None or account.last_health_at.timestamp() < (
                outage_start + 4.0
            ):
                return False
        return True

    await eventually(checked_after_outage, timeout=40, what="health checks after the outage")
    failed = [c for c in sandbox.calls(since=outage_start) if c["status"] == 503]
    assert failed, "the outage was not noticed"

    for account_id in accounts.values():
        account = await account_row(sessions, account_id)
        token = await token_row(sessions, account_id)
        assert (token.consecutive_failures, token.last_refresh_error, token.retry_at) == (
            0,
            None,
            None,
        )
        assert account.last_health_outcome == "healthy"
        status = account_status(account, token, _Health(account.last_health_outcome), utcnow())
        assert status is AccountStatus.HEALTHY


class _Health:
    def __init__(self, outcome: str | None) -> None:
        self.outcome = outcome or ""
