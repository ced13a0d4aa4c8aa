"""The token store against real PostgreSQL and the sandbox over real HTTP."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, create_session_factory
from connector_common.ebay import CircuitBreaker, EbayClient, PostgresBreakerStore
from connector_common.settings import EbaySettings, parse_key_ring
from connector_common.tokens.access import current_token, token_after_rejection
from connector_common.tokens.store import (
    RefreshOutcome,
    RefreshRequest,
    StoreTiming,
    TokenStore,
)
from tests.fixtures.pipeline import (
    account_row,
    connect_seller,
    eventually,
    make_org_row,
    outbox_types,
    token_row,
)
from tests.fixtures.sandbox import SandboxHandle

SELLER = "demo_uk_seller"


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return create_session_factory(engine)


@pytest.fixture
def cipher(token_keys: str) -> TokenCipher:
    return TokenCipher(parse_key_ring(token_keys))


def make_store(
    sessions: SessionFactory,
    cipher: TokenCipher,
    client: EbayClient,
    owner: str = "a",
    **timing: float,
) -> TokenStore:
    values = {
        "lease_seconds": 30.0,
        "refresh_lead_seconds": 600.0,
        "retry_base_seconds": 5.0,
        "retry_max_seconds": 300.0,
        "permanent_retry_seconds": 3600.0,
        **timing,
    }
    return TokenStore(
        sessions, cipher, client, owner=owner, namespace="ebay", timing=StoreTiming(**values)
    )


@pytest.fixture
async def account_id(
    sessions: SessionFactory, cipher: TokenCipher, ebay_client: EbayClient, sandbox: SandboxHandle
) -> uuid.UUID:
    org = await make_org_row(sessions)
    return await connect_seller(sessions, cipher, ebay_client, sandbox, SELLER, org=org)


def refresh_calls(sandbox: SandboxHandle, since: float) -> int:
    return len(sandbox.calls(seller=SELLER, route="token", since=since))


async def test_refresh_stores_a_new_encrypted_token_and_announces_it(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
    account_id: uuid.UUID,
) -> None:
    before = await token_row(sessions, account_id)
    old_access = cipher.decrypt(before.access_token_ct or b"", account_id, "access_token")
    result = await make_store(sessions, cipher, ebay_client).refresh(
        RefreshRequest(account_id, token_version=before.version, reason="manual")
    )
    assert result.outcome is RefreshOutcome.REFRESHED
    after = await token_row(sessions, account_id)
    new_access = cipher.decrypt(after.access_token_ct or b"", account_id, "access_token")
    assert new_access != old_access
    assert new_access.encode() not in (after.access_token_ct or b"")
    assert after.version == before.version + 1 == result.token_version
    assert after.lease_epoch == before.lease_epoch + 2  # the claim and the write
    assert after.last_refreshed_at is not None
    assert after.lease_owner is None
    # eBay sent no new refresh token: the old one is kept (re-encrypted with the newest key).
    assert cipher.decrypt(after.refresh_token_ct or b"", account_id, "refresh_token") == (
        cipher.decrypt(before.refresh_token_ct or b"", account_id, "refresh_token")
    )
    assert await outbox_types(sessions, account_id) == ["token.refreshed"]


async def test_a_request_for_a_fresh_token_is_done_without_calling_ebay(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
    account_id: uuid.UUID,
) -> None:
    token = await token_row(sessions, account_id)
    since = time.time()
    store = make_store(sessions, cipher, ebay_client, refresh_lead_seconds=60)
    scheduled = await store.refresh(RefreshRequest(account_id, token_version=token.version))
    older = await store.refresh(
        RefreshRequest(account_id, token_version=token.version - 1, reason="manual")
    )
    assert scheduled.outcome is RefreshOutcome.ALREADY_FRESH
    assert older.outcome is RefreshOutcome.ALREADY_FRESH
    assert refresh_calls(sandbox, since) == 0
    assert (await token_row(sessions, account_id)).lease_owner is None


async def test_invalid_grant_makes_the_account_reconnect_required_once_without_retries(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
    account_id: uuid.UUID,
) -> None:
    sandbox.revoke(SELLER)
    store = make_store(sessions, cipher, ebay_client)
    since = time.time()
    first = await store.refresh(RefreshRequest(account_id, reason="manual"))
    again = await store.refresh(RefreshRequest(account_id, reason="manual"))
    assert first.outcome is again.outcome is RefreshOutcome.RECONNECT_REQUIRED
    assert refresh_calls(sandbox, since) == 1  # one call, no retries, none after
    token = await token_row(sessions, account_id)
    assert token.reconnect_required_at is not None
    assert token.refresh_enabled is False
    assert (await account_row(sessions, account_id)).next_health_check_at is None
    assert await outbox_types(sessions, account_id) == ["account.reconnect_required"]


async def test_failures_back_off_and_announce_one_event_per_streak(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
    account_id: uuid.UUID,
) -> None:
    sandbox.fault("token", "error", status=503, seller=SELLER)
    store = make_store(sessions, cipher, ebay_client)
    results = [await store.refresh(RefreshRequest(account_id, reason="manual")) for _ in range(3)]
    assert [r.outcome for r in results] == [RefreshOutcome.FAILED] * 3
    assert all(r.retryable and r.error_kind == "transient" for r in results)
    token = await token_row(sessions, account_id)
    assert token.consecutive_failures == 3
    assert token.retry_at is not None
    assert token.last_refresh_error is not None
    assert "503" in token.last_refresh_error or "transient" in token.last_refresh_error
    sandbox.clear_faults()
    healed = await store.refresh(RefreshRequest(account_id, reason="manual"))
    assert healed.outcome is RefreshOutcome.REFRESHED
    token = await token_row(sessions, account_id)
    assert (token.consecutive_failures, token.last_refresh_error, token.retry_at) == (0, None, None)
    assert await outbox_types(sessions, account_id) == ["token.refresh_failed", "token.refreshed"]


async def test_rate_limiting_waits_at_least_as_long_as_ebay_asked(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
    account_id: uuid.UUID,
) -> None:
    sandbox.fault("token", "rate_limit", retry_after=40, seller=SELLER)
    result = await make_store(sessions, cipher, ebay_client, retry_base_seconds=1).refresh(
        RefreshRequest(account_id, reason="manual")
    )
    assert result.outcome is RefreshOutcome.FAILED
    assert result.error_kind == "rate_limited"
    assert result.retry_in is not None
    assert result.retry_in >= 40
    token = await token_row(sessions, account_id)
    assert token.retry_at is not None
    assert token.updated_at is not None
    assert (token.retry_at - token.updated_at).total_seconds() >= 39.5


async def test_two_replicas_refreshing_one_account_call_ebay_once(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
    account_id: uuid.UUID,
) -> None:
    sandbox.fault("token", "latency", latency_ms=500, seller=SELLER)
    since = time.time()
    a = make_store(sessions, cipher, ebay_client, owner="a")
    b = make_store(sessions, cipher, ebay_client, owner="b")
    results = await asyncio.gather(
        *(
            s.refresh(RefreshRequest(account_id, token_version=1, reason="manual"))
            for s in (a, b, a, b)
        )
    )
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes == ["busy", "busy", "busy", "refreshed"]
    assert all(r.retry_in and r.retry_in > 0 for r in results if r.outcome is RefreshOutcome.BUSY)
    assert refresh_calls(sandbox, since) == 1
    assert (await token_row(sessions, account_id)).version == 2


async def test_a_rejected_token_is_replaced_by_the_lease_holders_refresh_not_a_second_one(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
    account_id: uuid.UUID,
) -> None:
    sandbox.fault("token", "latency", latency_ms=500, seller=SELLER)
    refresher = make_store(sessions, cipher, ebay_client, owner="refresher")
    checker = make_store(sessions, cipher, ebay_client, owner="checker")
    since = time.time()
    refreshing = asyncio.create_task(refresher.refresh(RefreshRequest(account_id, reason="manual")))
    await asyncio.sleep(0.1)  # let the refresher take the lease first
    fresh = await token_after_rejection(checker, account_id, 1, wait_seconds=10)
    done = await refreshing
    assert done.outcome is RefreshOutcome.REFRESHED
    assert fresh.version == 2
    assert fresh.access_token.get_secret_value() == (
        done.access_token.get_secret_value() if done.access_token else ""
    )
    assert refresh_calls(sandbox, since) == 1
    current = await current_token(checker, account_id)
    assert current is not None
    assert current.version == 2


async def test_the_circuit_breaker_stops_calling_ebay_for_an_account_that_keeps_failing(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_settings: EbaySettings,
    sandbox: SandboxHandle,
    account_id: uuid.UUID,
) -> None:
    breaker = CircuitBreaker(
        PostgresBreakerStore(sessions), failure_threshold=2, cooldown_seconds=30
    )
    async with EbayClient(ebay_settings, breaker=breaker, backoff_seconds=0.01) as client:
        store = make_store(sessions, cipher, client)
        sandbox.fault("token", "error", status=503, seller=SELLER)
        since = time.time()
        failures = [
            await store.refresh(RefreshRequest(account_id, reason="manual")) for _ in range(2)
        ]
        calls_while_closed = refresh_calls(sandbox, since)
        paused = await store.refresh(RefreshRequest(account_id, reason="manual"))
    assert [r.error_kind for r in failures] == ["transient", "transient"]
    assert paused.error_kind == "circuit_open"
    assert paused.retry_in is not None
    assert 25 <= paused.retry_in <= 31
    assert refresh_calls(sandbox, since) == calls_while_closed  # no call while it is open
    assert (await token_row(sessions, account_id)).consecutive_failures == 3
    assert await outbox_types(sessions, account_id) == ["token.refresh_failed"]


async def test_a_refresh_token_sent_by_ebay_replaces_the_stored_one(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
    account_id: uuid.UUID,
) -> None:
    before = await token_row(sessions, account_id)
    old_refresh = cipher.decrypt(before.refresh_token_ct or b"", account_id, "refresh_token")
    sandbox.settings(rotate_refresh_tokens=True)
    store = make_store(sessions, cipher, ebay_client)
    first = await store.refresh(RefreshRequest(account_id, reason="manual"))
    assert first.outcome is RefreshOutcome.REFRESHED
    after = await token_row(sessions, account_id)
    new_refresh = cipher.decrypt(after.refresh_token_ct or b"", account_id, "refresh_token")
    assert new_refresh != old_refresh
    # The stored one is the one that works now: the next refresh uses it successfully.
    second = await store.refresh(RefreshRequest(account_id, reason="manual"))
    assert second.outcome is RefreshOutcome.REFRESHED


async def test_a_token_under_an_old_key_is_read_and_rewritten_with_the_newest_key(
    sessions: SessionFactory, ebay_client: EbayClient, sandbox: SandboxHandle
) -> None:
    old = {"old": os.urandom(32)}
    org = await make_org_row(sessions)
    account_id = await connect_seller(
        sessions, TokenCipher(old), ebay_client, sandbox, SELLER, org=org
    )
    before = await token_row(sessions, account_id)
    rotated = TokenCipher({**old, "new": os.urandom(32)})  # "new" is appended: it encrypts
    store = make_store(sessions, rotated, ebay_client)
    assert await current_token(store, account_id) is not None  # the old key still decrypts
    result = await store.refresh(RefreshRequest(account_id, reason="manual"))
    assert result.outcome is RefreshOutcome.REFRESHED
    after = await token_row(sessions, account_id)
    assert after.key_id == "new"
    assert rotated.key_id_of(after.access_token_ct or b"") == "new"
    assert rotated.key_id_of(after.refresh_token_ct or b"") == "new"
    assert rotated.decrypt(after.refresh_token_ct or b"", account_id, "refresh_token") == (
        rotated.decrypt(before.refresh_token_ct or b"", account_id, "refresh_token")
    )


async def test_a_lease_is_renewed_while_the_ebay_call_outlasts_it(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
    account_id: uuid.UUID,
) -> None:
    sandbox.fault("token", "latency", latency_ms=1700, seller=SELLER)
    slow = make_store(sessions, cipher, ebay_client, owner="slow", lease_seconds=0.6)
    other = make_store(sessions, cipher, ebay_client, owner="other", lease_seconds=0.6)
    since = time.time()
    refreshing = asyncio.create_task(slow.refresh(RefreshRequest(account_id, reason="manual")))
    await asyncio.sleep(1.3)  # twice the lease: without renewal it would have run out
    meanwhile = await other.refresh(RefreshRequest(account_id, reason="manual"))
    done = await refreshing
    assert meanwhile.outcome is RefreshOutcome.BUSY
    assert done.outcome is RefreshOutcome.REFRESHED
    assert refresh_calls(sandbox, since) == 1


async def test_leases_of_refreshes_abandoned_at_shutdown_are_given_back(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
    account_id: uuid.UUID,
) -> None:
    sandbox.fault("token", "latency", latency_ms=5000, seller=SELLER)
    store = make_store(sessions, cipher, ebay_client, owner="stopping")
    refreshing = asyncio.create_task(store.refresh(RefreshRequest(account_id, reason="manual")))

    async def leased() -> bool:
        return (await token_row(sessions, account_id)).lease_owner is not None

    await eventually(leased, timeout=5, what="the lease taken")
    refreshing.cancel()  # the grace period ran out
    with pytest.raises(asyncio.CancelledError):
        await refreshing
    await store.close()
    token = await token_row(sessions, account_id)
    assert (token.lease_owner, token.lease_until) == (None, None)


async def test_an_ended_refresh_token_is_reconnect_required_without_asking_ebay(
    sessions: SessionFactory,
    cipher: TokenCipher,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
) -> None:
    from datetime import timedelta

    from connector_common.events import utcnow

    org = await make_org_row(sessions)
    ended = await connect_seller(
        sessions,
        cipher,
        ebay_client,
        sandbox,
        SELLER,
        org=org,
        refresh_expires_at=utcnow() - timedelta(seconds=1),
    )
    since = time.time()
    result = await make_store(sessions, cipher, ebay_client).refresh(
        RefreshRequest(ended, reason="manual")
    )
    assert result.outcome is RefreshOutcome.RECONNECT_REQUIRED
    assert refresh_calls(sandbox, since) == 0  # eBay was not asked
    row = await token_row(sessions, ended)
    assert row.reconnect_required_at is not None
    assert row.refresh_enabled is False
    assert "account.reconnect_required" in await outbox_types(sessions, ended)
