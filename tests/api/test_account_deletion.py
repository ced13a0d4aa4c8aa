"""eBay Marketplace Account Deletion: the challenge (eBay's published vector), signatures
(eBay's published vector, and real P-256 signatures made by the sandbox), refusals that change
nothing, the purge (scanned row by row), idempotency, limits, and the event on NATS."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from nats.js import JetStreamContext
from pydantic import SecretStr
from sqlalchemy import func, select, text

from connector_api.notifications.signature import (
    BadSignature,
    compact,
    load_public_key,
    parse_header,
    verify,
)
from connector_api.settings import ApiSettings
from connector_common.db.engine import unit_of_work
from connector_common.db.models import (
    AuditEntry,
    DeletionNotification,
    HealthCheck,
    OutboxMessage,
    UsernameChange,
)
from connector_common.events import AccountDeletedByEbay, utcnow
from connector_common.messaging import Topology
from connector_common.platform_settings import DeletionSettings
from connector_common.settings import EbaySettings
from tests.api.conftest import Api, connect_seller, events_of, running_api, wait_for
from tests.fixtures.sandbox import SandboxHandle

PATH = "/ebay/notifications/account-deletion"
TOKEN = "verification_token-" + "x" * 20

# eBay's own published vectors. The challenge: eBay's event-notification .NET SDK test
# (EventNotificationControllerTest.testVerification). The signature: eBay's Node.js SDK
# (test/test.json, VALID and SIGNATURE_MISMATCH), also quoted in docs/ebay-api-notes.md section 6.
EBAY_CHALLENGE = {
    "challenge_code": "a8628072-3d33-45ee-9004-bee86830a22d",
    "verification_token": "71745723-d031-455c-bfa5-f90d11b4f20a",
    "endpoint": "http://www.testendpoint.com/webhook",
    "expected": "ca527df75caa230092d7e90484071e8f05d63068f1317973d6a3a42593734bbb",
}
EBAY_KEY = (
    "-----BEGIN PUBLIC KEY-----MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZhhxXKtR+TOvtDbgTPCkSof02qgBB7Is"
    "YOyf76ilExJ/upAa/vKIKheOoCyOpcLmi4t0b4uepb7LLjmMr90FUg==-----END PUBLIC KEY-----"
)
EBAY_MESSAGE: dict[str, Any] = {
    "metadata": {
        "topic": "MARKETPLACE_ACCOUNT_DELETION",
        "schemaVersion": "1.0",
        "deprecated": False,
    },
    "notification": {
        "notificationId": (
            "49feeaeb-4982-42d9-a377-9645b8479411_33f7e043-fed8-442b-9d44-791923bd9a6d"
        ),
        "eventDate": "2021-03-19T20:43:59.462Z",
        "publishDate": "2021-03-19T20:43:59.679Z",
        "publishAttemptCount": 1,
        "data": {
            "username": "test_user",
            "userId": "ma8vp1jySJC",
            "eiasToken": "nY+sHZ2PrBmdj6wVnY+sEZ2PrA2dj6wJnY+gAZGEpwmdj6x9nY+seQ==",
        },
    },
}
EBAY_VALID_SIGNATURE = (
    "eyJhbGciOiJlY2RzYSIsImtpZCI6Ijk5MzYyNjFhLTdkN2ItNDYyMS1hMGYxLTk2Y2NiNDI4YWY0OSIsInNpZ25hdHVy"
    "ZSI6Ik1FWUNJUUNmeGZJV3V4bVdjSUJRSjljNS9YN2lHREpxczJSQ0dzQkVhQWppbnlycmZBSWhBSVY2d0djVGlCdVY1"
    "S0pVaWYyaG9reXJMK1E5c3NIa2FkK214Mm5FRTI1dyIsImRpZ2VzdCI6IlNIQTEifQ=="
)
EBAY_MISMATCH_SIGNATURE = (
    "eyJhbGciOiJlY2RzYSIsImtpZCI6Ijk5MzYyNjFhLTdkN2ItNDYyMS1hMGYxLTk2Y2NiNDI4YWY0OSIsInNpZ25hdHVy"
    "ZSI6Ik1FVUNJUUNHY1NubUFrVGZyK1paMlZnMGJXRW9zOGEvdGVCcWk3UGU2OCtoR21MTUNRSWdlRnZrcnRvKzhkczhS"
    "VndJM0dnbjFtTUdDck5NRVpKM1NSbE8yZngveHFJPSIsImRpZ2VzdCI6IlNIQTEifQ=="
)


def settings_with(
    api_settings: ApiSettings, ebay: EbaySettings | None = None, **deletion: Any
) -> ApiSettings:
    base = ebay or api_settings.ebay
    config = DeletionSettings(verification_token=SecretStr(TOKEN), **deletion)
    return api_settings.model_copy(update={"ebay": base.model_copy(update={"deletion": config})})


@pytest.fixture
async def api(
    api_settings: ApiSettings, dev_secret: str, ebay_settings: EbaySettings, sandbox: SandboxHandle
) -> AsyncIterator[Api]:
    """The API with the deletion endpoint configured, talking to the sandbox (connect flow and
    getPublicKey), and fast enough limits for a test's bursts."""
    sandbox.register_app(
        sandbox.client_id,
        sandbox.client_secret,
        sandbox.ru_name,
        "http://api.test/ebay/oauth/callback",
    )
    settings = settings_with(api_settings, ebay_settings, requests_per_second=1000, burst=1000)
    async with running_api(settings, dev_secret) as running:
        yield running


def signed(
    sandbox: SandboxHandle,
    seller: str | None = None,
    user_id: str | None = None,
    notification_id: str | None = None,
) -> tuple[bytes, str, str]:
    """A notification the sandbox signs with its key: (body, X-EBAY-SIGNATURE, id)."""
    if seller is not None:
        found = sandbox.state.seller(seller)
        return sandbox.sandbox.notifications.notification(
            found.user_id, found.username, found.eias_token, notification_id
        )
    return sandbox.sandbox.notifications.notification(
        user_id or "unknownUser1", "nobody", "EIAS-nobody==", notification_id
    )


async def post(api: Api, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-EBAY-SIGNATURE"] = signature
    return await api.client.post(PATH, content=body, headers=headers)


async def everything(api: Api) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (for 'nothing changed' and for scanning personal data)."""
    async with api.state.engine.connect() as connection:
        tables = (
            await connection.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_name <> 'alembic_version'"
                )
            )
        ).scalars()
        found = {}
        for table in sorted(tables):
            if table == "ebay_call_counts":
                # The budget's call counters: flushed by a background recorder every second, and
                # a rejected notification may still have asked eBay for a key. Not account data.
                continue
            # The outbox relay publishes in the background: its bookkeeping columns move on
            # their own, so "nothing changed" compares what the rows say, not their delivery.
            columns = "id, subject, payload, headers, created_at" if table == "outbox" else "*"
            rows = await connection.execute(text(f'SELECT {columns} FROM "{table}"'))  # noqa: S608
            found[table] = sorted((tuple(str(v) for v in row) for row in rows), key=repr)
        return found


def personal_data_of(sandbox: SandboxHandle, seller: str) -> list[str]:
    found = sandbox.state.seller(seller)
    return [found.user_id, found.username, found.eias_token, found.email]


# --- the challenge ------------------------------------------------------------------------


async def test_challenge_answers_ebays_published_vector(
    api_settings: ApiSettings, dev_secret: str
) -> None:
    config = DeletionSettings(
        verification_token=SecretStr(EBAY_CHALLENGE["verification_token"]),
        endpoint_url=EBAY_CHALLENGE["endpoint"],
    )
    settings = api_settings.model_copy(
        update={"ebay": api_settings.ebay.model_copy(update={"deletion": config})}
    )
    async with running_api(settings, dev_secret) as running:
        response = await running.client.get(
            PATH, params={"challenge_code": EBAY_CHALLENGE["challenge_code"]}
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content.startswith(b"{")  # no BOM
    assert response.json() == {"challengeResponse": EBAY_CHALLENGE["expected"]}


async def test_challenge_hashes_the_endpoint_byte_for_byte_as_configured(
    api: Api, sandbox: SandboxHandle
) -> None:
    import hashlib

    code = "123"
    response = await api.client.get(PATH, params={"challenge_code": code})
    # The default endpoint: the public URL plus the path, exactly.
    expected = hashlib.sha256(f"{code}{TOKEN}http://api.test{PATH}".encode()).hexdigest()
    assert response.json() == {"challengeResponse": expected}


async def test_challenge_without_a_verification_token_is_503(
    api_settings: ApiSettings, dev_secret: str
) -> None:
    async with running_api(api_settings, dev_secret) as running:
        response = await running.client.get(PATH, params={"challenge_code": "123"})
    assert response.status_code == 503
    assert "VERIFICATION_TOKEN" in response.json()["message"]


async def test_challenge_without_a_code_is_422(api: Api) -> None:
    assert (await api.client.get(PATH)).status_code == 422


# --- signatures: eBay's vector ------------------------------------------------------------


def test_ebays_published_signature_vector_verifies() -> None:
    header = parse_header(EBAY_VALID_SIGNATURE)
    assert header.kid == "9936261a-7d7b-4621-a0f1-96ccb428af49"
    body = compact(json.dumps(EBAY_MESSAGE).encode())  # as eBay sends it: compact JSON
    assert body is not None
    assert verify(load_public_key(EBAY_KEY), header, body)
    # Spaces a proxy might add do not matter: the compact form is what eBay signed.
    assert verify(load_public_key(EBAY_KEY), header, json.dumps(EBAY_MESSAGE, indent=2).encode())


def test_ebays_signature_mismatch_vector_and_a_tampered_message_fail() -> None:
    key = load_public_key(EBAY_KEY)
    body = json.dumps(EBAY_MESSAGE, separators=(",", ":")).encode()
    assert not verify(key, parse_header(EBAY_MISMATCH_SIGNATURE), body)
    tampered = json.loads(body)
    tampered["notification"]["data"]["userId"] = "someoneElse"
    assert not verify(key, parse_header(EBAY_VALID_SIGNATURE), json.dumps(tampered).encode())


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "not base64!",
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(b'{"alg":"rsa","kid":"k","signature":"AA==","digest":"SHA1"}').decode(),
        base64.b64encode(
            b'{"alg":"ecdsa","kid":"../x","signature":"AA==","digest":"SHA1"}'
        ).decode(),
        base64.b64encode(b'{"alg":"ecdsa","kid":"k","signature":"AA==","digest":"MD5"}').decode(),
        "A" * 5000,
    ],
)
def test_malformed_signature_headers_are_refused(header: str | None) -> None:
    with pytest.raises(BadSignature):
        parse_header(header)


# --- a signed notification: the purge -----------------------------------------------------


async def test_a_signed_notification_purges_the_seller_in_every_org(
    api: Api, sandbox: SandboxHandle, js: JetStreamContext, topology: Topology
) -> None:
    await api.wait_relay()
    london_a = await connect_seller(api, sandbox, "demo_uk_seller", "London", org="org-a")
    london_b = await connect_seller(api, sandbox, "demo_uk_seller", "UK", org="org-b")
    other = await connect_seller(api, sandbox, "demo_us_seller", "Warehouse-US", org="org-a")
    async with unit_of_work(api.state.sessions) as session:
        session.add(
            HealthCheck(
                account_id=uuid.UUID(london_a["id"]), checked_at=utcnow(), outcome="healthy"
            )
        )
        session.add(
            UsernameChange(
                account_id=uuid.UUID(london_a["id"]),
                old_username="uk_old_name",
                new_username="demo_uk_seller",
                changed_at=utcnow(),
                source="health_check",
            )
        )
    # The outbox keeps published copies of account.connected (with the username) for a day.

    async def all_published() -> bool:
        async with unit_of_work(api.state.sessions) as session:
            waiting = await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.published_at.is_(None))
            )
        return waiting == 0

    await wait_for(all_published)
    body, signature, notification_id = signed(sandbox, "demo_uk_seller")

    response = await post(api, body, signature)

    assert response.status_code == 204, response.text
    assert response.content == b""
    # Every table, every row, every column: nothing of the seller remains.
    rows = json.dumps(await everything(api))
    for personal in [*personal_data_of(sandbox, "demo_uk_seller"), "uk_old_name"]:
        assert personal not in rows, personal
    listed = {
        a["house_name"]: a
        for org in ("org-a", "org-b")
        for a in (await api.client.get("/ebay-accounts", headers=api.auth(org))).json()["items"]
    }
    for name, original in (("London", london_a), ("UK", london_b)):
        tombstone = listed[name]
        assert tombstone["id"] == original["id"]
        assert tombstone["status"] == "deleted_by_ebay"
        assert tombstone["deleted_by_ebay_at"] is not None
        assert tombstone["token"] is None
        assert tombstone["last_health"] is None
        assert (
            tombstone["ebay_user_id"]
            is tombstone["username"]
            is tombstone["marketplace_id"]
            is None
        )
    assert listed["Warehouse-US"]["status"] != "deleted_by_ebay"
    assert listed["Warehouse-US"]["ebay_user_id"] == other["ebay_user_id"]
    async with unit_of_work(api.state.sessions) as session:
        audit = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "account.deleted_by_ebay")
            )
        ).all()
        history = await session.scalar(select(func.count()).select_from(HealthCheck))
        record = await session.get(DeletionNotification, notification_id)
    assert {str(a.account_id) for a in audit} == {london_a["id"], london_b["id"]}
    async with unit_of_work(api.state.sessions) as session:
        earlier = (
            await session.scalars(
                select(AuditEntry).where(
                    AuditEntry.account_id == uuid.UUID(london_a["id"]),
                    AuditEntry.action == "account.connected",
                )
            )
        ).all()
    assert earlier  # the org's history stays, without the seller's registration site
    assert all("marketplace_id" not in e.details and "site_id" not in e.details for e in earlier)
    assert {a.actor for a in audit} == {"ebay"}
    assert all(a.details == {"notification_id": notification_id} for a in audit)
    assert history == 0
    assert record is not None
    assert record.accounts_purged == 2
    for org, account in (("org-a", london_a), ("org-b", london_b)):
        org_id = await api.org_id(org)
        events = [e for e, _ in await events_of(js, topology, org_id, 2 if org == "org-b" else 3)]
        [deleted] = [e for e in events if isinstance(e, AccountDeletedByEbay)]
        assert str(deleted.account_id) == account["id"]
        assert deleted.notification_id == notification_id
        text_of_event = deleted.model_dump_json()
        for personal in personal_data_of(sandbox, "demo_uk_seller"):
            assert personal not in text_of_event


async def test_the_same_notification_again_is_204_and_does_nothing(
    api: Api, sandbox: SandboxHandle
) -> None:
    await connect_seller(api, sandbox, "demo_uk_seller", "London")
    body, signature, _notification_id = signed(sandbox, "demo_uk_seller")
    assert (await post(api, body, signature)).status_code == 204
    before = await everything(api)
    assert (await post(api, body, signature)).status_code == 204
    assert await everything(api) == before
    async with unit_of_work(api.state.sessions) as session:
        events = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.subject.endswith("account.deleted_by_ebay"))
        )
    assert events == 1


async def test_concurrent_deliveries_of_one_notification_purge_once(
    api: Api, sandbox: SandboxHandle
) -> None:
    await connect_seller(api, sandbox, "demo_uk_seller", "London")
    body, signature, _ = signed(sandbox, "demo_uk_seller")
    answers = await asyncio.gather(*(post(api, body, signature) for _ in range(5)))
    assert {a.status_code for a in answers} == {204}
    async with unit_of_work(api.state.sessions) as session:
        events = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.subject.endswith("account.deleted_by_ebay"))
        )
    assert events == 1


async def test_a_seller_we_never_connected_is_204(api: Api, sandbox: SandboxHandle) -> None:
    await connect_seller(api, sandbox, "demo_uk_seller", "London")
    before = await everything(api)
    body, signature, notification_id = signed(sandbox, user_id="neverConnected")
    assert (await post(api, body, signature)).status_code == 204
    after = await everything(api)
    assert after["ebay_accounts"] == before["ebay_accounts"]
    assert [row[0] for row in after["ebay_deletion_notifications"]] == [notification_id]


async def test_a_tombstone_cannot_be_reconnected_or_reactivated(
    api: Api, sandbox: SandboxHandle
) -> None:
    account = await connect_seller(api, sandbox, "demo_uk_seller", "London")
    body, signature, _ = signed(sandbox, "demo_uk_seller")
    assert (await post(api, body, signature)).status_code == 204
    base = f"/ebay-accounts/{account['id']}"
    for action in ("reconnect", "reactivate", "refresh", "health-check"):
        answer = await api.client.post(f"{base}/{action}", headers=api.auth())
        assert answer.status_code == 409, action
    # The org may remove the record for good.
    assert (await api.client.delete(base, headers=api.auth())).status_code == 204


# --- refusals: 412, nothing changed -------------------------------------------------------


def forged(body: bytes, kid: str, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    """A well-formed header signed by a key that is not eBay's."""
    signer = key or ec.generate_private_key(ec.SECP256R1())
    der = signer.sign(body, ec.ECDSA(hashes.SHA1()))  # noqa: S303 - eBay's digest
    header = {
        "alg": "ecdsa",
        "kid": kid,
        "signature": base64.b64encode(der).decode(),
        "digest": "SHA1",
    }
    return base64.b64encode(json.dumps(header).encode()).decode()


@pytest.mark.parametrize("case", ["tampered", "wrong_key", "unknown_kid", "missing", "garbage"])
async def test_an_untrusted_notification_is_412_and_changes_nothing(
    api: Api, sandbox: SandboxHandle, case: str
) -> None:
    await connect_seller(api, sandbox, "demo_uk_seller", "London")
    body, signature, _ = signed(sandbox, "demo_uk_seller")
    header: str | None = signature
    if case == "tampered":
        body = body.replace(b'"publishAttemptCount":1', b'"publishAttemptCount":2')
    elif case == "wrong_key":
        header = forged(body, sandbox.sandbox.notifications.kid)
    elif case == "unknown_kid":
        header = forged(body, str(uuid.uuid4()))
    elif case == "missing":
        header = None
    else:
        header = "%%%not-a-signature%%%"
    before = await everything(api)
    response = await post(api, body, header)
    assert response.status_code == 412, response.text
    assert response.json()["error"] == "signature_invalid"
    assert await everything(api) == before


async def test_a_body_over_64_kib_is_413(api: Api, sandbox: SandboxHandle) -> None:
    body, signature, _ = signed(sandbox, "demo_uk_seller")
    padded = body[:-1] + b',"padding":"' + b"x" * (64 * 1024) + b'"}'
    response = await post(api, padded, signature)
    assert response.status_code == 413
    # A chunked body without Content-Length is counted as it arrives.

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b"x" * 1024

    streamed = await api.client.post(
        PATH, content=chunks(), headers={"X-EBAY-SIGNATURE": signature}
    )
    assert streamed.status_code == 413


# --- a flood: the rate limit and the key cache --------------------------------------------


async def test_a_flood_of_bad_signatures_costs_a_bounded_number_of_key_fetches(
    api: Api, sandbox: SandboxHandle
) -> None:
    body, good, _ = signed(sandbox, user_id="floodTarget")
    made_up = [forged(body, str(uuid.uuid4())) for _ in range(60)]
    wrong_with_real_kid = [forged(body, sandbox.sandbox.notifications.kid) for _ in range(60)]
    answers = await asyncio.gather(*(post(api, body, h) for h in [*made_up, *wrong_with_real_kid]))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {412, 503}
    fetches = sandbox.calls(route="public_key")
    # At most the per-minute allowance for unknown kids, plus the one real kid, once.
    allowance = api.settings.ebay.deletion.key_fetches_per_minute
    assert len(fetches) <= allowance + 1
    real = [c for c in fetches if c["status"] == 200]
    assert len(real) <= 1
    # The real notification still goes through with the cached key.
    assert (await post(api, body, good)).status_code in (204, 503)


async def test_concurrent_notifications_with_a_new_kid_share_one_key_fetch(
    api: Api, sandbox: SandboxHandle
) -> None:
    notes = [signed(sandbox, user_id=f"user{n}") for n in range(20)]
    answers = await asyncio.gather(*(post(api, body, header) for body, header, _ in notes))
    assert {a.status_code for a in answers} == {204}
    assert len(sandbox.calls(route="public_key")) == 1
    # A later rotation by eBay: the new kid is fetched once, the old one stays cached.
    sandbox.sandbox.notifications.rotate_key()
    body, header, _ = signed(sandbox, user_id="afterRotation")
    assert (await post(api, body, header)).status_code == 204
    assert len(sandbox.calls(route="public_key")) == 2


async def test_the_endpoint_has_its_own_rate_limit(
    api_settings: ApiSettings, dev_secret: str, ebay_settings: EbaySettings, sandbox: SandboxHandle
) -> None:
    settings = settings_with(api_settings, ebay_settings, requests_per_second=0.01, burst=3)
    async with running_api(settings, dev_secret) as running:
        answers = [await running.client.get(PATH, params={"challenge_code": "1"}) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1


async def test_ebay_unreachable_for_the_key_is_503_so_ebay_retries(
    api: Api, sandbox: SandboxHandle
) -> None:
    sandbox.fault("public_key", "error", status=500, count=100)
    body, header, _ = signed(sandbox, user_id="someone")
    response = await post(api, body, header)
    assert response.status_code == 503
    assert "retry-after" in response.headers


# --- the sandbox delivers over real HTTP (what make run shows) -----------------------------


async def test_the_sandbox_registers_the_endpoint_and_delivers_a_deletion(
    api_settings: ApiSettings, ebay_settings: EbaySettings, sandbox: SandboxHandle
) -> None:
    from connector_devstack.embedded import free_port
    from tests.api.served import ServedApi

    port = free_port()
    served_settings = settings_with(api_settings, ebay_settings).model_copy(
        update={
            "api": api_settings.api.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
        }
    )
    with ServedApi(served_settings, port) as served:
        async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=30) as control:
            bad = await control.post(
                "/_sandbox/notifications/endpoint",
                json={
                    "url": f"{served.url}{PATH}",
                    "verification_token": "wrong-token-" + "y" * 30,
                },
            )
            assert bad.status_code == 400  # eBay's challenge fails with the wrong token
            registered = await control.post(
                "/_sandbox/notifications/endpoint",
                json={"url": f"{served.url}{PATH}", "verification_token": TOKEN},
            )
            assert registered.status_code == 200, registered.text
            user_id = sandbox.state.seller("demo_uk_seller").user_id
            sent = await control.post(
                "/_sandbox/notifications/account-deletion", json={"user_id": user_id}
            )
    assert sent.status_code == 200
    assert sent.json()["status"] == 204
    assert sent.json()["acknowledged"] is True


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["short", "x" * 81, "has spaces" + "x" * 30, "é" * 40])
def test_a_malformed_verification_token_is_refused_without_echoing_it(token: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as raised:
        DeletionSettings(verification_token=SecretStr(token))
    assert token not in str(raised.value)


def test_outside_development_the_endpoint_must_be_public_https(api_settings: ApiSettings) -> None:
    settings = settings_with(api_settings, endpoint_url="http://10.0.0.5/ebay/notifications")
    problems = settings._deletion_problems()
    assert any("https" in p for p in problems)
    assert any("internal IP" in p for p in problems)
    public = settings_with(api_settings, endpoint_url="https://connector.example.com/hook")
    assert public._deletion_problems() == []


def test_ebay_production_requires_the_verification_token(api_settings: ApiSettings) -> None:
    production = api_settings.ebay.model_copy(update={"environment": "production"})
    settings = api_settings.model_copy(update={"ebay": production})
    assert any("VERIFICATION_TOKEN" in p for p in settings._deletion_problems())


def test_a_random_token_of_the_allowed_shape_is_accepted() -> None:
    token = secrets.token_urlsafe(40)[:60]
    assert DeletionSettings(verification_token=SecretStr(token)).verification_token is not None
