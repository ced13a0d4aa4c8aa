"""The per-account circuit breaker, shared through PostgreSQL by two client instances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.db.engine import create_session_factory
from connector_common.ebay import (
    CircuitBreaker,
    CircuitOpen,
    EbayClient,
    MemoryBreakerStore,
    Permit,
    PostgresBreakerStore,
    SellerSuspended,
    TransientError,
)
from connector_common.settings import EbaySettings
from tests.fixtures.sandbox import SandboxHandle

COOLDOWN = 0.5


@pytest.fixture
def breaker_settings(ebay_settings: EbaySettings) -> EbaySettings:
    return ebay_settings.model_copy(
        update={
            "max_attempts": 1,
            "breaker_failure_threshold": 2,
            "breaker_cooldown_seconds": COOLDOWN,
        }
    )


@pytest.fixture
async def two_clients(
    breaker_settings: EbaySettings, engine: AsyncEngine
) -> AsyncIterator[tuple[EbayClient, EbayClient]]:
    """Two replicas: separate clients and breakers, one PostgreSQL."""
    factory = create_session_factory(engine)
    clients = [
        EbayClient(
            breaker_settings,
            breaker=CircuitBreaker.from_settings(breaker_settings, PostgresBreakerStore(factory)),
        )
        for _ in range(2)
    ]
    yield clients[0], clients[1]
    for client in clients:
        await client.aclose()


async def _wait_until_cooled(breaker: CircuitBreaker, key: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        snapshot = await breaker.state(key)
        assert snapshot is not None
        if snapshot.open_until is not None and snapshot.now >= snapshot.open_until:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the breaker did not cool down")


async def test_breaker_opens_half_opens_for_one_probe_and_closes_across_replicas(
    sandbox: SandboxHandle, two_clients: tuple[EbayClient, EbayClient]
) -> None:
    a, b = two_clients
    token = await a.exchange_code(sandbox.grant("demo_uk_seller"))
    access = token.access_token.get_secret_value()
    key = "account-uk"
    sandbox.fault("trading", "error", status=503, seller="demo_uk_seller")

    # closed -> open: two failures, one on each replica
    for client in (a, b):
        with pytest.raises(TransientError):
            await client.get_user(access, site_id=3, account_key=key)
    assert a.breaker is not None
    snapshot = await a.breaker.state(key)
    assert snapshot is not None
    assert snapshot.state == "open"

    # open: neither replica reaches eBay
    calls_before = len(sandbox.calls(route="trading"))
    for client in (a, b):
        with pytest.raises(CircuitOpen) as caught:
            await client.get_user(access, site_id=3, account_key=key)
        assert caught.value.open_until == snapshot.open_until
    assert len(sandbox.calls(route="trading")) == calls_before

    # half-open: after the cool-down exactly one caller across both replicas probes
    sandbox.clear_faults()
    sandbox.fault("trading", "latency", latency_ms=300)  # keep the probe in flight meanwhile
    await _wait_until_cooled(a.breaker, key)
    results = await asyncio.gather(
        *(c.get_user(access, site_id=3, account_key=key) for c in (a, b, a, b)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if isinstance(r, CircuitOpen)) == 3
    assert len(sandbox.calls(route="trading")) == calls_before + 1

    # the probe succeeded: closed again, both replicas call eBay
    closed = await a.breaker.state(key)
    assert closed is not None
    assert closed.state == "closed"
    sandbox.clear_faults()
    await a.get_user(access, site_id=3, account_key=key)
    await b.get_user(access, site_id=3, account_key=key)
    assert len(sandbox.calls(route="trading")) == calls_before + 3


async def test_failed_probe_reopens_the_breaker(
    sandbox: SandboxHandle, two_clients: tuple[EbayClient, EbayClient]
) -> None:
    a, b = two_clients
    token = await a.exchange_code(sandbox.grant("demo_us_seller"))
    access = token.access_token.get_secret_value()
    key = "account-us"
    sandbox.fault("identity", "error", status=500, seller="demo_us_seller")
    for client in (a, b):
        with pytest.raises(TransientError):
            await client.identity_user(access, account_key=key)
    assert a.breaker is not None
    first = await a.breaker.state(key)
    assert first is not None
    await _wait_until_cooled(a.breaker, key)
    with pytest.raises(TransientError):  # the probe goes out and fails
        await b.identity_user(access, account_key=key)
    reopened = await a.breaker.state(key)
    assert reopened is not None
    assert reopened.state == "open"
    assert first.open_until is not None
    assert reopened.open_until is not None
    assert reopened.open_until > first.open_until
    with pytest.raises(CircuitOpen):
        await a.identity_user(access, account_key=key)


async def test_breaker_is_per_account(
    sandbox: SandboxHandle, two_clients: tuple[EbayClient, EbayClient]
) -> None:
    a, _b = two_clients
    uk = (await a.exchange_code(sandbox.grant("demo_uk_seller"))).access_token.get_secret_value()
    de = (await a.exchange_code(sandbox.grant("demo_de_seller"))).access_token.get_secret_value()
    sandbox.fault("trading", "error", status=503, seller="demo_uk_seller")
    for _ in range(2):
        with pytest.raises(TransientError):
            await a.get_user(uk, site_id=3, account_key="uk")
    with pytest.raises(CircuitOpen):
        await a.get_user(uk, site_id=3, account_key="uk")
    user = await a.get_user(de, site_id=77, account_key="de")
    assert user.user_id == "demo_de_seller"


async def test_permanent_and_reauth_errors_do_not_open_the_breaker(
    sandbox: SandboxHandle, two_clients: tuple[EbayClient, EbayClient]
) -> None:
    a, _b = two_clients
    access = (
        await a.exchange_code(sandbox.grant("demo_de_seller"))
    ).access_token.get_secret_value()
    sandbox.suspend("demo_de_seller")
    for _ in range(4):
        with pytest.raises(SellerSuspended):
            await a.get_user(access, site_id=77, account_key="de")
    assert a.breaker is not None
    assert await a.breaker.state("de") is None  # nothing recorded: eBay answered properly
    assert len(sandbox.calls(route="trading")) == 4


async def test_success_resets_the_failure_count(
    sandbox: SandboxHandle, two_clients: tuple[EbayClient, EbayClient]
) -> None:
    a, _b = two_clients
    access = (
        await a.exchange_code(sandbox.grant("demo_ca_seller"))
    ).access_token.get_secret_value()
    for _ in range(3):
        sandbox.fault("trading", "error", status=503, count=1)
        with pytest.raises(TransientError):
            await a.get_user(access, site_id=2, account_key="ca")
        await a.get_user(access, site_id=2, account_key="ca")
    assert a.breaker is not None
    snapshot = await a.breaker.state("ca")
    assert snapshot is not None
    assert (snapshot.state, snapshot.consecutive_failures) == ("closed", 0)


async def test_memory_store_follows_the_same_state_machine() -> None:
    breaker = CircuitBreaker(MemoryBreakerStore(), failure_threshold=2, cooldown_seconds=0.2)
    failure = TransientError("eBay trading GetUser: HTTP 503")
    for _ in range(2):
        permit = await breaker.acquire("k")
        await breaker.record(permit, failure)
    with pytest.raises(CircuitOpen):
        await breaker.acquire("k")
    deadline = time.monotonic() + 5
    probe: Permit | None = None
    while probe is None and time.monotonic() < deadline:
        try:
            probe = await breaker.acquire("k")
        except CircuitOpen:
            await asyncio.sleep(0.02)
    assert probe is not None
    assert probe.probe
    with pytest.raises(CircuitOpen):  # one probe at a time
        await breaker.acquire("k")
    await breaker.record(probe, None)
    assert await breaker.state("k") is None
    assert not (await breaker.acquire("k")).probe


async def test_unreachable_breaker_store_lets_calls_through(
    sandbox: SandboxHandle, breaker_settings: EbaySettings
) -> None:
    from pydantic import SecretStr

    from connector_common.db.engine import create_engine
    from connector_common.settings import DatabaseSettings
    from connector_devstack.embedded import free_port

    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    engine = create_engine(DatabaseSettings(url=SecretStr(url)), application_name="tests")
    store = PostgresBreakerStore(create_session_factory(engine))
    breaker = CircuitBreaker.from_settings(breaker_settings, store)
    async with EbayClient(breaker_settings, breaker=breaker) as client:
        token = await client.exchange_code(sandbox.grant("demo_us_seller"))
        user = await client.get_user(token.access_token.get_secret_value(), account_key="k")
    await engine.dispose()
    assert user.user_id == "demo_us_seller"  # the breaker protects; it is not the outage
