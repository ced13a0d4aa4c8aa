"""Database constraints: house names per org, and tokens bound to their row by encryption."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from connector_common.crypto import DecryptionError, TokenCipher, UnknownKeyError
from connector_common.db.models import EbayToken
from tests.fixtures.factories import make_account, make_org, make_token


async def ciphertext(session: AsyncSession, column: Any, account_id: uuid.UUID) -> bytes:
    value = (
        await session.execute(select(column).where(EbayToken.account_id == account_id))
    ).scalar_one()
    assert isinstance(value, bytes)
    return value


async def test_duplicate_house_name_in_one_org_is_rejected(session: AsyncSession) -> None:
    org = await make_org(session)
    await make_account(session, org, "Montreal")
    with pytest.raises(IntegrityError, match="uq_ebay_accounts_org_id_house_name_active"):
        async with session.begin_nested():
            await make_account(session, org, "Montreal")


async def test_house_names_are_compared_case_insensitively(session: AsyncSession) -> None:
    org = await make_org(session)
    await make_account(session, org, "Montreal")
    with pytest.raises(IntegrityError):
        async with session.begin_nested():
            await make_account(session, org, "MONTREAL")


async def test_same_house_name_in_two_orgs_is_accepted(session: AsyncSession) -> None:
    first, second = await make_org(session), await make_org(session)
    a = await make_account(session, first, "Warehouse-A")
    b = await make_account(session, second, "Warehouse-A")
    assert a.id != b.id


async def test_house_name_is_reusable_after_deactivation(session: AsyncSession) -> None:
    org = await make_org(session)
    old = await make_account(session, org, "Warehouse-A")
    await session.execute(
        update(type(old))
        .where(type(old).id == old.id)
        .values(is_active=False, deactivated_at=datetime.now(UTC))
    )
    new = await make_account(session, org, "Warehouse-A")
    assert new.id != old.id


async def test_same_ebay_user_twice_in_one_org_is_rejected(session: AsyncSession) -> None:
    org = await make_org(session)
    await make_account(session, org, "A", ebay_user_id="immutable-1")
    with pytest.raises(IntegrityError, match="uq_ebay_accounts_org_id_ebay_user_id"):
        async with session.begin_nested():
            await make_account(session, org, "B", ebay_user_id="immutable-1")


async def test_deactivated_flag_and_time_must_agree(session: AsyncSession) -> None:
    org = await make_org(session)
    with pytest.raises(IntegrityError, match="deactivated_at_matches_is_active"):
        async with session.begin_nested():
            await make_account(session, org, "X", is_active=False)


async def test_stored_token_is_ciphertext_only(session: AsyncSession, token_keys: str) -> None:
    from connector_common.settings import parse_key_ring

    cipher = TokenCipher(parse_key_ring(token_keys))
    org = await make_org(session)
    account = await make_account(session, org)
    await make_token(session, account, cipher, access="v^1.1#plain-access-canary")
    raw = await ciphertext(session, EbayToken.access_token_ct, account.id)
    assert b"plain-access-canary" not in raw


async def test_ciphertext_copied_to_another_account_fails_to_decrypt(
    session: AsyncSession, token_keys: str
) -> None:
    from connector_common.settings import parse_key_ring

    cipher = TokenCipher(parse_key_ring(token_keys))
    org = await make_org(session)
    victim = await make_account(session, org, "Victim")
    thief = await make_account(session, org, "Thief")
    await make_token(session, victim, cipher)
    await make_token(session, thief, cipher)
    stolen = await ciphertext(session, EbayToken.refresh_token_ct, victim.id)
    await session.execute(
        update(EbayToken).where(EbayToken.account_id == thief.id).values(refresh_token_ct=stolen)
    )
    moved = await ciphertext(session, EbayToken.refresh_token_ct, thief.id)
    with pytest.raises(DecryptionError):
        cipher.decrypt(moved, thief.id, "refresh_token")
    assert cipher.decrypt(stolen, victim.id, "refresh_token").startswith("v^1.1#")


async def test_row_with_unknown_key_id_gives_a_clear_error(session: AsyncSession) -> None:
    retired = TokenCipher({"retired-2025": os.urandom(32)})
    current = TokenCipher({"current": os.urandom(32)})
    org = await make_org(session)
    account = await make_account(session, org)
    await make_token(session, account, retired)
    blob = await ciphertext(session, EbayToken.access_token_ct, account.id)
    with pytest.raises(UnknownKeyError, match="retired-2025"):
        current.decrypt(blob, account.id, "access_token")
