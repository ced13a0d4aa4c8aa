"""OpenTelemetry set-up and trace context propagation through NATS headers."""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Link, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from connector_common.observability.prometheus import PrometheusExposition
from connector_common.redaction import REDACTED, is_secret_key, redact_text
from connector_common.settings import OtelSettings

# Only W3C trace context travels in our NATS headers: not baggage, which a caller could fill
# with anything and which would then be stored in the event streams.
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass
class Telemetry:
    """The providers a process uses; shut them down on exit to flush what is buffered."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    prometheus: PrometheusExposition | None = None

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> metrics.Meter:
        return self.meter_provider.get_meter(name)

    def metrics_text(self) -> bytes | None:
        """Every metric in Prometheus text format, or None when ``/metrics`` is off."""
        return self.prometheus.render() if self.prometheus is not None else None

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def package_version() -> str:
    """The installed version of the connector (every member is released in lockstep)."""
    try:
        return metadata.version("connector-common")
    except metadata.PackageNotFoundError:  # a source tree without package metadata
        return "0+unknown"


def build_resource(
    service_name: str, *, service_version: str | None = None, environment: str | None = None
) -> Resource:
    """Who emits: name, version and environment (``OTEL_RESOURCE_ATTRIBUTES`` adds to it).

    The version is ``service_version`` when set, else the ``service.version`` of
    ``OTEL_RESOURCE_ATTRIBUTES`` (the Kubernetes manifests put the image tag there), else the
    installed package's version.
    """
    attributes: dict[str, AttributeValue] = {
        "service.name": service_name,
        "service.namespace": "ebay-connector",
    }
    from_environment = OTELResourceDetector().detect().attributes.get("service.version")
    if service_version or not from_environment:
        attributes["service.version"] = service_version or package_version()
    if environment:
        attributes["deployment.environment.name"] = environment
    return Resource.create(attributes)


def setup_telemetry(
    settings: OtelSettings,
    service_name: str,
    *,
    environment: str | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    set_global: bool = True,
) -> Telemetry:
    """Build tracer and meter providers exporting as configured (OTLP/HTTP, console, or none),
    plus the Prometheus reader behind ``/metrics`` unless ``settings.prometheus`` is off."""
    resource = build_resource(
        service_name, service_version=settings.service_version, environment=environment
    )
    exported = settings.exporter != "none" or bool(span_processors)
    # Spans nobody exports are not recorded (measured: ~9 % of a refresher's CPU); the trace
    # context still travels in message headers, so a process that does export continues it.
    sampler: Sampler = (
        ParentBased(TraceIdRatioBased(settings.sample_ratio)) if exported else ALWAYS_OFF
    )
    tracer_provider = TracerProvider(resource=resource, sampler=sampler)
    readers = list(metric_readers)
    prometheus = PrometheusExposition() if settings.prometheus else None
    if prometheus is not None:
        readers.append(prometheus.reader)
    interval_ms = settings.metric_interval_seconds * 1000
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = (settings.endpoint or "http://localhost:4318").rstrip("/")
        tracer_provider.add_span_processor(
            ScrubbingSpanProcessor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
            )
        )
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{base}/v1/metrics"),
                export_interval_millis=interval_ms,
            )
        )
    elif settings.exporter == "console":
        tracer_provider.add_span_processor(
            ScrubbingSpanProcessor(BatchSpanProcessor(ConsoleSpanExporter()))
        )
        readers.append(
            PeriodicExportingMetricReader(
                ConsoleMetricExporter(), export_interval_millis=interval_ms
            )
        )
    for processor in span_processors:
        tracer_provider.add_span_processor(ScrubbingSpanProcessor(processor))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    return Telemetry(tracer_provider, meter_provider, prometheus)


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


@contextmanager
def untraced() -> Iterator[None]:
    """No span for the statements run inside (OpenTelemetry's "suppress instrumentation" flag,
    which our database instrumentation honours): probes and the outbox relay's polling, each
    of which would otherwise be a trace of its own every few seconds in every process."""
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        otel_context.detach(token)


def tracing_suppressed() -> bool:
    """Whether the current context is inside :func:`untraced`."""
    return bool(otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY))


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


def inject_trace_headers(
    headers: dict[str, str] | None = None, *, context: Context | None = None
) -> dict[str, str]:
    """Add the trace context (``traceparent``) to message headers: the current one, or that of
    ``context``."""
    carrier: dict[str, str] = dict(headers or {})
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


def extract_trace_context(headers: Mapping[str, str] | None) -> Context:
    """The trace context a message carried, to continue its trace in the consumer."""
    return _PROPAGATOR.extract(dict(headers or {}))


# Attribute keys whose whole value is secret, beyond the names the logs already know: the
# headers an HTTP instrumentation may record (``http.request.header.authorization``).
_HEADER_PREFIXES = ("http.request.header.", "http.response.header.")


def _secret_attribute(key: str) -> bool:
    if is_secret_key(key):
        return True
    return key.startswith(_HEADER_PREFIXES) and is_secret_key(key.rsplit(".", 1)[1])


def scrub_attributes(
    attributes: Mapping[str, AttributeValue] | None,
) -> dict[str, AttributeValue]:
    """The attributes with every secret-looking key blanked and every string value scrubbed."""
    scrubbed: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if _secret_attribute(key):
            scrubbed[key] = REDACTED
        elif isinstance(value, str):
            scrubbed[key] = redact_text(value)
        elif isinstance(value, tuple | list) and value and isinstance(value[0], str):
            scrubbed[key] = tuple(redact_text(str(item)) for item in value)
        else:
            scrubbed[key] = value
    return scrubbed


def scrub_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` whose name, attributes, events, links and status are scrubbed."""
    status = span.status
    if status.description:
        status = Status(status.status_code, redact_text(status.description))
    return ReadableSpan(
        name=redact_text(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub_attributes(span.attributes),
        events=[
            Event(event.name, scrub_attributes(event.attributes), event.timestamp)
            for event in span.events
        ],
        links=[Link(link.context, scrub_attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanProcessor(SpanProcessor):
    """Hands every finished span, ours or a library's, to ``inner`` only after scrubbing it.

    Every exporting processor of :func:`setup_telemetry` sits behind one, so nothing leaves the
    process without passing the same redaction rules as the logs (tokens, codes, ``state``,
    JWTs, registered secrets, secret-named attributes), whatever instrumentation recorded it.
    """

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._inner.on_end(scrub_span(span))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
