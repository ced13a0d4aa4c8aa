"""The admin page in a real headless Chromium (Playwright driving Debian's chromium): log in,
connect a sandbox seller through the real consent page, see it listed with the right
marketplace and site, rename it, deactivate it."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from connector_api.devtokens import mint_dev_token
from connector_api.settings import ApiSettings
from connector_common.settings import EbaySettings
from connector_devstack.embedded import free_port
from tests.api.served import ServedApi
from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def served_api(
    api_settings: ApiSettings, ebay_settings: EbaySettings, sandbox: SandboxHandle
) -> Iterator[ServedApi]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sandbox.register_app(
        sandbox.client_id, sandbox.client_secret, sandbox.ru_name, f"{url}/ebay/oauth/callback"
    )
    settings = api_settings.model_copy(
        update={
            "ebay": ebay_settings,
            "api": api_settings.api.model_copy(update={"public_url": url}),
        }
    )
    with ServedApi(settings, port) as served:
        yield served


@pytest.fixture
async def page() -> AsyncIterator[object]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is not installed (`make test` installs Debian's chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context()
        yield await context.new_page()
        await context.close()
        await browser.close()


async def test_admin_connects_renames_and_deactivates_a_uk_seller_in_a_browser(
    served_api: ServedApi, page: object, dev_secret: str
) -> None:
    from playwright.async_api import Page, expect

    assert isinstance(page, Page)
    token = mint_dev_token(dev_secret, org="browser-org", role="admin", subject="bea")

    # Log in by pasting a token.
    await page.goto(f"{served_api.url}/admin")
    await page.fill("textarea[name=token]", token)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Logged in as bea.")

    # Connect: our form, then eBay's (the sandbox's) real consent page.
    connect = page.get_by_test_id("connect-form")
    await connect.locator("input[name=house_name]").fill("London")
    await connect.locator("input[name=purpose]").fill("UK orders")
    await connect.locator("button[type=submit]").click()
    await page.wait_for_url("**/oauth2/authorize**")
    await page.select_option("select[name=seller]", "demo_uk_seller")
    await page.click("button[value=agree]")

    # Back through the callback to the admin page, with the account listed.
    await page.wait_for_url(f"{served_api.url}/admin")
    await expect(page.get_by_test_id("flash")).to_have_text("Connected 'London'.")
    row = page.locator("tr[data-house-name='London']")
    await expect(row.locator("td.marketplace")).to_have_text("EBAY_GB")
    await expect(row.locator("td.site")).to_have_text("3")
    await expect(row.locator(".badge")).to_have_text("healthy")

    # Rename.
    await row.locator("summary").click()
    await row.locator("input[name=house_name]").fill("London Bridge")
    await row.get_by_role("button", name="Save").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Saved 'London Bridge'.")
    row = page.locator("tr[data-house-name='London Bridge']")
    await expect(row.locator("td.house")).to_have_text("London Bridge")

    # Deactivate.
    await row.locator("button:text('Deactivate')").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Deactivated 'London Bridge'.")
    await expect(row.locator(".badge")).to_have_text("deactivated")
    await expect(row.locator("button:text('Reactivate')")).to_be_visible()
