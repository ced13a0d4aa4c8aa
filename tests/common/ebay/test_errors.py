"""Each eBay failure becomes the right typed error (sandbox over real HTTP, no mocks)."""

from __future__ import annotations

import pytest

from connector_common.ebay import (
    AccessTokenRejected,
    EbayClient,
    InvalidGrant,
    PermanentError,
    RateLimited,
    SellerSuspended,
    TransientError,
)
from connector_common.settings import EbaySettings
from tests.fixtures.sandbox import SandboxHandle


async def _access_token(sandbox: SandboxHandle, client: EbayClient, seller: str) -> str:
    token = await client.exchange_code(sandbox.grant(seller))
    return token.access_token.get_secret_value()


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("expired", "21917053"),
        ("invalid", "21916984"),
        ("hard_expired", "932"),
        ("revoked", "21916013"),
    ],
)
async def test_trading_auth_failures_in_http_200_raise_access_token_rejected(
    sandbox: SandboxHandle, ebay_client: EbayClient, reason: str, code: str
) -> None:
    access = await _access_token(sandbox, ebay_client, "demo_uk_seller")
    sandbox.invalidate_token(access, reason=reason)
    with pytest.raises(AccessTokenRejected) as caught:
        await ebay_client.get_user(access, site_id=3)
    assert caught.value.error_code == code
    assert caught.value.http_status == 200  # Ack=Failure inside a 200
    assert access not in str(caught.value)


async def test_trading_unknown_token_raises_access_token_rejected_931(
    ebay_client: EbayClient,
) -> None:
    with pytest.raises(AccessTokenRejected) as caught:
        await ebay_client.get_user("v^1.1#i^1#p^3#r^0#I^3#f^0#t^notatoken", site_id=0)
    assert caught.value.error_code == "931"


async def test_trading_518_raises_rate_limited_without_retrying(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    access = await _access_token(sandbox, ebay_client, "demo_us_seller")
    sandbox.fault("trading", "rate_limit")
    with pytest.raises(RateLimited) as caught:
        await ebay_client.get_user(access)
    assert caught.value.error_code == "518"
    assert caught.value.retry_after is None
    assert len(sandbox.calls(route="trading")) == 1  # a daily quota: seconds of backoff won't help


async def test_trading_841_raises_seller_suspended(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    access = await _access_token(sandbox, ebay_client, "demo_de_seller")
    sandbox.suspend("demo_de_seller")
    with pytest.raises(SellerSuspended) as caught:
        await ebay_client.get_user(access, site_id=77)
    assert caught.value.error_code == "841"
    assert isinstance(caught.value, PermanentError)
    assert len(sandbox.calls(route="trading")) == 1


async def test_rest_401_1001_raises_access_token_rejected(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    access = await _access_token(sandbox, ebay_client, "demo_ca_seller")
    sandbox.invalidate_tokens("demo_ca_seller")
    with pytest.raises(AccessTokenRejected) as caught:
        await ebay_client.identity_user(access)
    assert caught.value.error_code == "1001"
    assert caught.value.http_status == 401
    assert access not in str(caught.value)


async def test_rest_403_missing_scope_is_permanent(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    code = sandbox.grant("demo_ca_seller", scopes=["https://api.ebay.com/oauth/api_scope"])
    token = await ebay_client.exchange_code(code)
    with pytest.raises(PermanentError) as caught:
        await ebay_client.identity_user(token.access_token.get_secret_value())
    assert caught.value.error_code == "1100"


async def test_rest_429_2001_raises_rate_limited_with_retry_after(
    sandbox: SandboxHandle, ebay_settings: EbaySettings
) -> None:
    settings = ebay_settings.model_copy(update={"max_retry_seconds": 1.0})
    async with EbayClient(settings) as client:
        access = await _access_token(sandbox, client, "demo_ca_seller")
        sandbox.fault("identity", "rate_limit", retry_after=30)
        with pytest.raises(RateLimited) as caught:
            await client.identity_user(access)
    assert caught.value.error_code == "2001"
    assert caught.value.http_status == 429
    assert caught.value.retry_after == 30


async def test_revoked_consent_makes_refresh_raise_invalid_grant(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await ebay_client.exchange_code(sandbox.grant("demo_au_seller"))
    assert token.refresh_token is not None
    sandbox.revoke("demo_au_seller")
    refresh = token.refresh_token.get_secret_value()
    with pytest.raises(InvalidGrant) as caught:
        await ebay_client.refresh_access_token(refresh, sandbox.scopes)
    assert caught.value.error_code == "invalid_grant"
    assert refresh not in str(caught.value)
    assert len(sandbox.calls(route="token", seller="demo_au_seller")) == 2  # exchange + 1 refresh


async def test_revoked_consent_makes_existing_access_tokens_fail(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    access = await _access_token(sandbox, ebay_client, "demo_au_seller")
    sandbox.revoke("demo_au_seller")
    with pytest.raises(AccessTokenRejected):
        await ebay_client.get_user(access, site_id=15)
    with pytest.raises(AccessTokenRejected):
        await ebay_client.identity_user(access)


async def test_reused_authorization_code_raises_invalid_grant(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    code = sandbox.grant("demo_us_seller")
    await ebay_client.exchange_code(code)
    with pytest.raises(InvalidGrant):
        await ebay_client.exchange_code(code)


async def test_wrong_client_secret_raises_permanent_invalid_client(
    sandbox: SandboxHandle, ebay_settings: EbaySettings
) -> None:
    from pydantic import SecretStr

    settings = ebay_settings.model_copy(update={"client_secret": SecretStr("wrong-secret")})
    async with EbayClient(settings) as client:
        with pytest.raises(PermanentError) as caught:
            await client.application_token()
    assert caught.value.error_code == "invalid_client"
    assert not isinstance(caught.value, InvalidGrant)
    assert "wrong-secret" not in str(caught.value)
    assert len(sandbox.calls(route="token")) == 1  # permanent: not retried


async def test_refresh_with_wider_scopes_raises_permanent_invalid_scope(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await ebay_client.exchange_code(sandbox.grant("demo_us_seller"))
    assert token.refresh_token is not None
    wider = [*sandbox.scopes, "https://api.ebay.com/oauth/api_scope/sell.inventory"]
    with pytest.raises(PermanentError) as caught:
        await ebay_client.refresh_access_token(token.refresh_token.get_secret_value(), wider)
    assert caught.value.error_code == "invalid_scope"


async def test_invalid_request_from_token_endpoint_is_permanent(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    sandbox.fault("token", "ebay_error", error_code="invalid_request", count=1)
    with pytest.raises(PermanentError) as caught:
        await ebay_client.application_token()
    assert caught.value.error_code == "invalid_request"


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_raise_transient_after_every_attempt(
    sandbox: SandboxHandle, ebay_client: EbayClient, status: int
) -> None:
    access = await _access_token(sandbox, ebay_client, "demo_us_seller")
    sandbox.fault("identity", "error", status=status)
    with pytest.raises(TransientError) as caught:
        await ebay_client.identity_user(access)
    assert caught.value.http_status == status
    assert len(sandbox.calls(route="identity")) == ebay_client.settings.max_attempts


async def test_timeout_raises_transient(
    sandbox: SandboxHandle, ebay_settings: EbaySettings
) -> None:
    settings = ebay_settings.model_copy(update={"read_timeout_seconds": 0.2, "max_attempts": 1})
    async with EbayClient(settings) as client:
        access = await _access_token(sandbox, client, "demo_us_seller")
        sandbox.fault("trading", "timeout", seconds=30)
        with pytest.raises(TransientError) as caught:
            await client.get_user(access)
    assert caught.value.error_code == "timeout"
    assert caught.value.http_status is None


async def test_dropped_connection_raises_transient(
    sandbox: SandboxHandle, ebay_settings: EbaySettings
) -> None:
    settings = ebay_settings.model_copy(update={"max_attempts": 1})
    async with EbayClient(settings) as client:
        access = await _access_token(sandbox, client, "demo_us_seller")
        sandbox.fault("identity", "drop")
        with pytest.raises(TransientError) as caught:
            await client.identity_user(access)
    assert caught.value.error_code == "connection_dropped"


async def test_unreachable_ebay_raises_transient_connect_error(ebay_settings: EbaySettings) -> None:
    from connector_devstack.embedded import free_port

    settings = ebay_settings.model_copy(
        update={"local_base_url": f"http://127.0.0.1:{free_port()}", "max_attempts": 2}
    )
    async with EbayClient(settings, backoff_seconds=0.01) as client:
        with pytest.raises(TransientError) as caught:
            await client.application_token()
    assert caught.value.error_code == "connect_error"
    assert caught.value.meta is not None
    assert caught.value.meta.attempt == 2
