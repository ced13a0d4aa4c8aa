"""Health checks against the sandbox over real HTTP, recorded in real PostgreSQL."""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import timedelta

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, create_session_factory, unit_of_work
from connector_common.db.models import (
    EbayAccount,
    EbayToken,
    HealthCheck,
    OutboxMessage,
    UsernameChange,
)
from connector_common.ebay import EbayClient
from connector_common.events import AccountUsernameChanged, CheckHealth, parse_event, utcnow
from connector_common.settings import parse_key_ring
from connector_common.tokens.store import StoreTiming, TokenStore
from connector_health_checker.repository import Verdict, record_verdict
from connector_health_checker.service import CheckOutcome, HealthChecker, HealthTiming
from tests.fixtures.pipeline import account_row, connect_seller, make_org_row, outbox_types
from tests.fixtures.sandbox import SandboxHandle

SELLER = "demo_ca_seller"
INTERVAL, JITTER = 900.0, 90.0


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return create_session_factory(engine)


@pytest.fixture
def checker(sessions: SessionFactory, token_keys: str, ebay_client: EbayClient) -> HealthChecker:
    store = TokenStore(
        sessions,
        TokenCipher(parse_key_ring(token_keys)),
        ebay_client,
        owner="checker",
        namespace="ebay",
        timing=StoreTiming(30, 600, 1, 60, 3600),
    )
    return HealthChecker(
        sessions=sessions,
        client=ebay_client,
        store=store,
        namespace="ebay",
        timing=HealthTiming(INTERVAL, JITTER, 3, 1, 60, 5),
        meter=MeterProvider().get_meter("tests"),
        on_commit=lambda: None,
    )


@pytest.fixture
async def account(
    sessions: SessionFactory, token_keys: str, ebay_client: EbayClient, sandbox: SandboxHandle
) -> CheckHealth:
    """A health request for a connected Canadian seller, due now."""
    org = await make_org_row(sessions)
    cipher = TokenCipher(parse_key_ring(token_keys))
    account_id = await connect_seller(
        sessions, cipher, ebay_client, sandbox, SELLER, org=org, next_health_check_at=utcnow()
    )
    return CheckHealth(account_id=account_id, org_id=org.id, slot=1)


async def history(sessions: SessionFactory, account_id: uuid.UUID) -> list[HealthCheck]:
    async with unit_of_work(sessions) as session:
        rows = await session.scalars(
            select(HealthCheck).where(HealthCheck.account_id == account_id).order_by(HealthCheck.id)
        )
        return list(rows)


async def test_a_healthy_check_is_recorded_in_history_and_on_the_account(
    checker: HealthChecker, sessions: SessionFactory, account: CheckHealth
) -> None:
    result = await checker.check(account, attempt=1)
    assert result.outcome is CheckOutcome.HEALTHY
    [row] = await history(sessions, account.account_id)
    assert (row.outcome, row.api, row.http_status) == ("healthy", "trading", 200)
    assert row.latency_ms is not None
    assert row.ebay_request_id
    stored = await account_row(sessions, account.account_id)
    assert stored.last_health_outcome == "healthy"
    assert stored.last_health_at == row.checked_at
    assert stored.health_requested_at is None
    assert stored.next_health_check_at is not None
    delay = (stored.next_health_check_at - row.checked_at).total_seconds()
    assert INTERVAL - JITTER <= delay <= INTERVAL + JITTER
    assert await outbox_types(sessions, account.account_id) == ["health.checked", "health.changed"]


async def test_health_changed_is_announced_only_when_the_verdict_changes(
    checker: HealthChecker,
    sessions: SessionFactory,
    sandbox: SandboxHandle,
    account: CheckHealth,
) -> None:
    await checker.check(account, attempt=1)
    await checker.check(account, attempt=1)
    sandbox.suspend(SELLER)
    await checker.check(account, attempt=1)
    assert await outbox_types(sessions, account.account_id) == [
        "health.checked",
        "health.changed",
        "health.checked",
        "health.checked",
        "health.changed",
    ]


async def test_a_suspended_seller_is_unhealthy_with_the_reason(
    checker: HealthChecker, sessions: SessionFactory, sandbox: SandboxHandle, account: CheckHealth
) -> None:
    sandbox.suspend(SELLER)
    result = await checker.check(account, attempt=1)
    assert result.outcome is CheckOutcome.UNHEALTHY
    [row] = await history(sessions, account.account_id)
    assert row.ebay_error_code == "841"
    assert row.detail is not None
    assert row.detail.startswith("seller suspended")
    assert (await account_row(sessions, account.account_id)).last_health_error == row.detail


async def test_an_expired_access_token_is_refreshed_once_and_the_check_retried(
    checker: HealthChecker, sessions: SessionFactory, sandbox: SandboxHandle, account: CheckHealth
) -> None:
    sandbox.invalidate_tokens(SELLER, reason="expired")
    since = time.time()
    result = await checker.check(account, attempt=1)
    assert result.outcome is CheckOutcome.HEALTHY
    assert [c["status"] for c in sandbox.calls(seller=SELLER, route="token", since=since)] == [200]
    trading = sandbox.calls(seller=SELLER, route="trading", since=since)
    assert len(trading) == 2  # refused once, then answered with the new token
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, account.account_id)
        assert token is not None
        assert token.version == 2


async def test_a_token_expired_in_our_records_is_refreshed_before_asking_ebay(
    checker: HealthChecker, sessions: SessionFactory, sandbox: SandboxHandle, account: CheckHealth
) -> None:
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, account.account_id)
        assert token is not None
        token.access_expires_at = utcnow() - timedelta(seconds=1)
    since = time.time()
    assert (await checker.check(account, attempt=1)).outcome is CheckOutcome.HEALTHY
    assert len(sandbox.calls(seller=SELLER, route="trading", since=since)) == 1


async def test_ebay_unreachable_is_retried_then_unhealthy_on_the_last_attempt(
    checker: HealthChecker, sessions: SessionFactory, sandbox: SandboxHandle, account: CheckHealth
) -> None:
    sandbox.fault("trading", "error", status=503, seller=SELLER)
    first = await checker.check(account, attempt=1)
    assert first.outcome is CheckOutcome.RETRY
    assert first.retry_in is not None
    assert await history(sessions, account.account_id) == []
    last = await checker.check(account, attempt=3)
    assert last.outcome is CheckOutcome.UNHEALTHY
    [row] = await history(sessions, account.account_id)
    assert row.detail is not None
    assert row.detail.startswith("eBay unreachable after 3 attempts")
    assert row.http_status == 503


async def test_a_changed_username_is_recorded_and_the_user_id_kept(
    checker: HealthChecker, sessions: SessionFactory, sandbox: SandboxHandle, account: CheckHealth
) -> None:
    before = await account_row(sessions, account.account_id)
    sandbox.rename(SELLER, "maple_goods_2026")
    assert (await checker.check(account, attempt=1)).outcome is CheckOutcome.HEALTHY
    after = await account_row(sessions, account.account_id)
    assert after.username == "maple_goods_2026"
    assert after.ebay_user_id == before.ebay_user_id
    assert (after.site_id, after.site_code, after.marketplace_id) == (2, "Canada", "EBAY_CA")


async def test_a_username_change_is_kept_in_history_and_announced_once(
    checker: HealthChecker, sessions: SessionFactory, sandbox: SandboxHandle, account: CheckHealth
) -> None:
    assert (await checker.check(account, attempt=1)).outcome is CheckOutcome.HEALTHY
    sandbox.rename(SELLER, "maple_goods_2026")
    for _ in range(3):  # the change is seen once; later checks find nothing new
        await checker.check(account, attempt=1)
    async with unit_of_work(sessions) as session:
        changes = (
            await session.scalars(
                select(UsernameChange).where(UsernameChange.account_id == account.account_id)
            )
        ).all()
        payloads = (
            await session.scalars(
                select(OutboxMessage.payload).where(
                    OutboxMessage.subject.endswith("account.username_changed")
                )
            )
        ).all()
    [change] = changes
    assert (change.old_username, change.new_username, change.source) == (
        SELLER,
        "maple_goods_2026",
        "health_check",
    )
    [payload] = payloads
    event = parse_event(payload.encode())
    assert isinstance(event, AccountUsernameChanged)
    assert (event.old_username, event.new_username) == (SELLER, "maple_goods_2026")
    assert event.account_id == account.account_id


async def test_a_check_finishing_after_the_seller_was_purged_writes_nothing_back(
    checker: HealthChecker, sessions: SessionFactory, account: CheckHealth
) -> None:
    """eBay's deletion notification purged the account while GetUser was in flight."""
    async with unit_of_work(sessions) as session:
        row = await session.get(EbayAccount, account.account_id)
        assert row is not None
        now = utcnow()
        row.is_active, row.deactivated_at, row.deleted_by_ebay_at = False, now, now
        row.ebay_user_id = row.username = row.eias_token = None
        row.marketplace_id = row.site_code = None
        row.site_id = None
    verdict = Verdict(
        checked_at=utcnow(),
        outcome="healthy",
        reason=None,
        latency_ms=10,
        http_status=200,
        ebay_error_code=None,
        ebay_request_id="r",
        api="trading",
        username="demo_ca_seller",
        eias_token="EIAS==",
        site_id=2,
        site_code="Canada",
        marketplace_id="EBAY_CA",
    )
    async with unit_of_work(sessions) as session:
        assert await record_verdict(session, account.account_id, verdict, None) is None
    stored = await account_row(sessions, account.account_id)
    assert (stored.username, stored.eias_token, stored.site_id) == (None, None, None)
    assert await history(sessions, account.account_id) == []


async def test_an_ended_refresh_token_is_not_checked(
    checker: HealthChecker, sessions: SessionFactory, sandbox: SandboxHandle, account: CheckHealth
) -> None:
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, account.account_id)
        assert token is not None
        token.refresh_expires_at = utcnow() - timedelta(seconds=1)
    since = time.time()
    assert (await checker.check(account, attempt=1)).outcome is CheckOutcome.SKIPPED
    assert sandbox.calls(seller=SELLER, since=since) == []


async def test_inactive_and_reconnect_required_accounts_are_not_checked(
    checker: HealthChecker, sessions: SessionFactory, sandbox: SandboxHandle, account: CheckHealth
) -> None:
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, account.account_id)
        assert token is not None
        token.reconnect_required_at = utcnow()
    since = time.time()
    assert (await checker.check(account, attempt=1)).outcome is CheckOutcome.SKIPPED
    async with unit_of_work(sessions) as session:
        row = await session.get(EbayAccount, account.account_id)
        assert row is not None
        row.is_active, row.deactivated_at = False, utcnow()
    assert (await checker.check(account, attempt=1)).outcome is CheckOutcome.SKIPPED
    assert sandbox.calls(seller=SELLER, route="trading", since=since) == []


async def test_a_request_for_an_unknown_or_foreign_account_is_refused(
    checker: HealthChecker, account: CheckHealth
) -> None:
    unknown = CheckHealth(account_id=uuid.uuid4(), org_id=account.org_id, slot=1)
    foreign = CheckHealth(account_id=account.account_id, org_id=uuid.uuid4(), slot=1)
    assert (await checker.check(unknown, attempt=1)).outcome is CheckOutcome.UNKNOWN_ACCOUNT
    assert (await checker.check(foreign, attempt=1)).outcome is CheckOutcome.UNKNOWN_ACCOUNT


def test_jitter_spreads_the_next_checks_over_the_whole_window(checker: HealthChecker) -> None:
    now = utcnow()
    delays = [(checker.next_check_at(now) - now).total_seconds() for _ in range(500)]
    assert all(INTERVAL - JITTER <= d <= INTERVAL + JITTER for d in delays)
    assert max(delays) - min(delays) > 1.5 * JITTER  # spread, not bunched
    assert len({round(d) for d in delays}) > 100  # not falling on the same seconds
    assert abs(statistics.mean(delays) - INTERVAL) < JITTER / 4


async def test_a_revoked_seller_found_by_a_check_is_unhealthy_and_no_longer_scheduled(
    checker: HealthChecker, sessions: SessionFactory, sandbox: SandboxHandle, account: CheckHealth
) -> None:
    sandbox.revoke(SELLER)  # access tokens refused, and the refresh gets invalid_grant
    result = await checker.check(account, attempt=1)
    assert result.outcome is CheckOutcome.UNHEALTHY
    assert result.reason is not None
    assert result.reason.startswith("the seller must reconnect")
    stored = await account_row(sessions, account.account_id)
    assert stored.next_health_check_at is None
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, account.account_id)
        assert token is not None
        assert token.reconnect_required_at is not None
    assert await outbox_types(sessions, account.account_id) == [
        "account.reconnect_required",
        "health.checked",
        "health.changed",
    ]
