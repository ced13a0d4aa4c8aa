"""Spans and metrics for eBay calls.

One CLIENT span per HTTP call (``ebay.<api>.<operation>``) carrying eBay's ids and rate-limit
headers; metrics ``ebay.calls`` (by api/operation/outcome), ``ebay.call.duration`` (seconds, like
every duration we record), ``ebay.rate_limit.remaining`` and, from Developer Analytics answers,
``ebay.rate_limit.limit``. Attributes are built only from :class:`CallMeta` and the call's
description, never from a request or a body, so no token can reach them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from connector_common.ebay.errors import EbayError
from connector_common.ebay.models import CallMeta, RateLimits

INSTRUMENTATION_NAME = "connector_common.ebay"
# OpenTelemetry's recommended boundaries for HTTP durations (seconds), plus eBay's slow tail.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0
)  # fmt: skip


@dataclass(frozen=True)
class CallSpec:
    """What is being called, for spans, metrics and logs."""

    api: str
    operation: str
    method: str
    url: str
    account_key: str | None = None
    marketplace_id: str | None = None
    site_id: int | None = None


class EbayInstruments:
    """The tracer and metric instruments of one client."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(
            INSTRUMENTATION_NAME
        )
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(INSTRUMENTATION_NAME)
        self._calls = meter.create_counter(
            "ebay.calls", unit="{call}", description="HTTP calls to eBay by api/operation/outcome"
        )
        self._duration = meter.create_histogram(
            "ebay.call.duration",
            unit="s",
            description="Latency of HTTP calls to eBay",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._remaining = meter.create_gauge(
            "ebay.rate_limit.remaining",
            unit="{call}",
            description="Calls eBay still allows in the current window",
        )
        self._limit = meter.create_gauge(
            "ebay.rate_limit.limit",
            unit="{call}",
            description="Calls eBay allows per window (Developer Analytics)",
        )

    @contextmanager
    def span(self, spec: CallSpec, attempt: int) -> Iterator[Span]:
        """A CLIENT span for one HTTP call; exceptions are recorded by ``finish``, not here."""
        attributes: dict[str, str | int] = {
            "ebay.api": spec.api,
            "ebay.operation": spec.operation,
            "http.request.method": spec.method,
            "url.full": spec.url,
            "ebay.attempt": attempt,
        }
        if spec.account_key:
            attributes["ebay.account_key"] = spec.account_key
        if spec.marketplace_id:
            attributes["ebay.marketplace_id"] = spec.marketplace_id
        if spec.site_id is not None:
            attributes["ebay.site_id"] = spec.site_id
        with self._tracer.start_as_current_span(
            f"ebay.{spec.api}.{spec.operation}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    def finish(self, span: Span, spec: CallSpec, meta: CallMeta, error: EbayError | None) -> None:
        """Put the answer on the span and count the call."""
        outcome = "success" if error is None else error.kind
        if meta.http_status is not None:
            span.set_attribute("http.response.status_code", meta.http_status)
        span.set_attribute("ebay.latency_ms", round(meta.latency_ms, 3))
        span.set_attribute("ebay.outcome", outcome)
        if meta.rlogid:
            span.set_attribute("ebay.rlogid", meta.rlogid)
        if meta.request_id:
            span.set_attribute("ebay.request_id", meta.request_id)
        for name, value in meta.ebay_headers.items():
            span.set_attribute(f"ebay.response.header.{name}", value)
        if meta.rate_limit_remaining is not None:
            span.set_attribute("ebay.rate_limit.remaining", meta.rate_limit_remaining)
        if error is not None:
            if error.error_code:
                span.set_attribute("ebay.error_code", error.error_code)
            span.set_status(Status(StatusCode.ERROR, error.kind))
        labels = {"ebay.api": spec.api, "ebay.operation": spec.operation, "ebay.outcome": outcome}
        self._calls.add(1, labels)
        self._duration.record(meta.latency_ms / 1000, labels)
        if meta.rate_limit_remaining is not None:
            self._remaining.set(
                meta.rate_limit_remaining,
                {"ebay.api": spec.api, "ebay.operation": spec.operation},
            )

    def count_short_circuit(self, spec: CallSpec) -> None:
        """A call the open breaker stopped before it reached eBay."""
        self._calls.add(
            1,
            {
                "ebay.api": spec.api,
                "ebay.operation": spec.operation,
                "ebay.outcome": "circuit_open",
            },
        )

    def record_rate_limits(self, limits: RateLimits) -> None:
        """Developer Analytics quotas, one gauge point per API resource."""
        for api in limits.apis:
            for resource in api.resources:
                for rate in resource.rates:
                    labels = {
                        "ebay.api": "analytics",
                        "ebay.api_context": api.api_context,
                        "ebay.api_name": api.api_name,
                        "ebay.resource": resource.name,
                    }
                    if rate.remaining is not None:
                        self._remaining.set(rate.remaining, labels)
                    if rate.limit is not None:
                        self._limit.set(rate.limit, labels)
