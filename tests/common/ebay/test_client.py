"""The eBay client's happy paths against the local sandbox over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from connector_common.ebay import EbayClient, site_by_id
from connector_common.settings import EbaySettings
from tests.fixtures.sandbox import SandboxHandle


def test_consent_url_carries_runame_scopes_state_and_prompt(ebay_client: EbayClient) -> None:
    url = ebay_client.consent_url("state-123", locale="de-DE")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == "/oauth2/authorize"
    assert query["client_id"] == ["connector-test-app"]
    assert query["redirect_uri"] == ["connector-test-runame"]  # the RuName, not a URL
    assert query["response_type"] == ["code"]
    assert query["scope"] == [" ".join(ebay_client.settings.scopes)]
    assert "%20" in parts.query
    assert "+" not in parts.query
    assert query["state"] == ["state-123"]
    assert query["prompt"] == ["login"]
    assert query["locale"] == ["de-DE"]


async def test_consent_url_uses_the_auth_host_of_real_environments() -> None:
    production = EbayClient(EbaySettings(environment="production"))
    sandbox = EbayClient(EbaySettings(environment="sandbox"))
    await production.aclose()
    await sandbox.aclose()
    assert production.consent_url("s").startswith("https://auth.ebay.com/oauth2/authorize?")
    assert sandbox.consent_url("s").startswith("https://auth.sandbox.ebay.com/oauth2/authorize?")
    assert production.endpoints.identity_user == "https://apiz.ebay.com/commerce/identity/v1/user/"
    assert production.endpoints.token == "https://api.ebay.com/identity/v1/oauth2/token"
    assert sandbox.endpoints.trading == "https://api.sandbox.ebay.com/ws/api.dll"


async def test_exchange_code_returns_access_and_refresh_tokens(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    code = sandbox.grant("demo_uk_seller")
    before = datetime.now(UTC)
    token = await ebay_client.exchange_code(code)
    assert token.access_token.get_secret_value().startswith("v^1.1#i^1#p^3#r^0#")
    assert token.refresh_token is not None
    assert token.refresh_token.get_secret_value().startswith("v^1.1#")
    assert before + timedelta(seconds=7190) < token.access_expires_at
    assert token.access_expires_at <= datetime.now(UTC) + timedelta(seconds=7200)
    assert token.refresh_expires_at is not None
    assert token.refresh_expires_at > before + timedelta(days=500)
    assert token.token_type == "User Access Token"
    assert token.meta.http_status == 200
    assert token.meta.rlogid


async def test_refresh_keeps_old_refresh_token_when_none_comes_back(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    first = await ebay_client.exchange_code(sandbox.grant("demo_us_seller"))
    assert first.refresh_token is not None
    refreshed = await ebay_client.refresh_access_token(
        first.refresh_token.get_secret_value(), sandbox.scopes, account_key="acct-1"
    )
    assert refreshed.refresh_token is None  # eBay sent none: the caller keeps its own
    assert refreshed.refresh_expires_at is None
    assert refreshed.access_token.get_secret_value() != first.access_token.get_secret_value()
    # the old refresh token still works: it was not replaced
    again = await ebay_client.refresh_access_token(
        first.refresh_token.get_secret_value(), sandbox.scopes
    )
    assert again.access_token.get_secret_value()


async def test_refresh_returns_a_new_refresh_token_when_ebay_rotates_it(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    first = await ebay_client.exchange_code(sandbox.grant("demo_us_seller"))
    assert first.refresh_token is not None
    sandbox.settings(rotate_refresh_tokens=True)
    refreshed = await ebay_client.refresh_access_token(
        first.refresh_token.get_secret_value(), sandbox.scopes
    )
    assert refreshed.refresh_token is not None
    new_refresh = refreshed.refresh_token.get_secret_value()
    assert new_refresh != first.refresh_token.get_secret_value()
    assert refreshed.refresh_expires_at is not None
    again = await ebay_client.refresh_access_token(new_refresh, sandbox.scopes)
    assert again.access_token.get_secret_value()


async def test_get_user_on_uk_seller_gives_site_3_and_ebay_gb(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await ebay_client.exchange_code(sandbox.grant("demo_uk_seller"))
    user = await ebay_client.get_user(token.access_token.get_secret_value(), site_id=3)
    assert user.user_id == "demo_uk_seller"
    assert user.site_code == "UK"
    assert user.site is not None
    assert (user.site.site_id, user.site.marketplace_id) == (3, "EBAY_GB")
    assert user.eias_token
    assert user.eias_token.startswith("nY+sHZ2P")
    assert user.status == "Confirmed"
    assert user.registration_date is not None
    assert user.registration_date.tzinfo is not None
    assert user.seller_good_standing is True
    assert user.meta.api == "trading"
    assert user.meta.operation == "GetUser"


async def test_get_user_on_motors_seller_gives_site_100_and_ebay_motors_us(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await ebay_client.exchange_code(sandbox.grant("demo_motors_seller"))
    user = await ebay_client.get_user(token.access_token.get_secret_value(), site_id=100)
    assert user.site == site_by_id(100)
    assert user.site is not None
    assert user.site.marketplace_id == "EBAY_MOTORS_US"
    assert user.site_code == "eBayMotors"
    assert user.store_owner is False


async def test_identity_user_returns_immutable_id_and_marketplace(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await ebay_client.exchange_code(sandbox.grant("demo_de_seller"))
    user = await ebay_client.identity_user(
        token.access_token.get_secret_value(), marketplace_id="EBAY_DE"
    )
    seller = sandbox.state.seller("demo_de_seller")
    assert user.user_id == seller.user_id
    assert user.username == "demo_de_seller"
    assert user.registration_marketplace_id == "EBAY_DE"
    assert user.account_type == "BUSINESS"
    assert user.status == "CONFIRMED"


async def test_application_token_is_cached_until_near_expiry(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    first = await ebay_client.application_token()
    second = await ebay_client.application_token()
    assert first.access_token.get_secret_value() == second.access_token.get_secret_value()
    assert first.token_type == "Application Access Token"
    assert len(sandbox.calls(route="token")) == 1


async def test_application_token_is_renewed_shortly_before_expiry(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    sandbox.settings(access_token_lifetime=1)  # renewal margin: a tenth of the lifetime
    first = await ebay_client.application_token()
    while datetime.now(UTC) < first.expires_at:
        await ebay_client.application_token()
        if len(sandbox.calls(route="token")) > 1:
            break
    assert len(sandbox.calls(route="token")) == 2


async def test_rate_limits_are_parsed_for_app_and_user(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await ebay_client.exchange_code(sandbox.grant("demo_au_seller"))
    access = token.access_token.get_secret_value()
    await ebay_client.get_user(access, site_id=15)
    user_limits = await ebay_client.user_rate_limits(access, api_context="tradingapi")
    assert [api.api_name for api in user_limits.apis] == ["TradingAPI"]
    rate = user_limits.apis[0].resources[0].rates[0]
    assert (rate.count, rate.limit, rate.remaining) == (1, 5000, 4999)
    assert rate.reset is not None
    assert rate.time_window_seconds == 86400
    app_limits = await ebay_client.app_rate_limits()
    assert {api.api_context for api in app_limits.apis} >= {"tradingapi", "commerce"}
    assert app_limits.lowest_remaining() is not None


async def test_rate_limits_with_no_data_are_empty_on_204(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await ebay_client.exchange_code(sandbox.grant("demo_au_seller"))
    limits = await ebay_client.user_rate_limits(
        token.access_token.get_secret_value(), api_context="buy"
    )
    assert limits.apis == ()
    assert limits.meta.http_status == 204


def test_results_never_show_a_token_in_repr() -> None:
    from pydantic import SecretStr

    from connector_common.ebay import CallMeta, UserToken

    token = UserToken(
        access_token=SecretStr("v^1.1#i^1#p^3#r^0#secretvalue"),
        access_expires_at=datetime.now(UTC),
        refresh_token=SecretStr("v^1.1#i^1#r^1#refreshvalue"),
        refresh_expires_at=None,
        token_type="User Access Token",
        meta=CallMeta("oauth", "refresh_token", 200, 1.0),
    )
    assert "secretvalue" not in repr(token)
    assert "refreshvalue" not in repr(token)
    assert "secretvalue" not in str(token)
