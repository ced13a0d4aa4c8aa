"""The admin console in a real headless Chromium (Playwright driving Debian's chromium), as an
operations team uses it: the counts bar filtering the table, a status change arriving without a
reload, search, sort, pages of 300 accounts, the account page and its health chart, a refused
rename keeping what was typed, connecting a new test seller through the sandbox's consent page,
and axe-core's accessibility check (no serious or critical violation)."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_api.devtokens import mint_dev_token
from connector_api.settings import ApiSettings
from connector_common.crypto import TokenCipher
from connector_common.db.engine import create_session_factory, unit_of_work
from connector_common.db.models import (
    AccountHistory,
    EbayAccount,
    EbayToken,
    HealthCheck,
    Organisation,
)
from connector_common.events import utcnow
from connector_common.settings import EbaySettings
from connector_devstack.embedded import free_port
from tests.api.served import ServedApi
from tests.fixtures.factories import make_account, make_org, make_token
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
AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"
ORG = "browser-org"


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
            "api": api_settings.api.model_copy(
                update={"public_url": url, "console_refresh_seconds": 1}
            ),
        }
    )
    with ServedApi(settings, port) as served:
        yield served


@pytest.fixture
async def page(served_api: ServedApi, dev_secret: str) -> AsyncIterator[Any]:
    """A logged-in page; fails the test on any error the page's own console reports (a CSP
    violation, a failed script), HTTP answers aside."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is not installed (`make test` installs Debian's chromium)")
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        tab = await context.new_page()
        errors: list[str] = []
        # A refused form is answered 422 on purpose: Chromium reports that as an error too.
        tab.on(
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type == "error" and "Failed to load resource" not in m.text
                else None
            ),
        )
        tab.on("pageerror", lambda e: errors.append(str(e)))
        token = mint_dev_token(dev_secret, org=ORG, role="admin", subject="bea")
        await tab.goto(f"{served_api.url}/admin")
        await tab.fill("textarea[name=token]", token)
        await tab.get_by_role("button", name="Log in").click()
        await expect(tab.get_by_test_id("flash")).to_have_text("Logged in as bea.")
        yield tab
        await context.close()
        await browser.close()
        assert errors == [], errors


async def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    await page.evaluate(AXE.read_text())
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


async def seed(
    engine: AsyncEngine, cipher: TokenCipher, count: int, **by_index: dict[str, Any]
) -> list[EbayAccount]:
    """``count`` accounts named house-000...; ``by_index`` gives some of them other fields."""
    sessions = create_session_factory(engine)
    made = []
    async with unit_of_work(sessions) as session:
        org = await session.scalar(select(Organisation).where(Organisation.external_id == ORG))
        org = org or await make_org(session, ORG)  # the login made it already
        for i in range(count):
            fields = dict(by_index.get(f"i{i}", {}))
            token_fields = {k[6:]: fields.pop(k) for k in list(fields) if k.startswith("token_")}
            account = await make_account(
                session, org, f"house-{i:03d}", username=f"seller_{i:03d}", **fields
            )
            await make_token(session, account, cipher, **token_fields)
            made.append(account)
    return made


def names_in(rows: list[str]) -> list[str]:
    return [row.split("\n")[0].strip() for row in rows]


async def test_counts_bar_search_sort_and_pages_of_300_accounts(
    page: Any, served_api: ServedApi, engine: AsyncEngine, api_settings: ApiSettings
) -> None:
    from playwright.async_api import expect

    now = utcnow()
    special: dict[str, dict[str, Any]] = {
        "i7": {"token_last_refresh_error": "transient: eBay answered 503"},
        "i8": {"token_last_refresh_error": "transient: eBay answered 503"},
        "i150": {"token_reconnect_required_at": now},
        "i299": {"is_active": False, "deactivated_at": now},
    }
    await seed(engine, TokenCipher(api_settings.key_ring()), 300, **special)
    await page.goto(f"{served_api.url}/admin")
    table = page.get_by_test_id("accounts")
    rows = table.locator("tbody tr")
    await expect(page.locator("#count-all .count-n")).to_have_text("300")
    await expect(page.locator("#count-error .count-n")).to_have_text("2")
    await expect(rows).to_have_count(50)
    await expect(page).to_have_title(f"Accounts · {ORG} · eBay connector")
    assert await axe_violations(page) == []
    await page.set_viewport_size({"width": 390, "height": 900})  # a phone
    assert await axe_violations(page) == []
    await page.set_viewport_size({"width": 1400, "height": 1000})

    # The counts bar filters the table (and says which filter is on).
    await page.locator("#count-error").click()
    await expect(rows).to_have_count(2)
    await expect(table.locator("tbody tr[data-status=error]")).to_have_count(2)
    await expect(page.locator("#count-error")).to_have_attribute("aria-current", "true")
    await expect(page).to_have_url(re.compile(re.escape("status=error")))
    await expect(page).to_have_title(f"Error · Accounts · {ORG} · eBay connector")
    await page.locator("#count-all").click()
    await expect(rows).to_have_count(50)

    # Search: house name or eBay username, as you type.
    await page.get_by_label("Search").fill("SELLER_15")
    await expect(table.locator("tbody tr")).to_have_count(10)  # seller_150 .. seller_159
    await page.get_by_label("Search").fill("house-150")
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator(".badge")).to_have_text("reconnect required")
    await expect(page).to_have_url(re.compile(re.escape("q=house-150")))
    await page.get_by_label("Search").fill("")
    await expect(rows).to_have_count(50)

    # Sort by status (the most urgent first), then the other way round.
    await page.locator("#sort-status").click()
    await expect(rows.first).to_have_attribute("data-status", "reconnect_required")
    await expect(page.locator("th[aria-sort=ascending]")).to_contain_text("Status")
    await page.locator("#sort-status").click()
    await expect(rows.first).to_have_attribute("data-status", "deactivated")
    await expect(page.locator("th[aria-sort=descending]")).to_contain_text("Status")
    await page.locator("#sort-house_name").click()
    await expect(rows.first).to_have_attribute("data-house-name", "house-000")

    # Pages through the API's cursors: every account once, in order.
    seen: list[str] = []
    for number in range(1, 7):
        await expect(table.locator("caption")).to_contain_text(f"page {number}")
        seen += [str(n) for n in await rows.evaluate_all("rs => rs.map(r => r.dataset.houseName)")]
        if number < 6:
            await page.get_by_test_id("next-page").click()
    assert seen == [f"house-{i:03d}" for i in range(300)]
    await expect(page.get_by_test_id("next-page")).to_have_count(0)
    await expect(page).to_have_url(re.compile(re.escape("page=6")))


async def test_a_status_change_shows_up_without_a_reload(
    page: Any, served_api: ServedApi, engine: AsyncEngine, api_settings: ApiSettings
) -> None:
    from playwright.async_api import expect

    accounts = await seed(engine, TokenCipher(api_settings.key_ring()), 3)
    await page.goto(f"{served_api.url}/admin")
    row = page.locator("tr[data-house-name='house-001']")
    await expect(row.locator(".badge")).to_have_text("healthy")
    await expect(page.locator("#count-healthy .count-n")).to_have_text("3")
    await page.evaluate("window.__sameDocument = true")

    async with unit_of_work(create_session_factory(engine)) as session:
        await session.execute(
            update(EbayToken)
            .where(EbayToken.account_id == accounts[1].id)
            .values(reconnect_required_at=utcnow(), refresh_enabled=False)
        )

    await expect(row.locator(".badge")).to_have_text("reconnect required", timeout=15_000)
    await expect(row).to_have_class("changed")
    await expect(row.locator(".change")).to_have_text("changed, was healthy")
    await expect(page.locator("#count-reconnect_required .count-n")).to_have_text("1")
    await expect(page.locator("#count-reconnect_required .delta")).to_have_text("+1")
    await expect(page.locator("#changes")).to_contain_text("house-001 is now reconnect required")
    assert await page.evaluate("window.__sameDocument === true")  # no reload happened
    # Marking changes as seen clears the marks; they stay cleared after the next update.
    await page.get_by_role("button", name="Mark changes as seen").click()
    await expect(row).not_to_have_class("changed")
    await expect(page.locator(".count .delta")).to_have_count(0)


async def test_account_page_draws_its_checks_and_a_refused_rename_keeps_the_typed_value(
    page: Any, served_api: ServedApi, engine: AsyncEngine, api_settings: ApiSettings
) -> None:
    from playwright.async_api import expect

    account, _other = await seed(engine, TokenCipher(api_settings.key_ring()), 2)
    now = utcnow()
    async with unit_of_work(create_session_factory(engine)) as session:
        for i in range(14):  # 12 in the last day (two unhealthy), two older ones
            at = now - timedelta(hours=2 * i + 1) - (timedelta(days=2) if i >= 12 else timedelta())
            session.add(
                HealthCheck(
                    account_id=account.id,
                    checked_at=at,
                    outcome="unhealthy" if i in (3, 4) else "healthy",
                    latency_ms=100 + 10 * i,
                    api="trading",
                )
            )
        for i in range(30):  # enough history to scroll
            session.add(
                AccountHistory(
                    org_id=account.org_id,
                    account_id=account.id,
                    occurred_at=now - timedelta(minutes=30 * i + 10),
                    type="token.refreshed",
                    details={"house_name": "house-000", "token_version": 40 - i},
                )
            )
        session.add(
            AccountHistory(
                org_id=account.org_id,
                account_id=account.id,
                occurred_at=now - timedelta(minutes=5),
                type="token.refresh_failed",
                failure=True,
                details={"house_name": "house-000", "reason": "transient: eBay answered 503"},
            )
        )
    await page.goto(f"{served_api.url}/admin")
    await page.locator("tr[data-house-name='house-000'] td.house a").click()
    await expect(page.get_by_test_id("account-title")).to_have_text("house-000")
    await expect(page).to_have_title("house-000 · Accounts · eBay connector")
    chart = page.get_by_test_id("health-chart")
    await expect(chart.locator(".mark")).to_have_count(12)
    await expect(chart.locator(".mark-unhealthy")).to_have_count(2)
    await expect(chart.locator("polyline.latency")).to_have_count(1)
    await expect(page.get_by_test_id("token-history")).to_contain_text("Refresh failed")
    await expect(page.get_by_test_id("token-history")).to_contain_text("eBay answered 503")
    await page.locator("#range-7d").click()
    await expect(page.get_by_test_id("health-chart").locator(".mark")).to_have_count(14)
    assert await axe_violations(page) == []
    await page.set_viewport_size({"width": 390, "height": 900})  # a phone
    assert await axe_violations(page) == []
    await page.set_viewport_size({"width": 1400, "height": 1000})

    # A rename the server refuses (the name is taken): the page comes back with the typed
    # value and the reason next to the field.
    form = page.get_by_test_id("edit-form")
    await form.get_by_label("House name").fill("HOUSE-001")
    await form.get_by_role("button", name="Save").click()
    await expect(page.get_by_test_id("edit-house_name-error")).to_contain_text("already used")
    await expect(form.get_by_label("House name")).to_have_value("HOUSE-001")
    await expect(form.get_by_label("House name")).to_have_attribute("aria-invalid", "true")
    assert await axe_violations(page) == []
    # Accepted, it comes back to the account page with the new name.
    await form.get_by_label("House name").fill("Lisbon")
    await form.get_by_role("button", name="Save").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Saved 'Lisbon'.")
    await expect(page.get_by_test_id("account-title")).to_have_text("Lisbon")
    await page.get_by_role("button", name="Deactivate").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Deactivated 'Lisbon'.")
    await expect(page.get_by_role("button", name="Reactivate")).to_be_visible()


async def test_a_new_test_seller_is_connected_through_the_consent_page(
    page: Any, served_api: ServedApi, sandbox: SandboxHandle
) -> None:
    from playwright.async_api import expect

    connect = page.get_by_test_id("connect-form")
    await connect.get_by_label("House name").fill("Montreal")
    await connect.get_by_label("Purpose").fill("CA orders")
    await connect.get_by_role("button", name="Connect with eBay").click()
    await page.wait_for_url("**/oauth2/authorize**")
    assert await axe_violations(page) == []
    await page.get_by_label("A new test seller").check()
    await page.get_by_label("Username").fill("montreal_parts")
    await page.get_by_label("Registered on").select_option("2")
    await page.get_by_role("button", name="Agree").click()

    await page.wait_for_url(f"{served_api.url}/admin")
    await expect(page.get_by_test_id("flash")).to_have_text("Connected 'Montreal'.")
    row = page.locator("tr[data-house-name='Montreal']")
    await expect(row.locator("td.marketplace")).to_contain_text("EBAY_CA")
    await expect(row.locator(".site-id")).to_have_text("2")
    await expect(row).to_contain_text("montreal_parts")
    assert "montreal_parts" in {s["username"] for s in sandbox.sellers()}

    # A refused connect (the house name is taken) keeps what was typed, says why by the field.
    await connect.get_by_label("House name").fill("montreal")
    await connect.get_by_label("Purpose").fill("again")
    await connect.get_by_role("button", name="Connect with eBay").click()
    await expect(page.get_by_test_id("connect-house_name-error")).to_contain_text("already used")
    await expect(connect.get_by_label("House name")).to_have_value("montreal")
    await expect(connect.get_by_label("Purpose")).to_have_value("again")
