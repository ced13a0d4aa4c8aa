"""Telemetry helpers: exceptions recorded on spans are scrubbed; only trace context travels."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from connector_common.telemetry import extract_trace_context, inject_trace_headers, traced_span

TOKEN = "v^1.1#i^1#p^3#r^0#I^3#f^0#t^H4sIAAAAAAAAAOVYa2wUVRTe7ZYWLIiU=="


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("tests")


def test_an_exception_with_a_token_is_recorded_scrubbed(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(RuntimeError), traced_span(tracer, "work"):
        raise RuntimeError(f"eBay said no to Bearer {TOKEN}")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    recorded = [dict(event.attributes or {}) for event in span.events]
    assert recorded
    assert recorded[0]["exception.type"] == "RuntimeError"
    dump = repr(recorded) + str(span.status.description)
    assert "eBay said no" in dump
    assert TOKEN not in dump
    assert "v^1.1" not in dump


def test_only_trace_context_is_propagated_not_baggage(tracer: trace.Tracer) -> None:
    token = context.attach(baggage.set_baggage("note", "anything a caller sends"))
    try:
        with tracer.start_as_current_span("request"):
            headers = inject_trace_headers({"Nats-Msg-Id": "x"})
    finally:
        context.detach(token)
    assert set(headers) == {"Nats-Msg-Id", "traceparent"}
    parent = trace.get_current_span(extract_trace_context(headers)).get_span_context()
    assert parent.is_valid


def test_every_exported_span_is_scrubbed_whoever_made_it() -> None:
    from connector_common.settings import OtelSettings
    from connector_common.telemetry import setup_telemetry

    exporter = InMemorySpanExporter()
    telemetry = setup_telemetry(
        OtelSettings(),
        "scrub-test",
        span_processors=[SimpleSpanProcessor(exporter)],
        set_global=False,
    )
    jwt_value = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"
    # A third-party instrumentation: it records the query, a header, a JWT in an event.
    other = telemetry.tracer_provider.get_tracer("some.library")
    with other.start_as_current_span(f"GET /callback?code={TOKEN}") as span:
        span.set_attribute("url.query", "code=abc123secret&state=xyz789state&expires_in=299")
        span.set_attribute("url.full", f"https://x.test/cb?code={TOKEN}")
        span.set_attribute("http.request.header.authorization", ("Basic dXNlcjpwYXNz",))
        span.set_attribute("refresh_token", "opaque-refresh-value")
        span.set_attribute("db.statement", "SELECT 1")
        span.set_attribute("http.response.status_code", 200)
        span.add_event("log", {"message": f"token {jwt_value}", "count": 3})
        span.set_status(StatusCode.ERROR, f"failed with Bearer {jwt_value}")
    telemetry.shutdown()
    (finished,) = exporter.get_finished_spans()
    dump = repr((finished.name, dict(finished.attributes or {}), finished.events, finished.status))
    for secret in (TOKEN, "abc123secret", "xyz789state", "dXNlcjpwYXNz", "opaque-refresh-value"):
        assert secret not in dump
    assert jwt_value not in dump
    attributes = dict(finished.attributes or {})
    assert attributes["db.statement"] == "SELECT 1"  # what is not secret stays readable
    assert attributes["http.response.status_code"] == 200
    assert "expires_in=299" in str(attributes["url.query"])
    assert dict(finished.events[0].attributes or {})["count"] == 3


def test_the_manifests_resource_attributes_reach_every_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_RESOURCE_ATTRIBUTES (set by the Deployments from the version label and the pod's
    namespace) is merged into the resource; the service's own name stays ours."""
    from connector_common.settings import OtelSettings
    from connector_common.telemetry import setup_telemetry

    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.version=0.1.0,k8s.namespace.name=ebay-connector,k8s.pod.name=api-7d9f",
    )
    spans = InMemorySpanExporter()
    telemetry = setup_telemetry(
        OtelSettings(), "api", span_processors=[SimpleSpanProcessor(spans)], set_global=False
    )
    try:
        with telemetry.tracer("tests").start_as_current_span("one"):
            pass
        (span,) = spans.get_finished_spans()
        attributes = span.resource.attributes
        assert attributes["service.version"] == "0.1.0"
        assert attributes["k8s.namespace.name"] == "ebay-connector"
        assert attributes["service.name"] == "api"
        assert attributes["service.namespace"] == "ebay-connector"
    finally:
        telemetry.shutdown()
