"""The admin console over HTTP: the live part htmx asks for, the account page, forms that come
back with what was typed, actions that return to the page they came from, lenient URLs. (The
browser test drives the same pages in Chromium.)"""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest

from connector_api.pages import status_label, status_tone
from connector_common.db.engine import unit_of_work
from connector_common.db.models import EbayAccount, HealthCheck
from connector_common.events import utcnow
from connector_common.status import AccountStatus
from tests.api.conftest import Api, seed_account
from tests.api.test_admin import csrf_of, flash, login

LIVE = {"HX-Request": "true", "HX-Target": "live"}


@pytest.fixture
def api(org_api: Api) -> Api:
    """These tests share one API and database, each with an org of its own."""
    return org_api


async def test_the_counts_bar_names_every_status_with_its_count(api: Api) -> None:
    await seed_account(api, "ok")
    await seed_account(api, "err", token_last_refresh_error="eBay 503")
    await seed_account(api, "off", is_active=False, deactivated_at=utcnow())
    client = await login(api)
    page = (await client.get("/admin")).text
    counts = dict(re.findall(r'id="count-(\w+)"[^>]*data-count="(\d+)"', page))
    assert counts == {
        s.value: "1" if s.value in ("healthy", "error", "deactivated") else "0"
        for s in AccountStatus
    }
    assert re.search(r'id="count-all"[^>]*>\s*<span class="count-n">3<', page)
    await client.aclose()


def test_a_status_the_pages_do_not_know_yet_still_gets_a_label_and_a_tone() -> None:
    assert status_label("reconsent_due") == "re-consent due"
    assert status_tone("reconsent_due") == "warn"
    assert status_label("some_new_status") == "some new status"
    assert status_tone("some_new_status") == "warn"
    assert status_label(AccountStatus.RECONNECT_REQUIRED) == "reconnect required"


async def test_htmx_gets_only_the_live_part_with_the_page_title(api: Api) -> None:
    await seed_account(api, "Montreal")
    client = await login(api)
    whole = await client.get("/admin", params={"status": "healthy"})
    part = await client.get("/admin", params={"status": "healthy"}, headers=LIVE)
    assert "<html" in whole.text
    assert "<html" not in part.text
    assert part.text.lstrip().startswith("<title>Healthy · Accounts")
    assert 'id="live"' in part.text
    assert 'hx-get="/admin?status=healthy"' in part.text  # polls the same view
    assert "Montreal" in part.text
    assert 'data-testid="connect-form"' not in part.text  # forms stay outside the live part
    await client.aclose()


async def test_htmx_without_a_session_reloads_the_page_to_log_in(api: Api) -> None:
    response = await api.client.get("/admin", headers=LIVE)
    assert response.status_code == 204
    assert response.headers["hx-refresh"] == "true"


async def test_urls_that_make_no_sense_are_ignored_not_an_error_page(api: Api) -> None:
    await seed_account(api, "Montreal")
    client = await login(api)
    response = await client.get(
        "/admin",
        params={"status": "bogus", "sort": "password", "page": "-3", "marketplace": "x'--"},
    )
    assert response.status_code == 200
    assert "Montreal" in response.text
    await client.aclose()


async def test_a_stale_page_link_shows_the_first_page_and_says_so(api: Api) -> None:
    for i in range(3):
        await seed_account(api, f"h{i}")
    client = await login(api)
    response = await client.get("/admin", params={"cursor": "not-a-cursor", "page": "2"})
    assert response.status_code == 200
    assert "That page link is no longer valid" in response.text
    assert "h0" in response.text
    await client.aclose()


async def test_the_account_page_shows_its_checks_history_and_audit(api: Api) -> None:
    account = await seed_account(api, "Montreal", username="maple_parts")
    now = utcnow()
    async with unit_of_work(api.state.sessions) as session:
        for hours, outcome in ((1, "healthy"), (2, "unhealthy"), (30, "healthy")):
            session.add(
                HealthCheck(
                    account_id=account.id,
                    checked_at=now - timedelta(hours=hours),
                    outcome=outcome,
                    latency_ms=120,
                )
            )
    client = await login(api)
    csrf = csrf_of((await client.get("/admin")).text)
    await client.post(
        f"/admin/accounts/{account.id}/edit", data={"purpose": "CA orders", "csrf": csrf}
    )
    page = (await client.get(f"/admin/accounts/{account.id}")).text
    assert "<title>Montreal · Accounts · eBay connector</title>" in page
    assert page.count('class="mark ') == 2  # the last 24 h
    assert 'data-checks="2"' in page
    assert "1 healthy, 1 unhealthy" in page
    week = (await client.get(f"/admin/accounts/{account.id}", params={"range": "7d"})).text
    assert week.count('class="mark ') == 3
    assert "Purpose changed" in page  # events
    assert "account.purpose_changed" in page  # audit
    assert "maple_parts" in page
    await client.aclose()


async def test_an_action_started_on_the_account_page_comes_back_to_it(api: Api) -> None:
    account = await seed_account(api, "Montreal")
    client = await login(api)
    csrf = csrf_of((await client.get(f"/admin/accounts/{account.id}")).text)
    response = await client.post(
        f"/admin/accounts/{account.id}/deactivate", data={"csrf": csrf, "back": "account"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/accounts/{account.id}"
    assert flash(api, response) == ("success", "Deactivated 'Montreal'.")
    gone = await client.post(
        f"/admin/accounts/{account.id}/delete", data={"csrf": csrf, "back": "account"}
    )
    assert gone.headers["location"] == "/admin"  # no account page left to return to
    missing = await client.get(f"/admin/accounts/{account.id}")
    assert missing.status_code == 303
    assert flash(api, missing) == ("error", "no such eBay account")
    await client.aclose()


async def test_a_refused_rename_keeps_the_typed_value_and_says_why_by_the_field(
    api: Api,
) -> None:
    await seed_account(api, "Montreal")
    account = await seed_account(api, "Toronto")
    client = await login(api)
    csrf = csrf_of((await client.get(f"/admin/accounts/{account.id}")).text)
    taken = await client.post(
        f"/admin/accounts/{account.id}/edit",
        data={"house_name": "MONTREAL", "purpose": "typed", "csrf": csrf, "back": "account"},
    )
    assert taken.status_code == 422
    assert 'id="edit-house_name" name="house_name" value="MONTREAL"' in taken.text
    assert 'aria-invalid="true" aria-describedby="edit-house_name-error"' in taken.text
    assert re.search(r'id="edit-house_name-error"[^>]*>[^<]*already used', taken.text)
    assert 'name="purpose" value="typed"' in taken.text
    blank = await client.post(
        f"/admin/accounts/{account.id}/edit",
        data={"house_name": "\u200b", "csrf": csrf, "back": "account"},
    )
    assert blank.status_code == 422
    assert re.search(r'id="edit-house_name-error"[^>]*>[^<]*invisible', blank.text)
    await client.aclose()


async def test_a_refused_connect_keeps_the_typed_values(api: Api) -> None:
    await seed_account(api, "Montreal")
    client = await login(api)
    csrf = csrf_of((await client.get("/admin")).text)
    response = await client.post(
        "/admin/connect", data={"house_name": "montreal", "purpose": "CA", "csrf": csrf}
    )
    assert response.status_code == 422
    assert 'id="connect-house_name" name="house_name" value="montreal"' in response.text
    assert 'id="connect-purpose" name="purpose" value="CA"' in response.text
    assert re.search(r'id="connect-house_name-error"[^>]*>[^<]*already used', response.text)
    await client.aclose()


async def test_a_viewer_sees_the_account_page_without_actions(api: Api) -> None:
    account = await seed_account(api, "Visible")
    client = await login(api, role="viewer")
    page = (await client.get(f"/admin/accounts/{account.id}")).text
    assert "Visible" in page
    assert "/deactivate" not in page
    assert 'data-testid="edit-form"' not in page
    await client.aclose()


async def test_the_console_shows_the_orgs_id_and_event_subject(api: Api) -> None:
    client: httpx.AsyncClient = await login(api)
    page = (await client.get("/admin")).text
    org_id = await api.org_id(api.default_org)
    assert f'<code data-testid="org-id">{org_id}</code>' in page
    assert f"{api.state.namespace}.events.{org_id}.&gt;" in page
    assert 'href="/docs"' in page
    await client.aclose()


async def test_a_tombstone_offers_only_delete_and_shows_no_empty_values(api: Api) -> None:
    """An account eBay deleted keeps no seller data: reactivate and reconnect are refused (409),
    so the page does not offer them, and its empty fields read as a dash, not 'None'."""
    account = await seed_account(api, "Gone")
    async with unit_of_work(api.state.sessions) as session:
        row = await session.get(EbayAccount, account.id)
        assert row is not None
        row.deleted_by_ebay_at = utcnow()
        row.is_active = False
        row.deactivated_at = utcnow()
        row.ebay_user_id = row.username = row.eias_token = None
        row.marketplace_id = row.site_code = None
        row.site_id = None
    client = await login(api)
    page = (await client.get(f"/admin/accounts/{account.id}")).text
    assert "deleted by eBay" in page
    assert f"/admin/accounts/{account.id}/delete" in page
    assert "/reactivate" not in page
    assert "/reconnect" not in page
    console = (await client.get("/admin")).text
    for html in (page, console):
        assert "None" not in re.sub(r"<script.*?</script>", "", html, flags=re.S)
    await client.aclose()
