"""The sandbox as eBay's Notification side: getPublicKey (application token, 195001 for an
unknown kid), P-256 signatures a client verifies with that key, and the control calls."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from connector_common.ebay import EbayClient, PermanentError
from connector_common.ebay.parsers import pem_lines
from tests.fixtures.sandbox import SandboxHandle


@pytest.fixture
async def http(sandbox: SandboxHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
        yield client


async def test_get_public_key_needs_an_application_token(
    http: httpx.AsyncClient, sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    kid = sandbox.sandbox.notifications.kid
    path = f"/commerce/notification/v1/public_key/{kid}"
    assert (await http.get(path)).json()["errors"][0]["errorId"] == 1002
    user = await ebay_client.exchange_code(sandbox.grant("demo_uk_seller"))
    as_user = await http.get(
        path, headers={"Authorization": f"Bearer {user.access_token.get_secret_value()}"}
    )
    assert (as_user.status_code, as_user.json()["errors"][0]["errorId"]) == (403, 1100)
    key = await ebay_client.notification_public_key(kid)
    assert (key.algorithm, key.digest) == ("ECDSA", "SHA1")
    assert key.pem.startswith("-----BEGIN PUBLIC KEY-----MFkw")
    assert "\n" not in key.pem  # one line, as eBay sends it


async def test_an_unknown_kid_is_404_with_error_195001(ebay_client: EbayClient) -> None:
    with pytest.raises(PermanentError) as raised:
        await ebay_client.notification_public_key("00000000-0000-0000-0000-000000000000")
    assert (raised.value.http_status, raised.value.error_code) == (404, "195001")


async def test_a_notification_verifies_with_the_key_getpublickey_gives(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    seller = sandbox.state.seller("demo_de_seller")
    body, header, notification_id = sandbox.sandbox.notifications.notification(
        seller.user_id, seller.username, seller.eias_token
    )
    decoded = json.loads(base64.b64decode(header))
    assert set(decoded) == {"alg", "kid", "signature", "digest"}
    assert (decoded["alg"], decoded["digest"]) == ("ecdsa", "SHA1")
    message = json.loads(body)
    assert body == json.dumps(message, separators=(",", ":")).encode()  # compact JSON
    assert message["metadata"]["topic"] == "MARKETPLACE_ACCOUNT_DELETION"
    assert message["notification"]["notificationId"] == notification_id
    assert message["notification"]["data"]["userId"] == seller.user_id
    key = await ebay_client.notification_public_key(decoded["kid"])
    public = load_pem_public_key(pem_lines(key.pem).encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    sha1 = ec.ECDSA(hashes.SHA1())  # noqa: S303 - eBay signs with SHA-1
    public.verify(base64.b64decode(decoded["signature"]), body, sha1)


async def test_a_rotated_key_signs_from_then_on_and_the_old_one_stays_known(
    sandbox: SandboxHandle, ebay_client: EbayClient, http: httpx.AsyncClient
) -> None:
    old = sandbox.sandbox.notifications.kid
    new = (await http.post("/_sandbox/notifications/rotate-key")).json()["kid"]
    assert new != old
    _body, header, _ = sandbox.sandbox.notifications.notification("u1", "n", "e")
    assert json.loads(base64.b64decode(header))["kid"] == new
    assert (await ebay_client.notification_public_key(old)).pem


async def test_sending_without_a_registered_endpoint_is_a_clear_400(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/_sandbox/notifications/account-deletion", json={"user_id": "x"})
    assert response.status_code == 400
    assert "no endpoint is registered" in response.json()["error"]
    missing = await http.post("/_sandbox/notifications/account-deletion", json={})
    assert missing.status_code == 400
    bad = await http.post(
        "/_sandbox/notifications/endpoint", json={"url": "ftp://x", "verification_token": "t"}
    )
    assert bad.status_code == 400


async def test_an_endpoint_that_cannot_answer_the_challenge_is_not_registered(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/_sandbox/notifications/endpoint",
        json={"url": "http://127.0.0.1:9/hook", "verification_token": "t" * 40},
    )
    assert response.status_code == 400
    assert response.json()["verified"] is False
    assert (await http.get("/_sandbox/notifications/endpoint")).json()["url"] is None
