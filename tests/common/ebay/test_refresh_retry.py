"""The 401 refresh-and-retry rule against the sandbox: one refresh, one retry, never a loop."""

from __future__ import annotations

import pytest

from connector_common.ebay import (
    AccessTokenRejected,
    EbayClient,
    InvalidGrant,
    TradingUser,
    call_with_token_refresh,
)
from tests.fixtures.sandbox import SandboxHandle


async def test_rejected_access_token_is_refreshed_once_and_the_call_retried(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    first = await ebay_client.exchange_code(sandbox.grant("demo_uk_seller"))
    assert first.refresh_token is not None
    refresh_token = first.refresh_token.get_secret_value()
    sandbox.invalidate_tokens("demo_uk_seller", reason="expired")
    refreshes = 0

    async def refresh() -> str:
        nonlocal refreshes
        refreshes += 1
        token = await ebay_client.refresh_access_token(refresh_token, sandbox.scopes)
        return token.access_token.get_secret_value()

    async def call(access_token: str) -> TradingUser:
        return await ebay_client.get_user(access_token, site_id=3)

    user = await call_with_token_refresh(call, first.access_token.get_secret_value(), refresh)
    assert user.user_id == "demo_uk_seller"
    assert refreshes == 1
    outcomes = [c["outcome"] for c in sandbox.calls(route="trading")]
    assert outcomes == ["21917053", "ok"]


async def test_second_rejection_is_raised_not_looped(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    first = await ebay_client.exchange_code(sandbox.grant("demo_uk_seller"))
    assert first.refresh_token is not None
    refresh_token = first.refresh_token.get_secret_value()
    sandbox.invalidate_tokens("demo_uk_seller", reason="invalid")
    refreshes = 0

    async def refresh() -> str:
        nonlocal refreshes
        refreshes += 1
        token = await ebay_client.refresh_access_token(refresh_token, sandbox.scopes)
        new_access = token.access_token.get_secret_value()
        sandbox.invalidate_token(new_access, reason="invalid")  # eBay refuses this one too
        return new_access

    async def call(access_token: str) -> TradingUser:
        return await ebay_client.get_user(access_token, site_id=3)

    with pytest.raises(AccessTokenRejected):
        await call_with_token_refresh(call, first.access_token.get_secret_value(), refresh)
    assert refreshes == 1
    assert len(sandbox.calls(route="trading")) == 2


async def test_refresh_failure_propagates_invalid_grant(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    first = await ebay_client.exchange_code(sandbox.grant("demo_uk_seller"))
    assert first.refresh_token is not None
    refresh_token = first.refresh_token.get_secret_value()
    sandbox.revoke("demo_uk_seller")

    async def refresh() -> str:
        token = await ebay_client.refresh_access_token(refresh_token, sandbox.scopes)
        return token.access_token.get_secret_value()

    async def call(access_token: str) -> TradingUser:
        return await ebay_client.get_user(access_token, site_id=3)

    with pytest.raises(InvalidGrant):
        await call_with_token_refresh(call, first.access_token.get_secret_value(), refresh)
    assert len(sandbox.calls(route="trading")) == 1


async def test_app_rate_limits_renew_a_rejected_application_token(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    old = await ebay_client.application_token()
    sandbox.invalidate_token(old.access_token.get_secret_value())
    limits = await ebay_client.app_rate_limits()
    assert limits.apis
    assert [c["status"] for c in sandbox.calls(route="rate_limit")] == [401, 200]
    assert len(sandbox.calls(route="token")) == 2
