"""The OAuth state of an eBay consent (issue 13, point 5): started on the admin page it is bound
to that browser (an HttpOnly, SameSite=Lax nonce cookie), and only a well-formed callback uses
it up."""

from __future__ import annotations

import httpx

from tests.api.conftest import API_URL, Api, state_of
from tests.api.test_admin import csrf_of, login
from tests.fixtures.sandbox import SandboxHandle


async def start_on_the_admin_page(api: Api, house: str) -> tuple[httpx.AsyncClient, str]:
    """A logged-in browser that started a consent from the admin page; eBay's consent URL."""
    browser = await login(api)
    csrf = csrf_of((await browser.get("/admin")).text)
    response = await browser.post(
        "/admin/connect", data={"house_name": house, "purpose": "", "csrf": csrf}
    )
    assert response.status_code == 303
    return browser, response.headers["location"]


def stranger(api: Api) -> httpx.AsyncClient:
    """Another browser (no cookies)."""
    return httpx.AsyncClient(transport=api.client._transport, base_url=API_URL)


async def callback(client: httpx.AsyncClient, **params: str) -> httpx.Response:
    return await client.get("/ebay/oauth/callback", params=params)


async def house_names(api: Api) -> list[str]:
    listed = await api.client.get("/ebay-accounts", headers=api.auth("org-a"))
    return [a["house_name"] for a in listed.json()["items"]]


async def test_the_consent_cookie_is_http_only_lax_and_short_lived(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    browser = await login(connect_api)
    csrf = csrf_of((await browser.get("/admin")).text)
    response = await browser.post(
        "/admin/connect", data={"house_name": "Lyon", "purpose": "", "csrf": csrf}
    )
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("connector_consent=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert f"Max-Age={connect_api.settings.api.oauth_state_ttl_seconds}" in cookie
    await browser.aclose()


async def test_a_consent_started_on_the_admin_page_completes_only_in_its_browser(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    browser, consent_url = await start_on_the_admin_page(connect_api, "Lyon")
    state = state_of(consent_url)
    code = sandbox.grant("demo_uk_seller")
    async with httpx.AsyncClient(
        transport=connect_api.client._transport, base_url=API_URL
    ) as other:
        refused = await callback(other, code=code, state=state)
    assert refused.status_code == 400
    assert "started in another browser" in refused.text
    assert "Lyon" not in await house_names(connect_api)
    # The state was not used up: the browser that started the consent still finishes it.
    done = await callback(browser, code=code, state=state)
    assert done.status_code == 200, done.text
    assert "Lyon" in await house_names(connect_api)
    await browser.aclose()


async def test_two_consents_under_way_in_one_browser_both_complete(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    browser, first = await start_on_the_admin_page(connect_api, "Lyon")
    csrf = csrf_of((await browser.get("/admin")).text)
    second = await browser.post(
        "/admin/connect", data={"house_name": "Lille", "purpose": "", "csrf": csrf}
    )
    for url, seller in ((first, "demo_uk_seller"), (second.headers["location"], "demo_de_seller")):
        response = await callback(browser, code=sandbox.grant(seller), state=state_of(url))
        assert response.status_code == 200, response.text
    assert {"Lyon", "Lille"} <= set(await house_names(connect_api))
    await browser.aclose()


async def test_an_api_started_consent_is_not_bound_to_a_browser(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    started = await connect_api.client.post(
        "/ebay-accounts/connect", json={"house_name": "Nice"}, headers=connect_api.auth("org-a")
    )
    state = state_of(started.json()["consent_url"])
    async with httpx.AsyncClient(
        transport=connect_api.client._transport, base_url=API_URL
    ) as seller:
        response = await callback(seller, code=sandbox.grant("demo_uk_seller"), state=state)
    assert response.status_code == 200, response.text


async def test_a_callback_without_a_code_does_not_use_up_the_state(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    started = await connect_api.client.post(
        "/ebay-accounts/connect", json={"house_name": "Metz"}, headers=connect_api.auth("org-a")
    )
    state = state_of(started.json()["consent_url"])
    for params in (
        {"state": state},
        {"state": state, "code": ""},
        {"state": state, "code": "x" * 3000},
    ):
        incomplete = await callback(connect_api.client, **params)
        assert incomplete.status_code == 400
        assert "no authorization code" in incomplete.text
    done = await callback(connect_api.client, code=sandbox.grant("demo_uk_seller"), state=state)
    assert done.status_code == 200, done.text
