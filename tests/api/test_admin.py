"""The admin page over HTTP: paste-token login, session cookie, CSRF on every form, the
accounts table, and every action (the browser test drives the same page in Chromium)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from connector_common.db.models import EbayAccount, EbayToken, OutboxMessage
from connector_common.events import utcnow
from tests.api.conftest import Api, seed_account


@pytest.fixture
def api(org_api: Api) -> Api:
    """These tests share one API and database, each with an org of its own."""
    return org_api


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, "no CSRF token on the page"
    return match.group(1)


async def login(api: Api, role: str = "admin") -> httpx.AsyncClient:
    """A browser-like client (own cookie jar) logged in by pasting a token."""
    client = httpx.AsyncClient(transport=api.client._transport, base_url=str(api.client.base_url))
    page = await client.get("/admin")
    response = await client.post(
        "/admin/login", data={"csrf": csrf_of(page.text), "token": api.token(role=role)}
    )
    assert response.status_code == 303
    return client


def flash(api: Api, response: httpx.Response) -> tuple[str, str]:
    message = api.state.admin_sessions.read_flash(response.cookies.get("connector_flash"))
    assert message is not None, "no flash message"
    return message.kind, message.message


async def test_without_a_session_the_page_is_the_login_form(api: Api) -> None:
    response = await api.client.get("/admin")
    assert response.status_code == 200
    assert 'action="/admin/login"' in response.text
    assert "connector token mint" in response.text  # development hint
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    cookie = response.headers["set-cookie"]
    assert "connector_login_csrf=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie


async def test_pasting_a_token_starts_an_http_only_strict_session(api: Api) -> None:
    client = httpx.AsyncClient(transport=api.client._transport, base_url="http://api.test")
    page = await client.get("/admin")
    response = await client.post(
        "/admin/login", data={"csrf": csrf_of(page.text), "token": api.token()}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin"
    session_cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("connector_session=")
    )
    assert "HttpOnly" in session_cookie
    assert "SameSite=strict" in session_cookie
    assert "Secure" not in session_cookie  # http:// public URL in this test
    assert api.token() not in session_cookie  # our own session, not the pasted token
    table = await client.get("/admin")
    assert "alice" in table.text
    assert api.default_org in table.text
    await client.aclose()


async def test_login_without_the_form_token_is_refused(api: Api) -> None:
    response = await api.client.post("/admin/login", data={"csrf": "x", "token": api.token()})
    assert response.status_code == 303
    assert "connector_session=" not in response.headers.get("set-cookie", "")
    assert flash(api, response)[0] == "error"


async def test_login_with_a_bad_token_says_why(api: Api) -> None:
    page = await api.client.get("/admin")
    response = await api.client.post(
        "/admin/login", data={"csrf": csrf_of(page.text), "token": "not.a.token"}
    )
    kind, message = flash(api, response)
    assert kind == "error"
    assert "not accepted" in message


async def test_a_forged_session_cookie_is_ignored(api: Api) -> None:
    response = await api.client.get(
        "/admin", headers={"Cookie": "connector_session=eyJhbGciOiJub25lIn0.e30."}
    )
    assert 'action="/admin/login"' in response.text


async def test_the_table_shows_every_column_of_an_account(api: Api) -> None:
    await seed_account(
        api,
        "Warehouse-UK",
        purpose="UK orders",
        username="uk_seller",
        marketplace_id="EBAY_GB",
        site_id=3,
        site_code="UK",
        last_health_at=utcnow(),
        last_health_outcome="unhealthy",
        last_health_latency_ms=250,
        last_health_error="eBay said 931",
    )
    client = await login(api)
    page = (await client.get("/admin")).text
    row = page[page.index('data-house-name="Warehouse-UK"') :]
    row = row[: row.index("</tr>")]
    for expected in ("UK orders", "uk_seller", "EBAY_GB", ">3<", "unhealthy", "250 ms", "931"):
        assert expected in row, expected
    assert 'class="badge badge-bad"' in row
    assert re.search(r"in 1h \d+m", row)  # token expires in
    await client.aclose()


async def test_a_form_without_the_csrf_token_changes_nothing(api: Api) -> None:
    account = await seed_account(api, "A")
    client = await login(api)
    response = await client.post(f"/admin/accounts/{account.id}/deactivate", data={"csrf": "no"})
    assert flash(api, response) == (
        "error",
        "The form had expired; nothing was changed. Try again.",
    )
    async with api.state.sessions() as session:
        row = await session.get(EbayAccount, account.id)
    assert row is not None
    assert row.is_active
    await client.aclose()


async def test_a_form_token_with_non_ascii_characters_changes_nothing(api: Api) -> None:
    account = await seed_account(api, "A")
    client = await login(api)
    response = await client.post(
        f"/admin/accounts/{account.id}/deactivate", data={"csrf": "t\u00f6ken"}
    )
    assert response.status_code == 303
    assert flash(api, response)[0] == "error"
    async with api.state.sessions() as session:
        row = await session.get(EbayAccount, account.id)
    assert row is not None
    assert row.is_active
    await client.aclose()


async def test_a_login_form_token_with_non_ascii_characters_is_refused(api: Api) -> None:
    async with httpx.AsyncClient(
        transport=api.client._transport, base_url=str(api.client.base_url)
    ) as browser:
        await browser.get("/admin")  # the login form's cookie
        response = await browser.post(
            "/admin/login", data={"csrf": "t\u00f6ken", "token": api.token()}
        )
    assert response.status_code == 303
    assert "connector_session=" not in response.headers.get("set-cookie", "")
    assert flash(api, response)[0] == "error"


async def test_a_flash_cookie_with_non_ascii_characters_is_ignored(api: Api) -> None:
    cookie = "connector_flash=e30.s\u00e9gn\u00e9".encode()
    response = await api.client.get("/admin", headers={b"Cookie": cookie})
    assert response.status_code == 200
    assert 'action="/admin/login"' in response.text


async def test_rename_deactivate_reactivate_refresh_check_and_delete_from_the_page(
    api: Api,
) -> None:
    account = await seed_account(api, "Old")
    client = await login(api)
    csrf = csrf_of((await client.get("/admin")).text)
    base = f"/admin/accounts/{account.id}"
    steps = [
        ("edit", {"house_name": "New", "purpose": "returns"}, "Saved 'New'."),
        ("deactivate", {}, "Deactivated 'New'."),
        ("reactivate", {}, "Reactivated 'New'."),
        ("refresh", {}, "Token refresh requested."),
        ("health-check", {}, "Health check requested."),
    ]
    for action, form, said in steps:
        response = await client.post(f"{base}/{action}", data={**form, "csrf": csrf})
        assert flash(api, response) == ("success", said), action
    async with api.state.sessions() as session:
        row = await session.get(EbayAccount, account.id)
        token = await session.get(EbayToken, account.id)
        queued = (
            await session.scalars(
                select(OutboxMessage.subject).where(OutboxMessage.payload.contains(str(account.id)))
            )
        ).all()
    assert row is not None
    assert (row.house_name, row.purpose, row.is_active) == (
        "New",
        "returns",
        True,
    )
    assert token is not None
    assert token.refresh_requested_at is not None
    assert f"{api.state.namespace}.work.refresh" in queued
    assert f"{api.state.namespace}.work.health" in queued
    response = await client.post(f"{base}/delete", data={"csrf": csrf})
    assert flash(api, response) == ("success", "Account deleted.")
    await client.aclose()


async def test_a_refused_action_shows_the_reason(api: Api) -> None:
    await seed_account(api, "Montreal")
    account = await seed_account(api, "Toronto")
    client = await login(api)
    csrf = csrf_of((await client.get("/admin")).text)
    response = await client.post(
        f"/admin/accounts/{account.id}/edit", data={"house_name": "montreal", "csrf": csrf}
    )
    kind, message = flash(api, response)
    assert kind == "error"
    assert "'montreal' is already used" in message
    invalid = await client.post(
        f"/admin/accounts/{account.id}/edit", data={"house_name": "x" * 101, "csrf": csrf}
    )
    assert flash(api, invalid)[0] == "error"
    await client.aclose()


async def test_connect_form_sends_the_browser_to_ebays_consent_page(api: Api) -> None:
    client = await login(api)
    csrf = csrf_of((await client.get("/admin")).text)
    response = await client.post(
        "/admin/connect", data={"house_name": "Berlin", "purpose": "DE", "csrf": csrf}
    )
    assert response.status_code == 303
    target = urlsplit(response.headers["location"])
    assert target.path == "/oauth2/authorize"
    assert "state=" in target.query
    await client.aclose()


async def test_a_viewer_sees_the_table_without_actions(api: Api) -> None:
    await seed_account(api, "Visible")
    client = await login(api, role="viewer")
    page = (await client.get("/admin")).text
    assert "Visible" in page
    assert "/deactivate" not in page
    assert 'action="/admin/connect"' not in page
    await client.aclose()


async def test_logout_ends_the_session(api: Api) -> None:
    client = await login(api)
    csrf = csrf_of((await client.get("/admin")).text)
    response = await client.post("/admin/logout", data={"csrf": csrf})
    assert 'connector_session=""' in response.headers["set-cookie"]
    assert 'action="/admin/login"' in (await client.get("/admin")).text
    await client.aclose()


async def test_flash_message_is_shown_once(api: Api) -> None:
    client = await login(api)
    first = await client.get("/admin")
    assert "Logged in as alice." in first.text
    second = await client.get("/admin")
    assert "Logged in as alice." not in second.text
    await client.aclose()


async def test_names_are_escaped_on_the_page(api: Api) -> None:
    await seed_account(api, '<script>alert("x")</script>', purpose="<b>bold</b>")
    client = await login(api)
    page = (await client.get("/admin")).text
    assert "<script>alert" not in page
    assert "<b>bold</b>" not in page
    assert "&lt;script&gt;alert" in page
    await client.aclose()
