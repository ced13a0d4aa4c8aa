"""Every eBay call is a span with eBay's ids and headers, counted in metrics; never a secret."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from connector_common.ebay import AccessTokenRejected, EbayClient, RateLimited
from connector_common.settings import EbaySettings
from tests.fixtures.sandbox import SandboxHandle


@dataclass
class Captured:
    client: EbayClient
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def span_dump(self) -> str:
        return json.dumps(
            [
                {
                    "name": s.name,
                    "attributes": dict(s.attributes or {}),
                    "events": [dict(e.attributes or {}) for e in s.events],
                    "status": s.status.description,
                }
                for s in self.spans.get_finished_spans()
            ]
        )

    def attribute_pairs(self) -> list[tuple[str, Any]]:
        """Every attribute key and value of every span, span event and metric point."""
        pairs: list[tuple[str, Any]] = []
        for span in self.spans.get_finished_spans():
            pairs += list((span.attributes or {}).items())
            for event in span.events:
                pairs += list((event.attributes or {}).items())
        for points in self.metric_points().values():
            for point in points:
                pairs += list((point.attributes or {}).items())
        return pairs

    def metric_points(self) -> dict[str, list[Any]]:
        data = self.metrics.get_metrics_data()
        points: dict[str, list[Any]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points


@pytest.fixture
async def captured(ebay_settings: EbaySettings) -> AsyncIterator[Captured]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    client = EbayClient(
        ebay_settings,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        backoff_seconds=0.01,
    )
    yield Captured(client, spans, reader)
    await client.aclose()
    tracer_provider.shutdown()
    meter_provider.shutdown()


async def test_spans_carry_api_operation_status_and_ebay_headers(
    sandbox: SandboxHandle, captured: Captured
) -> None:
    client = captured.client
    token = await client.exchange_code(sandbox.grant("demo_uk_seller"))
    await client.get_user(token.access_token.get_secret_value(), site_id=3, account_key="acct-9")
    spans = {s.name: s for s in captured.spans.get_finished_spans()}
    assert set(spans) == {"ebay.oauth.exchange_code", "ebay.trading.GetUser"}
    span = spans["ebay.trading.GetUser"]
    attributes = dict(span.attributes or {})
    call = sandbox.calls(route="trading")[0]
    assert attributes["ebay.api"] == "trading"
    assert attributes["ebay.operation"] == "GetUser"
    assert attributes["ebay.marketplace_id"] == "EBAY_GB"
    assert attributes["ebay.site_id"] == 3
    assert attributes["ebay.account_key"] == "acct-9"
    assert attributes["http.response.status_code"] == 200
    assert attributes["ebay.outcome"] == "success"
    assert attributes["ebay.request_id"] == call["request_id"]
    assert str(attributes["ebay.rlogid"]).startswith("t6n")
    assert attributes["ebay.response.header.x-ebay-c-request-id"] == call["request_id"]
    assert attributes["ebay.response.header.x-ratelimit-remaining"] == "4999"
    assert attributes["ebay.rate_limit.remaining"] == 4999
    assert float(str(attributes["ebay.latency_ms"])) > 0


async def test_failed_calls_record_error_code_and_outcome(
    sandbox: SandboxHandle, captured: Captured
) -> None:
    client = captured.client
    token = await client.exchange_code(sandbox.grant("demo_uk_seller"))
    access = token.access_token.get_secret_value()
    sandbox.invalidate_token(access)
    with pytest.raises(AccessTokenRejected):
        await client.get_user(access, site_id=3)
    sandbox.fault("identity", "rate_limit", retry_after=60)
    with pytest.raises(RateLimited):
        await client.identity_user(access)
    spans = {s.name: dict(s.attributes or {}) for s in captured.spans.get_finished_spans()}
    assert spans["ebay.trading.GetUser"]["ebay.error_code"] == "21917053"
    assert spans["ebay.trading.GetUser"]["ebay.outcome"] == "access_token_rejected"
    assert spans["ebay.identity.getUser"]["ebay.error_code"] == "2001"
    assert spans["ebay.identity.getUser"]["ebay.outcome"] == "rate_limited"
    assert spans["ebay.identity.getUser"]["ebay.response.header.retry-after"] == "60"


async def test_metrics_count_calls_by_outcome_and_record_latency_and_remaining(
    sandbox: SandboxHandle, captured: Captured
) -> None:
    client = captured.client
    token = await client.exchange_code(sandbox.grant("demo_uk_seller"))
    access = token.access_token.get_secret_value()
    await client.get_user(access, site_id=3)
    sandbox.fault("trading", "error", status=503, count=1)
    await client.get_user(access, site_id=3)
    points = captured.metric_points()
    calls = {
        (p.attributes["ebay.operation"], p.attributes["ebay.outcome"]): p.value
        for p in points["ebay.calls"]
    }
    assert calls[("GetUser", "success")] == 2
    assert calls[("GetUser", "transient")] == 1
    assert calls[("exchange_code", "success")] == 1
    durations = [p for p in points["ebay.call.duration"] if p.attributes["ebay.api"] == "trading"]
    assert sum(p.count for p in durations) == 3
    # Seconds, not milliseconds: a local call is far below one second, and above zero.
    assert 0 < sum(p.sum for p in durations) < 3
    assert durations[0].explicit_bounds[0] == 0.005
    remaining = [p.value for p in points["ebay.rate_limit.remaining"]]
    assert remaining == [4997]  # the latest value eBay reported (the sandbox counts all 3)


async def test_no_token_or_secret_reaches_spans_or_metrics(
    sandbox: SandboxHandle, captured: Captured
) -> None:
    client = captured.client
    code = sandbox.grant("demo_uk_seller")
    token = await client.exchange_code(code)
    assert token.refresh_token is not None
    access = token.access_token.get_secret_value()
    refreshed = await client.refresh_access_token(
        token.refresh_token.get_secret_value(), sandbox.scopes, account_key="acct"
    )
    await client.get_user(refreshed.access_token.get_secret_value(), site_id=3)
    await client.identity_user(access)
    app = await client.application_token()
    await client.app_rate_limits()
    sandbox.invalidate_token(access)
    with pytest.raises(AccessTokenRejected):
        await client.identity_user(access)
    dump = captured.span_dump() + json.dumps(
        {name: [str(p.attributes) for p in pts] for name, pts in captured.metric_points().items()}
    )
    secrets = [
        code,
        access,
        token.refresh_token.get_secret_value(),
        refreshed.access_token.get_secret_value(),
        app.access_token.get_secret_value(),
        sandbox.client_secret,
    ]
    for secret in secrets:
        assert secret not in dump
        assert secret[-40:] not in dump
    # Header names as attribute keys, credential shapes as values. (Not substrings of the whole
    # dump: random request ids may contain "iaf" by chance.)
    for key, value in captured.attribute_pairs():
        assert "authorization" not in key.lower()
        assert "iaf" not in key.lower()
        text = str(value)
        assert "v^1.1" not in text
        assert not text.lower().startswith(("bearer ", "basic "))
        assert " bearer " not in f" {text.lower()}"


async def test_developer_analytics_quotas_become_remaining_and_limit_gauges(
    sandbox: SandboxHandle, captured: Captured
) -> None:
    limits = await captured.client.app_rate_limits()
    points = captured.metric_points()

    def by_resource(name: str) -> dict[str, float]:
        return {
            str(p.attributes["ebay.resource"]): p.value
            for p in points[name]
            if "ebay.resource" in p.attributes
        }

    expected = {
        resource.name: (rate.remaining, rate.limit)
        for api in limits.apis
        for resource in api.resources
        for rate in resource.rates
    }
    assert expected, "the sandbox reports quotas: the check below is not vacuous"
    remaining = by_resource("ebay.rate_limit.remaining")
    limit = by_resource("ebay.rate_limit.limit")
    assert {name: (remaining[name], limit[name]) for name in expected} == expected
