"""Retries: Retry-After honoured exactly, backoff bounded in attempts and time, no retry when
retrying cannot help or must not happen. Timestamps come from the sandbox's call log."""

from __future__ import annotations

import itertools
import time

import pytest

from connector_common.ebay import EbayClient, PermanentError, RateLimited, TransientError
from connector_common.settings import EbaySettings
from tests.fixtures.sandbox import SandboxHandle


async def _access_token(sandbox: SandboxHandle, client: EbayClient, seller: str) -> str:
    token = await client.exchange_code(sandbox.grant(seller))
    return token.access_token.get_secret_value()


async def test_retry_after_is_honoured_before_the_next_call(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    access = await _access_token(sandbox, ebay_client, "demo_uk_seller")
    sandbox.fault("identity", "rate_limit", retry_after=1, count=1)
    user = await ebay_client.identity_user(access)
    assert user.username == "demo_uk_seller"
    calls = sandbox.calls(route="identity")
    assert [c["status"] for c in calls] == [429, 200]
    # the retry reached eBay no earlier than the first answer plus Retry-After
    first_answered = calls[0]["at"] + calls[0]["duration_ms"] / 1000
    assert calls[1]["at"] - first_answered >= 1.0


async def test_retry_after_longer_than_the_budget_raises_at_once(
    sandbox: SandboxHandle, ebay_settings: EbaySettings
) -> None:
    settings = ebay_settings.model_copy(update={"max_retry_seconds": 5.0})
    async with EbayClient(settings) as client:
        access = await _access_token(sandbox, client, "demo_uk_seller")
        sandbox.fault("identity", "rate_limit", retry_after=120)
        started = time.monotonic()
        with pytest.raises(RateLimited) as caught:
            await client.identity_user(access)
    assert time.monotonic() - started < 2.0  # did not sleep on it
    assert caught.value.retry_after == 120  # the caller can postpone by exactly this
    assert len(sandbox.calls(route="identity")) == 1


async def test_rate_limited_token_endpoint_is_retried_after_the_wait(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    token = await ebay_client.exchange_code(sandbox.grant("demo_us_seller"))
    assert token.refresh_token is not None
    sandbox.fault("token", "rate_limit", retry_after=1, count=1)
    refreshed = await ebay_client.refresh_access_token(
        token.refresh_token.get_secret_value(), sandbox.scopes
    )
    assert refreshed.access_token.get_secret_value()
    refreshes = [c for c in sandbox.calls(route="token") if c["outcome"] != "exchanged"]
    assert [c["status"] for c in refreshes] == [429, 200]
    assert refreshes[1]["at"] - refreshes[0]["at"] >= 1.0


async def test_transient_errors_are_retried_then_succeed(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    access = await _access_token(sandbox, ebay_client, "demo_us_seller")
    sandbox.fault("trading", "error", status=503, count=2)
    user = await ebay_client.get_user(access)
    assert user.user_id == "demo_us_seller"
    assert user.meta.attempt == 3
    assert [c["status"] for c in sandbox.calls(route="trading")] == [503, 503, 200]


async def test_attempts_are_bounded(sandbox: SandboxHandle, ebay_settings: EbaySettings) -> None:
    settings = ebay_settings.model_copy(update={"max_attempts": 4, "max_retry_seconds": 30.0})
    async with EbayClient(settings, backoff_seconds=0.01, max_backoff_seconds=0.02) as client:
        access = await _access_token(sandbox, client, "demo_us_seller")
        sandbox.fault("trading", "error", status=500)
        with pytest.raises(TransientError):
            await client.get_user(access)
    assert len(sandbox.calls(route="trading")) == 4


async def test_total_retry_time_is_bounded(
    sandbox: SandboxHandle, ebay_settings: EbaySettings
) -> None:
    # Backoff of 0.4 s, 0.8 s, 1.6 s ... would need ~6 s for 10 attempts; the budget is 1 s.
    settings = ebay_settings.model_copy(update={"max_attempts": 10, "max_retry_seconds": 1.0})
    async with EbayClient(settings, backoff_seconds=0.4, max_backoff_seconds=5.0) as client:
        access = await _access_token(sandbox, client, "demo_us_seller")
        sandbox.fault("trading", "error", status=503)
        started = time.monotonic()
        with pytest.raises(TransientError):
            await client.get_user(access)
        elapsed = time.monotonic() - started
    calls = sandbox.calls(route="trading")
    assert elapsed <= 1.0 + 0.5  # the budget, plus one answer's worth of slack
    assert 1 < len(calls) < 10


async def test_backoff_between_attempts_grows_with_jitter(
    sandbox: SandboxHandle, ebay_settings: EbaySettings
) -> None:
    settings = ebay_settings.model_copy(update={"max_attempts": 3, "max_retry_seconds": 10.0})
    async with EbayClient(settings, backoff_seconds=0.1, max_backoff_seconds=2.0) as client:
        access = await _access_token(sandbox, client, "demo_us_seller")
        sandbox.fault("trading", "error", status=500)
        with pytest.raises(TransientError):
            await client.get_user(access)
    at = [c["at"] for c in sandbox.calls(route="trading")]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    # attempt n waits 0.1 * 2**(n-1) plus up to 0.1 of jitter (upper bounds leave room for a
    # busy machine; the lower bounds are the point)
    assert 0.1 <= gaps[0] < 0.7
    assert 0.2 <= gaps[1] < 0.8


async def test_permanent_errors_are_not_retried(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    access = await _access_token(sandbox, ebay_client, "demo_us_seller")
    sandbox.fault("identity", "ebay_error", error_code="2004", status=400)
    with pytest.raises(PermanentError):
        await ebay_client.identity_user(access)
    assert len(sandbox.calls(route="identity")) == 1


async def test_code_exchange_is_not_retried_once_the_request_was_sent(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    code = sandbox.grant("demo_us_seller")
    sandbox.fault("token", "error", status=503, count=1)
    with pytest.raises(TransientError):
        await ebay_client.exchange_code(code)
    assert len(sandbox.calls(route="token")) == 1  # a single-use code is never sent twice


async def test_429_without_retry_after_is_retried_with_backoff(
    sandbox: SandboxHandle, ebay_client: EbayClient
) -> None:
    access = await _access_token(sandbox, ebay_client, "demo_us_seller")
    sandbox.fault("identity", "rate_limit", count=1)  # no Retry-After header
    user = await ebay_client.identity_user(access)
    assert user.username == "demo_us_seller"
    assert [c["status"] for c in sandbox.calls(route="identity")] == [429, 200]
