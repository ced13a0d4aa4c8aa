"""The consent page driven over HTTP: pick a seller, Agree or Decline, follow eBay's redirect."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from connector_common.ebay import EbayClient
from tests.fixtures.sandbox import SandboxHandle


@pytest.fixture
async def browser(sandbox: SandboxHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.base_url, follow_redirects=False) as client:
        yield client


def _form_fields(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))


async def _open_consent(browser: httpx.AsyncClient, ebay_client: EbayClient) -> str:
    response = await browser.get(ebay_client.consent_url("csrf-state-1"))
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    return response.text


async def test_consent_page_lists_sellers_and_asks_to_agree_or_decline(
    browser: httpx.AsyncClient, ebay_client: EbayClient
) -> None:
    page = await _open_consent(browser, ebay_client)
    for seller in ("demo_us_seller", "demo_uk_seller", "demo_motors_seller"):
        assert f'<option value="{seller}">' in page
    assert 'value="agree">Agree</button>' in page
    assert 'value="decline">Decline</button>' in page
    assert "commerce.identity.readonly" in page


async def test_agree_redirects_to_accept_url_with_encoded_code_state_and_expiry(
    sandbox: SandboxHandle, browser: httpx.AsyncClient, ebay_client: EbayClient
) -> None:
    fields = _form_fields(await _open_consent(browser, ebay_client))
    response = await browser.post(
        "/oauth2/authorize", data={**fields, "seller": "demo_uk_seller", "decision": "agree"}
    )
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(sandbox.accept_url + "?")
    assert "code=v%5E1.1%23" in location  # URL-encoded exactly once
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["csrf-state-1"]
    assert query["expires_in"] == ["299"]
    code = query["code"][0]  # decoded once: v^1.1#...
    assert code.startswith("v^1.1#i^1#")
    assert len(code) <= 1024
    token = await ebay_client.exchange_code(code)
    user = await ebay_client.get_user(token.access_token.get_secret_value(), site_id=3)
    assert user.user_id == "demo_uk_seller"


async def test_decline_redirects_with_ebay_error_parameters(
    sandbox: SandboxHandle, browser: httpx.AsyncClient, ebay_client: EbayClient
) -> None:
    fields = _form_fields(await _open_consent(browser, ebay_client))
    response = await browser.post(
        "/oauth2/authorize", data={**fields, "seller": "demo_uk_seller", "decision": "decline"}
    )
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["csrf-state-1"]
    assert "code" not in query
    assert [c["outcome"] for c in sandbox.calls(route="authorize")] == ["page", "declined"]


async def test_decline_goes_to_the_registered_decline_url(
    sandbox: SandboxHandle, browser: httpx.AsyncClient, ebay_client: EbayClient
) -> None:
    sandbox.register_app(
        sandbox.client_id,
        sandbox.client_secret,
        sandbox.ru_name,
        "https://example.test/accept",
        "https://example.test/declined",
    )
    fields = _form_fields(await _open_consent(browser, ebay_client))
    response = await browser.post("/oauth2/authorize", data={**fields, "decision": "decline"})
    assert response.headers["location"].startswith("https://example.test/declined?")


async def test_agree_without_a_seller_shows_the_page_again(
    browser: httpx.AsyncClient, ebay_client: EbayClient
) -> None:
    fields = _form_fields(await _open_consent(browser, ebay_client))
    response = await browser.post("/oauth2/authorize", data={**fields, "decision": "agree"})
    assert response.status_code == 400
    assert "Pick a seller" in response.text


async def test_agree_as_a_new_test_seller_creates_it_on_the_chosen_marketplace(
    sandbox: SandboxHandle, browser: httpx.AsyncClient, ebay_client: EbayClient
) -> None:
    page = await _open_consent(browser, ebay_client)
    assert 'value="new"' in page
    assert '<option value="2">EBAY_CA (Canada, site 2)</option>' in page
    fields = _form_fields(page)
    response = await browser.post(
        "/oauth2/authorize",
        data={
            **fields,
            "account": "new",
            "seller": "demo_us_seller",  # the list always sends a value; "new" wins
            "new_username": "montreal_parts",
            "new_site": "2",
            "decision": "agree",
        },
    )
    assert response.status_code == 302, response.text
    code = parse_qs(urlsplit(response.headers["location"]).query)["code"][0]
    token = await ebay_client.exchange_code(code)
    user = await ebay_client.identity_user(token.access_token.get_secret_value())
    assert user.username == "montreal_parts"
    assert user.registration_marketplace_id == "EBAY_CA"
    created = {s["username"]: s for s in sandbox.sellers()}["montreal_parts"]
    assert created["user_id"] == user.user_id
    assert created["site_id"] == 2


@pytest.mark.parametrize(
    ("username", "says"),
    [
        ("", "Give the new test seller a username."),
        ("ab", "A username has 6 to 64"),
        ("demo_uk_seller", "A seller named &#x27;demo_uk_seller&#x27; exists already"),
    ],
)
async def test_a_refused_new_test_seller_shows_why_and_keeps_what_was_typed(
    sandbox: SandboxHandle,
    browser: httpx.AsyncClient,
    ebay_client: EbayClient,
    username: str,
    says: str,
) -> None:
    fields = _form_fields(await _open_consent(browser, ebay_client))
    before = len(sandbox.sellers())
    response = await browser.post(
        "/oauth2/authorize",
        data={
            **fields,
            "account": "new",
            "new_username": username,
            "new_site": "77",
            "decision": "agree",
        },
    )
    assert response.status_code == 400
    assert says in response.text
    assert f'name="new_username" value="{username}"' in response.text
    assert '<option value="77" selected>' in response.text
    assert 'id="account-new" name="account" value="new" checked' in response.text
    assert _form_fields(response.text)["state"] == "csrf-state-1"
    assert len(sandbox.sellers()) == before


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("client_id", "someone-else"),
        ("redirect_uri", "https://not-a-runame.example/callback"),
        ("response_type", "token"),
        ("scope", "https://api.ebay.com/oauth/api_scope/made.up"),
    ],
)
async def test_bad_authorize_parameters_get_ebays_invalid_request(
    browser: httpx.AsyncClient, ebay_client: EbayClient, param: str, value: str
) -> None:
    url = httpx.URL(ebay_client.consent_url("s"))
    response = await browser.get(url.copy_set_param(param, value))
    assert response.status_code == 400
    body = response.json()
    assert body["error_id"] == "invalid_request"
    assert body["http_status_code"] == 400
