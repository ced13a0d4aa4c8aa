"""/docs and /redoc work without the internet: pinned assets from the package, no inline script,
a strict Content-Security-Policy; in a real browser they render with no request leaving the
origin and no CSP violation."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from connector_api.routes.docs import DOCS_CSP, VENDOR_DIR
from connector_api.settings import ApiSettings
from connector_devstack.embedded import free_port
from tests.api.conftest import Api
from tests.api.served import ServedApi
from tests.api.test_browser import CHROMIUM, CHROMIUM_ARGS

REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
ASSET = re.compile(r'(?:src|href)="([^"]+)"')


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_pages_load_only_pinned_assets_of_this_origin_under_a_strict_csp(
    api: Api, path: str
) -> None:
    page = await api.client.get(path)
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert policy == DOCS_CSP
    scripts = re.search(r"script-src ([^;]*)", policy)
    assert scripts is not None
    assert scripts.group(1) == "'self'"  # no inline script, no eval, no other origin
    assert "<script>" not in page.text  # every script has a src (ours)
    assets = ASSET.findall(page.text)
    assert assets
    for asset in assets:
        assert asset.startswith("/static/"), asset
        served = await api.client.get(asset)
        assert served.status_code == 200, asset
        assert served.content, asset
    assert "cdn" not in page.text.lower()


async def test_the_served_assets_are_the_pinned_files_of_the_wheel(api: Api) -> None:
    for name, kind in (
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "text/css"),
        ("redoc.standalone.js", "javascript"),
    ):
        served = await api.client.get(f"/static/api-docs/{name}")
        assert kind in served.headers["content-type"]
        assert served.content == (VENDOR_DIR / name).read_bytes()


@pytest.fixture
def served_api(api_settings: ApiSettings) -> Iterator[ServedApi]:
    with ServedApi(api_settings, free_port()) as served:
        yield served


@pytest.fixture
async def browser_page() -> AsyncIterator[object]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is not installed (`make test` installs Debian's chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context()
        yield await context.new_page()
        await context.close()
        await browser.close()


@pytest.mark.browser
@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("/docs", "#swagger-ui .opblock-summary-path >> text=/ebay-accounts"),
        ("/redoc", "redoc >> text=Connect eBay seller accounts"),
    ],
)
async def test_docs_render_in_a_browser_without_leaving_the_origin_or_breaking_the_csp(
    served_api: ServedApi, browser_page: object, path: str, rendered: str
) -> None:
    from playwright.async_api import ConsoleMessage, Page, Request, Response, expect

    page = browser_page
    assert isinstance(page, Page)
    answered: list[str] = []
    blocked: list[tuple[str, str]] = []
    console: list[str] = []

    def on_response(response: Response) -> None:
        answered.append(response.url)

    def on_failed(request: Request) -> None:
        blocked.append((request.url, request.failure or ""))

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            console.append(message.text)

    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    page.on("console", on_console)
    await page.goto(f"{served_api.url}{path}")
    await expect(page.locator(rendered).first).to_be_visible(timeout=30_000)
    # Nothing was fetched from anywhere else.
    ours = (served_api.url, f"blob:{served_api.url}", "data:")
    assert [url for url in answered if not url.startswith(ours)] == []
    # ReDoc's "API docs by Redocly" footer asks for its logo on cdn.redoc.ly (no option turns
    # it off): the CSP stops it in the browser, so it never leaves the machine.
    for url, failure in blocked:
        assert url == REDOC_LOGO, (url, failure)
        assert "csp" in failure.lower()
    violations = [text for text in console if "Content Security Policy" in text]
    assert [text for text in violations if REDOC_LOGO not in text] == []
