"""Admin sessions live in PostgreSQL (issue 13, point 2): logout, "log out everywhere", the idle
timeout and the absolute expiry end a session for good, so a copied cookie is worth nothing."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from connector_common.db.engine import unit_of_work
from connector_common.db.models import AdminSessionRecord, AuditEntry, EbayAccount
from tests.api.conftest import Api, seed_account
from tests.api.test_admin import csrf_of, flash, login


@pytest.fixture
def api(org_api: Api) -> Api:
    """These tests share one API and database, each with an org of its own."""
    return org_api


def copy_of(api: Api, client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Another browser holding a copy of ``client``'s session cookie (an attacker's)."""
    cookie = client.cookies.get("connector_session")
    assert cookie
    return httpx.AsyncClient(
        transport=api.client._transport,
        base_url=str(api.client.base_url),
        cookies={"connector_session": cookie},
    )


async def is_logged_in(client: httpx.AsyncClient) -> bool:
    page = (await client.get("/admin")).text
    return 'action="/admin/logout"' in page and 'action="/admin/login"' not in page


async def test_a_cookie_copied_before_logout_is_refused_after_it(api: Api) -> None:
    account = await seed_account(api, "Kept")
    browser = await login(api)
    csrf = csrf_of((await browser.get("/admin")).text)
    async with copy_of(api, browser) as attacker:
        assert await is_logged_in(attacker)  # the copy works while the session lives
        await browser.post("/admin/logout", data={"csrf": csrf})
        assert not await is_logged_in(attacker)
        refused = await attacker.post(
            f"/admin/accounts/{account.id}/deactivate", data={"csrf": csrf}
        )
    assert flash(api, refused) == ("error", "Your session has ended: log in again.")
    async with api.state.sessions() as db:
        row = await db.get(EbayAccount, account.id)
    assert row is not None
    assert row.is_active
    await browser.aclose()


async def test_log_out_everywhere_ends_every_session_of_that_person_only(api: Api) -> None:
    laptop, phone = await login(api), await login(api)
    colleague = httpx.AsyncClient(transport=api.client._transport, base_url="http://api.test")
    page = await colleague.get("/admin")
    await colleague.post(
        "/admin/login", data={"csrf": csrf_of(page.text), "token": api.token(sub="bob")}
    )
    assert await is_logged_in(colleague)
    csrf = csrf_of((await laptop.get("/admin")).text)
    response = await laptop.post("/admin/logout-everywhere", data={"csrf": csrf})
    assert flash(api, response) == ("info", "Logged out everywhere (2 sessions ended).")
    assert not await is_logged_in(laptop)
    assert not await is_logged_in(phone)
    assert await is_logged_in(colleague)  # bob's session is his own
    for client in (laptop, phone, colleague):
        await client.aclose()


async def test_log_out_everywhere_needs_the_form_token(api: Api) -> None:
    browser = await login(api)
    response = await browser.post("/admin/logout-everywhere", data={"csrf": "forged"})
    assert flash(api, response)[0] == "error"
    assert await is_logged_in(browser)
    await browser.aclose()


async def test_an_idle_session_ends(api: Api) -> None:
    browser = await login(api)
    assert await is_logged_in(browser)
    idle = api.settings.api.session_idle_seconds
    async with unit_of_work(api.state.sessions) as db:
        org_id = await api.state.orgs.resolve(api.default_org)
        await db.execute(
            update(AdminSessionRecord)
            .where(AdminSessionRecord.org_id == org_id)
            .values(last_seen_at=AdminSessionRecord.last_seen_at - timedelta(seconds=idle + 1))
        )
    assert not await is_logged_in(browser)
    await browser.aclose()


async def test_using_a_session_keeps_it_alive(api: Api) -> None:
    browser = await login(api)
    idle = api.settings.api.session_idle_seconds
    org_id = await api.state.orgs.resolve(api.default_org)
    record = AdminSessionRecord
    async with unit_of_work(api.state.sessions) as db:
        nearly_idle = await db.scalar(
            update(record)
            .where(record.org_id == org_id)
            .values(last_seen_at=record.last_seen_at - timedelta(seconds=idle - 5))
            .returning(record.last_seen_at)
        )
    assert await is_logged_in(browser)  # used just before the idle timeout: renewed
    async with api.state.sessions() as db:
        seen = await db.scalar(select(record.last_seen_at).where(record.org_id == org_id))
    assert nearly_idle is not None
    assert seen is not None
    assert seen > nearly_idle
    await browser.aclose()


async def test_a_session_past_its_absolute_expiry_ends(api: Api) -> None:
    browser = await login(api)
    org_id = await api.state.orgs.resolve(api.default_org)
    async with unit_of_work(api.state.sessions) as db:
        await db.execute(
            update(AdminSessionRecord)
            .where(AdminSessionRecord.org_id == org_id)
            .values(expires_at=AdminSessionRecord.created_at)
        )
    assert not await is_logged_in(browser)
    await browser.aclose()


async def test_the_database_keeps_only_a_hash_of_the_session_id(api: Api) -> None:
    browser = await login(api)
    cookie = browser.cookies.get("connector_session")
    assert cookie
    session_id = cookie.rpartition(".")[0]
    org_id = await api.state.orgs.resolve(api.default_org)
    async with api.state.sessions() as db:
        rows = (
            await db.scalars(select(AdminSessionRecord).where(AdminSessionRecord.org_id == org_id))
        ).all()
    assert [r.id_hash for r in rows] == [hashlib.sha256(session_id.encode()).digest()]
    assert rows[0].subject == "alice"
    assert rows[0].roles == ["admin"]
    await browser.aclose()


async def test_a_cookie_with_a_forged_signature_is_refused_without_a_session(api: Api) -> None:
    browser = await login(api)
    cookie = browser.cookies.get("connector_session")
    assert cookie
    session_id, _, signature = cookie.rpartition(".")
    async with httpx.AsyncClient(
        transport=api.client._transport,
        base_url="http://api.test",
        cookies={"connector_session": f"{session_id}.{signature[::-1]}"},
    ) as forger:
        assert not await is_logged_in(forger)
    await browser.aclose()


async def test_logging_in_and_out_is_audited(api: Api) -> None:
    browser = await login(api)
    csrf = csrf_of((await browser.get("/admin")).text)
    await browser.post("/admin/logout", data={"csrf": csrf})
    org_id = await api.state.orgs.resolve(api.default_org)
    async with api.state.sessions() as db:
        entries = (
            await db.execute(
                select(AuditEntry.actor, AuditEntry.action, AuditEntry.details)
                .where(AuditEntry.org_id == org_id)
                .order_by(AuditEntry.id)
            )
        ).all()
    assert [tuple(e) for e in entries] == [
        ("alice", "session.started", {"method": "token"}),
        ("alice", "session.ended", {}),
    ]
    await browser.aclose()
