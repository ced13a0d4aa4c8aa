"""Connecting sellers through the real flow against the sandbox: consent URL, single-use hashed
state, code exchange, GetUser + Identity, create or reconnect, encrypted tokens; every failure
leaves nothing behind and tells the browser why."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from nats.js import JetStreamContext
from sqlalchemy import func, select, update

from connector_common.crypto import TokenCipher
from connector_common.db.models import (
    AuditEntry,
    EbayAccount,
    EbayToken,
    OAuthState,
    OutboxMessage,
)
from connector_common.events import AccountConnected, AccountReconnected, CheckHealth, utcnow
from connector_common.messaging import Topology
from tests.api.conftest import Api, connect_seller, events_of, state_of
from tests.fixtures.sandbox import SandboxHandle


async def start(api: Api, house_name: str = "Warehouse-A", org: str = "org-a") -> str:
    response = await api.client.post(
        "/ebay-accounts/connect",
        json={"house_name": house_name, "purpose": "UK orders"},
        headers=api.auth(org),
    )
    assert response.status_code == 201, response.text
    consent_url: str = response.json()["consent_url"]
    return consent_url


async def callback(api: Api, **params: str) -> tuple[int, str]:
    response = await api.client.get("/ebay/oauth/callback", params=params)
    return response.status_code, response.text


async def count(api: Api, model: type) -> int:
    async with api.state.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_connect_returns_ebay_consent_url_with_a_fresh_state(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    url = await start(connect_api)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{sandbox.base_url}/oauth2/authorize")
    assert query["client_id"] == [sandbox.client_id]
    assert query["redirect_uri"] == [sandbox.ru_name]  # the RuName, not a URL
    assert query["response_type"] == ["code"]
    state = query["state"][0]
    assert len(state) >= 43  # 32 random bytes, URL-safe base64
    async with connect_api.state.sessions() as session:
        stored = (await session.scalars(select(OAuthState))).all()
    assert len(stored) == 1
    assert stored[0].state_hash == hashlib.sha256(state.encode()).digest()  # only the hash
    assert timedelta(minutes=9) < stored[0].expires_at - utcnow() <= timedelta(minutes=10)
    assert stored[0].house_name == "Warehouse-A"
    assert stored[0].actor == "alice"


async def test_callback_creates_a_uk_account_with_site_3_and_ebay_gb(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    account = await connect_seller(connect_api, sandbox, "demo_uk_seller", "Warehouse-A")
    assert account["marketplace_id"] == "EBAY_GB"
    assert account["site_id"] == 3
    assert account["site_code"] == "UK"
    assert account["username"] == "demo_uk_seller"
    assert account["status"] == "healthy"
    assert account["is_active"] is True
    seller = next(s for s in sandbox.sellers() if s["username"] == "demo_uk_seller")
    assert account["ebay_user_id"] == seller["user_id"]  # Identity's immutable userId


async def test_motors_seller_gets_site_100_and_ebay_motors_us(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    account = await connect_seller(connect_api, sandbox, "demo_motors_seller", "Motors")
    assert (account["site_id"], account["marketplace_id"]) == (100, "EBAY_MOTORS_US")


async def test_tokens_are_stored_encrypted_and_never_returned(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    account = await connect_seller(connect_api, sandbox, "demo_de_seller", "Berlin")
    async with connect_api.state.sessions() as session:
        row = await session.get(EbayToken, account["id"])
    assert row is not None
    assert row.access_token_ct
    assert row.refresh_token_ct
    assert b"v^1.1" not in row.access_token_ct
    assert b"v^1.1" not in row.refresh_token_ct
    cipher = TokenCipher(connect_api.settings.key_ring())
    access = cipher.decrypt(row.access_token_ct, row.account_id, "access_token")
    assert access.startswith("v^1.1#")
    assert row.key_id == "test-new"  # the newest key of the ring encrypts
    detail = await connect_api.client.get(
        f"/ebay-accounts/{account['id']}", headers=connect_api.auth()
    )
    assert access not in detail.text
    assert "v^1.1" not in detail.text
    assert detail.json()["token"]["access_expires_at"] is not None


async def test_connecting_the_same_seller_again_reconnects_the_same_account(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    first = await connect_seller(connect_api, sandbox, "demo_us_seller", "Chicago")
    async with connect_api.state.sessions() as session, session.begin():
        # A refresher lost its grant meanwhile: the reconnect must clear all of this.
        await session.execute(
            update(EbayToken)
            .where(EbayToken.account_id == first["id"])
            .values(
                reconnect_required_at=utcnow(),
                refresh_enabled=False,
                consecutive_failures=3,
                last_refresh_error="invalid_grant",
                retry_at=utcnow(),
                lease_owner="refresher-1",
                lease_until=utcnow() + timedelta(minutes=1),
            )
        )
        before = await session.get(EbayToken, first["id"])
    assert before is not None
    again = await connect_api.client.post(
        f"/ebay-accounts/{first['id']}/reconnect", headers=connect_api.auth()
    )
    assert again.status_code == 201
    status, _ = await callback(
        connect_api,
        code=sandbox.grant("demo_us_seller"),
        state=state_of(again.json()["consent_url"]),
    )
    assert status == 200
    async with connect_api.state.sessions() as session:
        accounts = (await session.scalars(select(EbayAccount))).all()
        after = await session.get(EbayToken, first["id"])
    assert [a.id for a in accounts] == [before.account_id]  # same id, no duplicate
    assert after is not None
    assert after.version == before.version + 1
    assert after.lease_epoch == before.lease_epoch + 1
    assert (after.lease_owner, after.lease_until) == (None, None)
    assert after.reconnect_required_at is None
    assert after.refresh_enabled is True
    assert (after.consecutive_failures, after.last_refresh_error, after.retry_at) == (0, None, None)
    assert after.access_token_ct != before.access_token_ct


async def test_reconnect_completed_by_another_seller_changes_nothing(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    first = await connect_seller(connect_api, sandbox, "demo_us_seller", "Chicago")
    async with connect_api.state.sessions() as session:
        before = await session.get(EbayToken, first["id"])
    assert before is not None
    again = await connect_api.client.post(
        f"/ebay-accounts/{first['id']}/reconnect", headers=connect_api.auth()
    )
    assert again.status_code == 201
    status, page = await callback(
        connect_api,
        code=sandbox.grant("demo_uk_seller"),  # the wrong seller consented
        state=state_of(again.json()["consent_url"]),
    )
    assert status == 400
    assert "not the one &#39;Chicago&#39; belongs to" in page
    async with connect_api.state.sessions() as session:
        accounts = (await session.scalars(select(EbayAccount))).all()
        after = await session.get(EbayToken, first["id"])
    assert [a.id for a in accounts] == [before.account_id]  # no second account was created
    assert accounts[0].ebay_user_id == first["ebay_user_id"]
    assert after is not None
    assert (after.version, after.access_token_ct) == (before.version, before.access_token_ct)


async def test_connect_with_a_taken_house_name_is_409_before_ebay(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    await connect_seller(connect_api, sandbox, "demo_us_seller", "Warehouse-A")
    response = await connect_api.client.post(
        "/ebay-accounts/connect", json={"house_name": "warehouse-a"}, headers=connect_api.auth()
    )
    assert response.status_code == 409
    assert "warehouse-a" in response.json()["message"]


async def test_house_name_taken_between_consent_and_callback_creates_nothing(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    url = await start(connect_api, "Montreal")
    await connect_seller(connect_api, sandbox, "demo_ca_seller", "Montreal")  # wins the race
    accounts_before = await count(connect_api, EbayAccount)
    status, text = await callback(
        connect_api, code=sandbox.grant("demo_au_seller"), state=state_of(url)
    )
    assert status == 409
    assert "Montreal" in text
    assert "nothing was connected" in text
    assert await count(connect_api, EbayAccount) == accounts_before


async def test_declined_consent_creates_nothing_and_says_so(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    url = await start(connect_api)
    status, text = await callback(
        connect_api,
        state=state_of(url),
        error="access_denied",
        error_description="The user declined the consent request",
        isAuthSuccessful="false",
    )
    assert status == 400
    assert "declined" in text
    assert await count(connect_api, EbayAccount) == 0
    assert await count(connect_api, EbayToken) == 0
    assert await count(connect_api, OutboxMessage) == 0
    # The state is burnt: the same link cannot be completed afterwards.
    status, text = await callback(
        connect_api, code=sandbox.grant("demo_uk_seller"), state=state_of(url)
    )
    assert status == 400
    assert "already used" in text


async def test_reused_state_is_refused_and_creates_nothing_more(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    url = await start(connect_api)
    first = await callback(connect_api, code=sandbox.grant("demo_uk_seller"), state=state_of(url))
    assert first[0] == 200
    status, text = await callback(
        connect_api, code=sandbox.grant("demo_de_seller"), state=state_of(url)
    )
    assert status == 400
    assert "already used" in text
    assert await count(connect_api, EbayAccount) == 1


async def test_unknown_state_is_refused(connect_api: Api, sandbox: SandboxHandle) -> None:
    status, text = await callback(connect_api, code=sandbox.grant("demo_uk_seller"), state="x" * 43)
    assert status == 400
    assert "unknown" in text
    assert await count(connect_api, EbayAccount) == 0


async def test_missing_state_is_refused(connect_api: Api, sandbox: SandboxHandle) -> None:
    status, text = await callback(connect_api, code=sandbox.grant("demo_uk_seller"))
    assert status == 400
    assert "incomplete" in text


async def test_expired_state_is_refused(connect_api: Api, sandbox: SandboxHandle) -> None:
    url = await start(connect_api)
    async with connect_api.state.sessions() as session, session.begin():
        await session.execute(update(OAuthState).values(expires_at=utcnow() - timedelta(seconds=1)))
    status, text = await callback(
        connect_api, code=sandbox.grant("demo_uk_seller"), state=state_of(url)
    )
    assert status == 400
    assert "expired" in text
    assert await count(connect_api, EbayAccount) == 0


async def test_reused_code_is_refused_by_ebay_and_creates_nothing(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    code = sandbox.grant("demo_uk_seller")
    assert (await callback(connect_api, code=code, state=state_of(await start(connect_api))))[
        0
    ] == 200
    status, text = await callback(
        connect_api, code=code, state=state_of(await start(connect_api, "Other"))
    )
    assert status == 400
    assert "authorization code" in text
    assert await count(connect_api, EbayAccount) == 1


async def test_ebay_error_during_the_flow_creates_nothing(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    url = await start(connect_api)
    sandbox.fault("identity", "error", status=500, count=10)
    status, text = await callback(
        connect_api, code=sandbox.grant("demo_uk_seller"), state=state_of(url)
    )
    assert status == 502
    assert "eBay answered with an error" in text
    assert await count(connect_api, EbayAccount) == 0
    assert await count(connect_api, EbayToken) == 0
    assert await count(connect_api, OutboxMessage) == 0


async def test_callback_never_echoes_code_or_state(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    url = await start(connect_api)
    code = sandbox.grant("demo_uk_seller")
    response = await connect_api.client.get(
        "/ebay/oauth/callback", params={"code": code, "state": state_of(url)}
    )
    assert code not in response.text
    assert state_of(url) not in response.text
    assert "v^1.1" not in response.text
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert '<meta http-equiv="refresh" content="0; url=/admin">' in response.text
    assert "connector_flash=" in response.headers["set-cookie"]


async def test_connect_publishes_account_connected_and_queues_a_health_check(
    connect_api: Api,
    sandbox: SandboxHandle,
    js: JetStreamContext,
    topology: Topology,
) -> None:
    await connect_api.wait_relay()
    account = await connect_seller(connect_api, sandbox, "demo_uk_seller", "Warehouse-A")
    org_id = await connect_api.org_id("org-a")
    [(event, headers)] = await events_of(js, topology, org_id, 1)
    assert isinstance(event, AccountConnected)
    assert not isinstance(event, AccountReconnected)
    assert (event.house_name, event.marketplace_id, event.site_id) == ("Warehouse-A", "EBAY_GB", 3)
    assert str(event.account_id) == account["id"]
    assert event.actor == "alice"
    assert headers["Nats-Msg-Id"] == str(event.event_id)
    msg = await js.get_last_msg(topology.work_stream, topology.health_subject)
    command = CheckHealth.model_validate_json(msg.data or b"")
    assert (str(command.account_id), command.reason) == (account["id"], "connected")
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == command.dedup_id()
    async with connect_api.state.sessions() as session:
        row = await session.get(EbayAccount, account["id"])
        audit = (await session.scalars(select(AuditEntry))).all()
    assert row is not None
    assert row.next_health_check_at is not None
    assert row.health_requested_at is not None
    assert {a.action for a in audit} == {"connect.started", "account.connected"}


async def test_reconnect_publishes_account_reconnected(
    connect_api: Api,
    sandbox: SandboxHandle,
    js: JetStreamContext,
    topology: Topology,
) -> None:
    await connect_api.wait_relay()
    account = await connect_seller(connect_api, sandbox, "demo_uk_seller", "Warehouse-A")
    again = await connect_api.client.post(
        f"/ebay-accounts/{account['id']}/reconnect", headers=connect_api.auth()
    )
    await callback(
        connect_api,
        code=sandbox.grant("demo_uk_seller"),
        state=state_of(again.json()["consent_url"]),
    )
    events = await events_of(js, topology, await connect_api.org_id("org-a"), 2)
    assert [type(e).__name__ for e, _ in events] == ["AccountConnected", "AccountReconnected"]


async def test_same_seller_in_two_orgs_is_two_accounts(
    connect_api: Api, sandbox: SandboxHandle
) -> None:
    a = await connect_seller(connect_api, sandbox, "demo_uk_seller", "UK", org="org-a")
    b = await connect_seller(connect_api, sandbox, "demo_uk_seller", "UK", org="org-b")
    assert a["id"] != b["id"]
