"""The control API: sellers, faults (per route, seller, count, duration, share) and the call log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from connector_common.ebay import EbayClient, TransientError
from ebay_sandbox.faults import FaultBook, fault_from_json
from ebay_sandbox.models import SandboxConfig
from ebay_sandbox.state import SandboxState
from tests.fixtures.sandbox import SandboxHandle


@pytest.fixture
async def control(sandbox: SandboxHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{sandbox.base_url}/_sandbox") as client:
        yield client


def test_demo_sellers_cover_several_marketplaces(sandbox: SandboxHandle) -> None:
    marketplaces = {s["marketplace_id"] for s in sandbox.sellers()}
    assert marketplaces >= {"EBAY_US", "EBAY_GB", "EBAY_DE", "EBAY_CA", "EBAY_AU", "EBAY_MOTORS_US"}


async def test_created_seller_can_consent_and_call(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    seller = sandbox.create_seller("shop_fr", site_id=71, account_type="BUSINESS")
    assert (seller["site_code"], seller["marketplace_id"]) == ("France", "EBAY_FR")
    token = await ebay_client.exchange_code(sandbox.grant("shop_fr"))
    user = await ebay_client.get_user(token.access_token.get_secret_value(), site_id=71)
    assert user.eias_token == seller["eias_token"]


async def test_renamed_seller_keeps_its_user_id(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await ebay_client.exchange_code(sandbox.grant("demo_us_seller"))
    before = await ebay_client.identity_user(token.access_token.get_secret_value())
    sandbox.rename("demo_us_seller", "renamed_us_seller")
    after = await ebay_client.identity_user(token.access_token.get_secret_value())
    assert after.user_id == before.user_id
    assert after.username == "renamed_us_seller"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/sellers", {"username": "x", "site_id": 999}, 400),
        ("/sellers", {"username": "x"}, 400),
        ("/sellers", {"username": "demo_us_seller", "site_id": 0}, 400),
        ("/sellers", {}, 400),
        ("/sellers/nobody/suspend", {}, 404),
        ("/consent", {"seller": "demo_us_seller", "client_id": "unknown", "scopes": ["x"]}, 400),
        ("/faults", {"route": "nowhere", "kind": "error"}, 400),
        ("/faults", {"route": "token", "kind": "explode"}, 400),
        ("/faults", {"route": "token", "kind": "error", "probability": 2}, 400),
        ("/faults", {"route": "token", "kind": "ebay_error"}, 400),
        ("/sellers/demo_us_seller/invalidate-tokens", {"reason": "bored"}, 400),
    ],
)
async def test_bad_control_requests_get_a_clear_error(
    control: httpx.AsyncClient, path: str, body: dict[str, object], status: int
) -> None:
    response = await control.post(path, json=body)
    assert response.status_code == status
    assert response.json()["error"]


async def test_non_json_control_body_is_rejected(control: httpx.AsyncClient) -> None:
    response = await control.post("/sellers", content=b"username=x")
    assert response.status_code == 400


async def test_fault_for_n_calls_then_normal_answers(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    sandbox.fault("token", "error", status=503, count=2)
    await ebay_client.application_token()  # 503, 503, 200 with retries
    assert [c["status"] for c in sandbox.calls(route="token")] == [503, 503, 200]
    assert [c["outcome"] for c in sandbox.calls(route="token")][:2] == ["fault_error"] * 2


async def test_fault_for_a_duration_expires(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    sandbox.fault("token", "error", status=500, duration=0.5)
    started = time.monotonic()
    with pytest.raises(TransientError):
        await ebay_client.application_token()
    for _ in range(100):  # poll with a deadline until the fault has run out
        try:
            await ebay_client.application_token()
            break
        except TransientError:
            await asyncio.sleep(0.05)
    assert time.monotonic() - started >= 0.5
    assert sandbox.calls(route="token")[-1]["status"] == 200


async def test_fault_for_one_seller_spares_the_others(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    uk = await ebay_client.exchange_code(sandbox.grant("demo_uk_seller"))
    de = await ebay_client.exchange_code(sandbox.grant("demo_de_seller"))
    sandbox.fault("trading", "error", status=500, seller="demo_uk_seller")
    await ebay_client.get_user(de.access_token.get_secret_value(), site_id=77)
    with pytest.raises(TransientError):
        await ebay_client.get_user(uk.access_token.get_secret_value(), site_id=3)


def test_share_of_faults_follows_probability() -> None:
    book = FaultBook(seed=7)
    book.add(fault_from_json({"route": "token", "kind": "rate_limit", "probability": 0.25}))
    fired = sum(book.pick("token", (), None) is not None for _ in range(4000))
    assert 800 < fired < 1200


async def test_latency_fault_delays_the_answer(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    sandbox.fault("token", "latency", latency_ms=200, count=1)
    started = time.monotonic()
    await ebay_client.application_token()
    assert time.monotonic() - started >= 0.2
    assert sandbox.calls(route="token")[0]["status"] == 200


async def test_call_log_filters_by_seller_route_and_since(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    uk = await ebay_client.exchange_code(sandbox.grant("demo_uk_seller"))
    await ebay_client.exchange_code(sandbox.grant("demo_de_seller"))
    middle = time.time()
    await ebay_client.get_user(uk.access_token.get_secret_value(), site_id=3)
    assert len(sandbox.calls(seller="demo_uk_seller")) == 2
    assert len(sandbox.calls(route="token")) == 2
    recent = sandbox.calls(since=middle)
    assert [(c["route"], c["seller"]) for c in recent] == [("trading", "demo_uk_seller")]
    assert recent[0]["client_id"] == sandbox.client_id
    uk_user_id = sandbox.state.seller("demo_uk_seller").user_id
    assert len(sandbox.calls(seller=uk_user_id)) == 2


async def test_reset_restores_start_up_state(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    sandbox.create_seller("temporary", site_id=186)
    sandbox.fault("token", "error")
    sandbox.settings(access_token_lifetime=3)
    sandbox.reset()
    assert "temporary" not in {s["username"] for s in sandbox.sellers()}
    assert sandbox.calls() == []
    await ebay_client.application_token()  # the fault is gone
    assert [c["status"] for c in sandbox.calls(route="token")] == [200]
    assert sandbox.settings()["access_token_lifetime"] == 7200


def test_demo_sellers_keep_their_identity_across_sandbox_restarts() -> None:
    first = SandboxState(SandboxConfig())
    second = SandboxState(SandboxConfig())
    for username in ("demo_us_seller", "demo_uk_seller", "demo_motors_seller"):
        a, b = first.seller(username), second.seller(username)
        assert (a.user_id, a.eias_token) == (b.user_id, b.eias_token)
    assert len({s.user_id for s in first.sellers.values()}) == len(first.sellers)
