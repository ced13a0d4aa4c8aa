"""Trading GetUser, Identity and Analytics as eBay answers them, headers included."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import httpx
import pytest

from connector_common.ebay import EbayClient
from tests.fixtures.sandbox import SandboxHandle

NS = "{urn:ebay:apis:eBLBaseComponents}"
GET_USER = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<GetUserRequest xmlns="urn:ebay:apis:eBLBaseComponents"></GetUserRequest>'
)


@pytest.fixture
async def http(sandbox: SandboxHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
        yield client


async def _user_token(sandbox: SandboxHandle, ebay_client: EbayClient, seller: str) -> str:
    token = await ebay_client.exchange_code(sandbox.grant(seller))
    return token.access_token.get_secret_value()


def _trading_headers(token: str | None, call: str = "GetUser", site: str = "3") -> dict[str, str]:
    headers = {
        "X-EBAY-API-COMPATIBILITY-LEVEL": "1349",
        "X-EBAY-API-CALL-NAME": call,
        "X-EBAY-API-SITEID": site,
        "Content-Type": "text/xml",
    }
    if token:
        headers["X-EBAY-API-IAF-TOKEN"] = token
    return headers


def _error_code(response: httpx.Response) -> str | None:
    root = ET.fromstring(response.content)  # noqa: S314 - our own sandbox's answer
    assert root.findtext(f"{NS}Ack") == "Failure"
    return root.findtext(f"{NS}Errors/{NS}ErrorCode")


async def test_get_user_answers_ebays_xml_with_request_ids(
    http: httpx.AsyncClient, sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await _user_token(sandbox, ebay_client, "demo_uk_seller")
    response = await http.post("/ws/api.dll", content=GET_USER, headers=_trading_headers(token))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert response.headers["rlogid"]
    assert response.headers["x-ebay-c-request-id"].startswith("ri=")
    root = ET.fromstring(response.content)  # noqa: S314
    assert root.tag == f"{NS}GetUserResponse"
    assert root.findtext(f"{NS}Ack") == "Success"
    user = root.find(f"{NS}User")
    assert user is not None
    assert user.findtext(f"{NS}UserID") == "demo_uk_seller"
    assert user.findtext(f"{NS}Site") == "UK"
    assert user.findtext(f"{NS}SellerInfo/{NS}GoodStanding") == "true"
    assert user.findtext(f"{NS}RegistrationAddress/{NS}Country") == "GB"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (_trading_headers(None), "930"),
        (_trading_headers("v^1.1#not-a-token"), "931"),
        (_trading_headers("t", call="GetItem"), "2"),
        (_trading_headers("t", site="UK"), "37"),
    ],
)
async def test_trading_failures_are_http_200_with_ack_failure(
    http: httpx.AsyncClient, headers: dict[str, str], code: str
) -> None:
    response = await http.post("/ws/api.dll", content=GET_USER, headers=headers)
    assert response.status_code == 200
    assert _error_code(response) == code


async def test_application_token_is_refused_by_trading(
    http: httpx.AsyncClient, ebay_client: EbayClient
) -> None:
    app = await ebay_client.application_token()
    response = await http.post(
        "/ws/api.dll",
        content=GET_USER,
        headers=_trading_headers(app.access_token.get_secret_value()),
    )
    assert _error_code(response) == "21916984"


async def test_identity_answers_user_response_json(
    http: httpx.AsyncClient, sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await _user_token(sandbox, ebay_client, "demo_motors_seller")
    response = await http.get(
        "/commerce/identity/v1/user/", headers={"Authorization": f"Bearer {token}"}
    )
    body = response.json()
    assert body["registrationMarketplaceId"] == "EBAY_MOTORS_US"
    assert body["accountType"] == "BUSINESS"
    assert body["businessAccount"]["address"]["country"] == "US"
    assert response.headers["x-ratelimit-remaining"].isdigit()


async def test_suspended_seller_shows_account_on_hold_in_identity(
    http: httpx.AsyncClient, sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await _user_token(sandbox, ebay_client, "demo_uk_seller")
    sandbox.suspend("demo_uk_seller")
    response = await http.get(
        "/commerce/identity/v1/user/", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.json()["status"] == "ACCOUNTONHOLD"


@pytest.mark.parametrize(
    ("authorization", "status", "error_id"),
    [(None, 401, 1002), ("Basic abc", 401, 1003), ("Bearer nope", 401, 1001)],
)
async def test_rest_auth_errors_use_ebays_error_body(
    http: httpx.AsyncClient, authorization: str | None, status: int, error_id: int
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await http.get("/commerce/identity/v1/user/", headers=headers)
    assert response.status_code == status
    error = response.json()["errors"][0]
    assert error["errorId"] == error_id
    assert set(error) >= {"errorId", "domain", "category", "message", "longMessage"}


async def test_app_rate_limit_needs_an_application_token(
    http: httpx.AsyncClient, sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await _user_token(sandbox, ebay_client, "demo_uk_seller")
    response = await http.get(
        "/developer/analytics/v1_beta/rate_limit/", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403
    assert response.json()["errors"][0]["errorId"] == 1100


async def test_unknown_api_context_is_a_request_error(
    http: httpx.AsyncClient, ebay_client: EbayClient
) -> None:
    app = (await ebay_client.application_token()).access_token.get_secret_value()
    response = await http.get(
        "/developer/analytics/v1_beta/rate_limit/",
        params={"api_context": "nope"},
        headers={"Authorization": f"Bearer {app}"},
    )
    assert response.status_code == 400


async def test_access_tokens_expire_after_their_lifetime(
    http: httpx.AsyncClient, sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    import asyncio
    import time

    sandbox.settings(access_token_lifetime=1)
    token = await ebay_client.exchange_code(sandbox.grant("demo_uk_seller"))
    access = token.access_token.get_secret_value()
    # Until the sandbox's own expiry: the client counts from when its request left, a moment
    # earlier, so its expiry time can come first.
    await asyncio.sleep(max(sandbox.state.access[access].expires_at - time.time(), 0) + 0.01)
    trading = await http.post("/ws/api.dll", content=GET_USER, headers=_trading_headers(access))
    assert _error_code(trading) == "21917053"
    identity = await http.get(
        "/commerce/identity/v1/user/", headers={"Authorization": f"Bearer {access}"}
    )
    assert identity.status_code == 401
