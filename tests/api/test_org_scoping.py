"""Every route of the app, called as another org and as a viewer: neither sees nor changes
anything of the first org. The table below must name every route the app has, so a new route
cannot be added without deciding how it is scoped."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import select

from connector_api.app import create_app
from connector_api.auth import Identity
from connector_api.settings import ApiSettings
from connector_common.db.engine import unit_of_work
from connector_common.db.models import (
    AuditEntry,
    EbayAccount,
    EbayToken,
    HealthCheck,
    OAuthState,
    OutboxMessage,
)
from connector_common.events import utcnow
from tests.api.conftest import Api, seed_account

Kind = Literal["read", "write", "public"]


@dataclass(frozen=True)
class Call:
    kind: Kind  # read: viewers may; write: admins only; public: no credentials at all
    body: dict[str, Any] | None = None
    form: dict[str, str] | None = None


ROUTES: dict[tuple[str, str], Call] = {
    ("GET", "/"): Call("public"),
    ("GET", "/me"): Call("read"),
    ("GET", "/healthz"): Call("public"),
    ("GET", "/readyz"): Call("public"),
    ("GET", "/metrics"): Call("public"),  # aggregate counts only; kept off the public ingress
    ("GET", "/openapi.json"): Call("public"),
    ("GET", "/docs"): Call("public"),
    ("GET", "/redoc"): Call("public"),
    ("GET", "/ebay/oauth/callback"): Call("public"),
    ("GET", "/ebay-accounts"): Call("read"),
    ("GET", "/ebay-accounts/summary"): Call("read"),
    ("GET", "/ebay-accounts/{account_id}"): Call("read"),
    ("GET", "/ebay-accounts/{account_id}/health-checks"): Call("read"),
    ("PATCH", "/ebay-accounts/{account_id}"): Call("write", body={"house_name": "Stolen"}),
    ("DELETE", "/ebay-accounts/{account_id}"): Call("write"),
    ("POST", "/ebay-accounts/connect"): Call("write", body={"house_name": "Elsewhere"}),
    ("POST", "/ebay-accounts/{account_id}/reconnect"): Call("write"),
    ("POST", "/ebay-accounts/{account_id}/deactivate"): Call("write"),
    ("POST", "/ebay-accounts/{account_id}/reactivate"): Call("write"),
    ("POST", "/ebay-accounts/{account_id}/refresh"): Call("write"),
    ("POST", "/ebay-accounts/{account_id}/health-check"): Call("write"),
    ("GET", "/audit-events"): Call("write"),  # admins only, though it changes nothing
    ("GET", "/admin"): Call("read"),
    ("GET", "/admin/accounts/{account_id}"): Call("read"),
    ("GET", "/admin/activity"): Call("write"),  # admins only, though it changes nothing
    ("POST", "/admin/login"): Call("public", form={"token": "not-a-token"}),
    ("POST", "/admin/logout"): Call("read", form={}),
    ("POST", "/admin/logout-everywhere"): Call("read", form={}),
    ("GET", "/admin/oidc/login"): Call("public"),
    ("GET", "/admin/oidc/callback"): Call("public"),
    ("POST", "/admin/connect"): Call("write", form={"house_name": "Elsewhere"}),
    ("POST", "/admin/accounts/{account_id}/edit"): Call("write", form={"house_name": "Stolen"}),
    ("POST", "/admin/accounts/{account_id}/reconnect"): Call("write", form={}),
    ("POST", "/admin/accounts/{account_id}/deactivate"): Call("write", form={}),
    ("POST", "/admin/accounts/{account_id}/reactivate"): Call("write", form={}),
    ("POST", "/admin/accounts/{account_id}/refresh"): Call("write", form={}),
    ("POST", "/admin/accounts/{account_id}/health-check"): Call("write", form={}),
    ("POST", "/admin/accounts/{account_id}/delete"): Call("write", form={}),
    # eBay's Marketplace Account Deletion: public, trusted only with eBay's signature.
    ("GET", "/ebay/notifications/account-deletion"): Call("public"),
    ("POST", "/ebay/notifications/account-deletion"): Call(
        "public", body={"metadata": {}, "notification": {}}
    ),
    # The installation's eBay budget (every org shares one eBay app): admins only.
    ("GET", "/ebay-budget"): Call("write"),
}


# Reads that answer without the account's name (counts, history).
NAMELESS_READS = {"/ebay-accounts/{account_id}/health-checks", "/ebay-accounts/summary", "/me"}


def app_routes(settings: ApiSettings) -> set[tuple[str, str]]:
    app = create_app(settings)
    found = set()
    # Every route, including those of included routers (static files are a Mount: no methods).
    for route in iter_route_contexts(app.routes):
        for method in route.methods or ():
            if method != "HEAD" and route.path:
                found.add((method, route.path))
    return found


def test_every_route_of_the_app_is_in_the_table(api_settings: ApiSettings) -> None:
    assert app_routes(api_settings) == set(ROUTES)


async def snapshot(api: Api, org_id: uuid.UUID) -> list[Any]:
    """Everything of org A that a route could change, and what it put in the outbox."""
    async with api.state.sessions() as session:

        async def rows(stmt: Any) -> list[dict[str, Any]]:
            result = (await session.scalars(stmt)).all()
            return [{c.key: getattr(r, c.key) for c in r.__table__.columns} for r in result]

        return [
            await rows(select(EbayAccount).where(EbayAccount.org_id == org_id)),
            await rows(select(EbayToken).join(EbayAccount).where(EbayAccount.org_id == org_id)),
            await rows(select(HealthCheck).join(EbayAccount).where(EbayAccount.org_id == org_id)),
            # A caller's own log-in and log-out are audited in its org: not a change to it.
            await rows(
                select(AuditEntry).where(
                    AuditEntry.org_id == org_id, AuditEntry.action.not_like("session.%")
                )
            ),
            await rows(select(OAuthState).where(OAuthState.org_id == org_id)),
            # Events name the org in their subject, commands in their payload.
            await rows(
                select(OutboxMessage).where(
                    OutboxMessage.subject.contains(str(org_id))
                    | OutboxMessage.payload.contains(str(org_id))
                )
            ),
        ]


@dataclass
class Caller:
    org: str
    role: str


@pytest.fixture
def orgs() -> tuple[str, str]:
    """Org names of this test alone (the API and database are shared by the module)."""
    suffix = uuid.uuid4().hex[:8]
    return f"org-a-{suffix}", f"org-b-{suffix}"


async def call(
    api: Api, method: str, path: str, spec: Call, caller: Caller, account_id: str
) -> httpx.Response:
    url = path.replace("{account_id}", account_id)
    headers: dict[str, str] = {}
    data = None
    if url.startswith("/admin"):
        identity = Identity(
            "mallory", caller.org, frozenset({caller.role}), utcnow().replace(year=2100)
        )
        org_id = await api.state.orgs.resolve(caller.org)
        cookie, session = await api.state.admin_sessions.issue(identity, org_id)
        headers["Cookie"] = f"connector_session={cookie}"
        if spec.form is not None:
            data = {**spec.form, "csrf": api.state.admin_sessions.csrf_token(session)}
    elif spec.kind != "public":
        headers.update(api.auth(org=caller.org, role=caller.role, sub="mallory"))
    if url == "/ebay/oauth/callback":
        url += "?code=v%5E1.1%23i%5E1&state=" + "s" * 43
    return await api.client.request(method, url, headers=headers, json=spec.body, data=data)


Setup = Callable[[Api], Awaitable[tuple[uuid.UUID, str]]]


async def org_a_with_an_account(api: Api, org: str) -> tuple[uuid.UUID, str]:
    account = await seed_account(api, "Secret-House", org=org, username="a_seller")
    async with unit_of_work(api.state.sessions) as session:
        session.add(HealthCheck(account_id=account.id, checked_at=utcnow(), outcome="healthy"))
    return account.org_id, str(account.id)


def assert_nothing_leaked(response: httpx.Response) -> None:
    for secret in ("Secret-House", "a_seller"):
        assert secret not in response.text


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
async def test_another_org_sees_and_changes_nothing(
    shared_api: Api, orgs: tuple[str, str], method: str, path: str
) -> None:
    api = shared_api
    org_id, account_id = await org_a_with_an_account(api, orgs[0])
    before = await snapshot(api, org_id)
    spec = ROUTES[(method, path)]
    response = await call(api, method, path, spec, Caller(orgs[1], "admin"), account_id)
    assert_nothing_leaked(response)
    if path.startswith("/ebay-accounts/{account_id}"):
        assert response.status_code == 404
        missing = await call(api, method, path, spec, Caller(orgs[1], "admin"), str(uuid.uuid4()))
        assert (missing.status_code, missing.json()) == (
            404,
            {**response.json(), "request_id": missing.json()["request_id"]},
        )  # identical to a missing account: no existence leak
    if path.startswith("/admin/accounts/"):
        assert response.status_code == 303
        flash = api.state.admin_sessions.read_flash(response.cookies.get("connector_flash"))
        assert flash is not None
        assert flash.kind == "error"
        assert flash.message == "no such eBay account"
    assert await snapshot(api, org_id) == before


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
async def test_a_viewer_changes_nothing(
    shared_api: Api, orgs: tuple[str, str], method: str, path: str
) -> None:
    api = shared_api
    org_id, account_id = await org_a_with_an_account(api, orgs[0])
    before = await snapshot(api, org_id)
    spec = ROUTES[(method, path)]
    response = await call(api, method, path, spec, Caller(orgs[0], "viewer"), account_id)
    if spec.kind == "write" and not path.startswith("/admin"):
        assert response.status_code == 403
    if spec.kind == "write" and path.startswith("/admin"):
        flash = api.state.admin_sessions.read_flash(response.cookies.get("connector_flash"))
        assert flash is not None
        assert flash.kind == "error"
        assert "admin role" in flash.message
    if spec.kind == "read" and method == "GET":
        assert response.status_code == 200
        if path not in NAMELESS_READS:
            assert "Secret-House" in response.text  # a viewer reads its own org
    assert await snapshot(api, org_id) == before
