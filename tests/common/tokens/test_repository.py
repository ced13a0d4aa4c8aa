"""The refresh lease and its fencing epoch, against real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, create_session_factory, unit_of_work
from connector_common.db.models import EbayAccount, EbayToken
from connector_common.events import utcnow
from connector_common.settings import parse_key_ring
from connector_common.tokens import repository
from connector_common.tokens.repository import Busy, Claim
from tests.fixtures.factories import make_account, make_org, make_token

LEASE = timedelta(seconds=30)


async def seed(engine: AsyncEngine, token_keys: str) -> tuple[SessionFactory, EbayAccount]:
    sessions = create_session_factory(engine)
    async with unit_of_work(sessions) as session:
        org = await make_org(session)
        account = await make_account(session, org, next_health_check_at=utcnow())
        await make_token(session, account, TokenCipher(parse_key_ring(token_keys)), version=3)
    return sessions, account


async def claim(sessions: SessionFactory, account: EbayAccount, owner: str) -> Claim | Busy | None:
    async with unit_of_work(sessions) as session:
        return await repository.claim_lease(session, account.id, owner, LEASE)


async def expire_lease(sessions: SessionFactory, account: EbayAccount) -> None:
    async with unit_of_work(sessions) as session:
        await session.execute(
            text(
                "UPDATE ebay_tokens SET lease_until = now() - interval '1 s' WHERE account_id = :id"
            ),
            {"id": account.id},
        )


async def write(sessions: SessionFactory, held: Claim, owner: str) -> int | None:
    async with unit_of_work(sessions) as session:
        return await repository.store_refreshed(
            session,
            held,
            owner,
            access_token_ct=b"new-access",
            refresh_token_ct=b"new-refresh",
            key_id="k",
            access_expires_at=utcnow() + timedelta(hours=2),
            refresh_expires_at=None,
        )


async def test_a_held_lease_turns_away_the_second_claimant_until_it_expires(
    engine: AsyncEngine, token_keys: str
) -> None:
    sessions, account = await seed(engine, token_keys)
    first = await claim(sessions, account, "a")
    assert isinstance(first, Claim)
    second = await claim(sessions, account, "b")
    assert isinstance(second, Busy)
    assert second.lease_until is not None
    assert second.lease_until > second.now
    await expire_lease(sessions, account)
    third = await claim(sessions, account, "b")
    assert isinstance(third, Claim)
    assert third.epoch == first.epoch + 1


async def test_a_stale_epoch_write_updates_no_row(engine: AsyncEngine, token_keys: str) -> None:
    sessions, account = await seed(engine, token_keys)
    stale = await claim(sessions, account, "a")
    assert isinstance(stale, Claim)
    await expire_lease(sessions, account)  # "a" paused longer than its lease
    fresh = await claim(sessions, account, "b")
    assert isinstance(fresh, Claim)
    assert await write(sessions, fresh, "b") == 4
    assert await write(sessions, stale, "a") is None
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, account.id)
        assert token is not None
        assert token.version == 4
        assert token.lease_owner is None
        assert token.lease_epoch == fresh.epoch + 1


async def test_a_reconnect_by_the_api_fences_out_a_refresh_in_flight(
    engine: AsyncEngine, token_keys: str
) -> None:
    sessions, account = await seed(engine, token_keys)
    held = await claim(sessions, account, "a")
    assert isinstance(held, Claim)
    async with unit_of_work(sessions) as session:  # what the API's reconnect does (contract)
        await session.execute(
            text(
                "UPDATE ebay_tokens SET version = version + 1, lease_epoch = lease_epoch + 1, "
                "lease_owner = NULL, lease_until = NULL WHERE account_id = :id"
            ),
            {"id": account.id},
        )
    assert await write(sessions, held, "a") is None
    async with unit_of_work(sessions) as session:
        failed = await repository.record_failure(
            session, held, "a", error="transient", retry_in=timedelta(seconds=5)
        )
    assert failed is None


async def test_success_clears_the_failure_streak_and_bumps_version_and_epoch(
    engine: AsyncEngine, token_keys: str
) -> None:
    sessions, account = await seed(engine, token_keys)
    for expected in (1, 2):
        held = await claim(sessions, account, "a")
        assert isinstance(held, Claim)
        async with unit_of_work(sessions) as session:
            recorded = await repository.record_failure(
                session, held, "a", error="transient: 503", retry_in=timedelta(seconds=5)
            )
        assert recorded is not None
        assert recorded[0] == expected
    held = await claim(sessions, account, "a")
    assert isinstance(held, Claim)
    assert await write(sessions, held, "a") == 4
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, account.id)
        assert token is not None
        assert (token.consecutive_failures, token.last_refresh_error, token.retry_at) == (
            0,
            None,
            None,
        )


async def test_reconnect_required_is_reported_as_new_only_once_and_unschedules_checks(
    engine: AsyncEngine, token_keys: str
) -> None:
    sessions, account = await seed(engine, token_keys)
    async with unit_of_work(sessions) as session:
        await session.execute(
            text("UPDATE ebay_tokens SET refresh_requested_at = now() WHERE account_id = :id"),
            {"id": account.id},
        )
    outcomes = []
    for _ in range(2):
        held = await claim(sessions, account, "a")
        assert isinstance(held, Claim)
        async with unit_of_work(sessions) as session:
            outcomes.append(
                await repository.mark_reconnect_required(session, held, "a", error="invalid_grant")
            )
    assert outcomes == [True, False]
    async with unit_of_work(sessions) as session:
        token = await session.get(EbayToken, account.id)
        row = await session.get(EbayAccount, account.id)
        assert token is not None
        assert row is not None
        assert token.reconnect_required_at is not None
        assert token.refresh_enabled is False
        # The request is answered: after a reconnect the scheduler must not wait a requeue.
        assert token.refresh_requested_at is None
        assert row.next_health_check_at is None
