"""OpenTelemetry set-up and trace context propagation through NATS headers."""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from connector_common.redaction import redact_text
from connector_common.settings import OtelSettings

# Only W3C trace context travels in our NATS headers: not baggage, which a caller could fill
# with anything and which would then be stored in the event streams.
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass
class Telemetry:
    """The providers a process uses; shut them down on exit to flush what is buffered."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> metrics.Meter:
        return self.meter_provider.get_meter(name)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(
    settings: OtelSettings,
    service_name: str,
    *,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    set_global: bool = True,
) -> Telemetry:
    """Build tracer and meter providers exporting as configured (OTLP/HTTP, console, or none)."""
    resource = Resource.create(
        {"service.name": service_name, "service.namespace": "ebay-connector"}
    )
    exported = settings.exporter != "none" or bool(span_processors)
    # Spans nobody exports are not recorded (measured: ~9 % of a refresher's CPU); the trace
    # context still travels in message headers, so a process that does export continues it.
    sampler: Sampler = (
        ParentBased(TraceIdRatioBased(settings.sample_ratio)) if exported else ALWAYS_OFF
    )
    tracer_provider = TracerProvider(resource=resource, sampler=sampler)
    readers = list(metric_readers)
    interval_ms = settings.metric_interval_seconds * 1000
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = (settings.endpoint or "http://localhost:4318").rstrip("/")
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        )
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{base}/v1/metrics"),
                export_interval_millis=interval_ms,
            )
        )
    elif settings.exporter == "console":
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        readers.append(
            PeriodicExportingMetricReader(
                ConsoleMetricExporter(), export_interval_millis=interval_ms
            )
        )
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    return Telemetry(tracer_provider, meter_provider)


@contextmanager
def traced_span(tracer: trace.Tracer, name: str, **kwargs: Any) -> Iterator[trace.Span]:
    """``start_as_current_span`` whose exception event and status are scrubbed of secrets.

    The SDK's own recording copies ``str(exc)`` and the traceback into the span verbatim.
    """
    with tracer.start_as_current_span(
        name, record_exception=False, set_status_on_exception=False, **kwargs
    ) as span:
        try:
            yield span
        except BaseException as exc:
            record_exception_redacted(span, exc)
            raise


def record_exception_redacted(span: trace.Span, exc: BaseException) -> None:
    """Record ``exc`` on ``span`` with its message and stack trace scrubbed."""
    message = redact_text(str(exc))
    span.record_exception(
        exc,
        attributes={
            "exception.message": message,
            "exception.stacktrace": redact_text(
                "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            ),
        },
    )
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"[:300]))


def inject_trace_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Add the current trace context (``traceparent``) to message headers."""
    carrier: dict[str, str] = dict(headers or {})
    _PROPAGATOR.inject(carrier)
    return carrier


def extract_trace_context(headers: Mapping[str, str] | None) -> Context:
    """The trace context a message carried, to continue its trace in the consumer."""
    return _PROPAGATOR.extract(dict(headers or {}))
