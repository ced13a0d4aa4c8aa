"""Publish and process spans for NATS JetStream, named by OpenTelemetry's messaging semantic
conventions.

A publish is a PRODUCER span ``publish <destination>`` (``messaging.operation.type`` ``send``,
``messaging.operation.name`` ``publish``, as nats-py calls it); handling a message is a CONSUMER
span ``process <destination>``. The destination in a span name has its per-org part replaced by
a placeholder (``ebay.events.{org_id}.token.refreshed``, also ``messaging.destination.template``)
so span names stay few; ``messaging.destination.name`` keeps the real subject.

The message headers carry the publish span's context (W3C ``traceparent``), so the process span
of the consumer is its child: one trace from the request that made the message to its handling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from connector_common.redaction import redact_text
from connector_common.telemetry import inject_trace_headers

SYSTEM = "nats"
MESSAGE_ID_HEADER = "Nats-Msg-Id"
_TRACE_HEADERS = ("traceparent", "tracestate")


def destination_template(subject: str) -> str | None:
    """The subject with its org id as ``{org_id}`` (event subjects), else None."""
    parts = subject.split(".")
    if len(parts) >= 4 and parts[1] == "events":
        return ".".join((parts[0], "events", "{org_id}", *parts[3:]))
    return None


def _destination(subject: str) -> tuple[str, dict[str, Any]]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": subject,
    }
    template = destination_template(subject)
    if template is not None:
        attributes["messaging.destination.template"] = template
    return template or subject, attributes


def start_publish_span(
    tracer: trace.Tracer,
    subject: str,
    *,
    parent: Context | None = None,
    message_id: str | None = None,
    batch_size: int | None = None,
) -> Span:
    """A started PRODUCER span for one message (``message_id``) or a batch (``batch_size``)
    sent to ``subject``, child of ``parent`` (default: the current context). End it with
    :func:`end_publish_span`; it is not made current."""
    label, attributes = _destination(subject)
    attributes["messaging.operation.type"] = "send"
    attributes["messaging.operation.name"] = "publish"
    if message_id is not None:
        attributes["messaging.message.id"] = message_id
    if batch_size is not None:
        attributes["messaging.batch.message_count"] = batch_size
    return tracer.start_span(
        f"publish {label}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
    )


def carry(span: Span, headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with the publish span's context in place of the trace context they had.

    A span that is not recorded (this process exports nothing, or the trace is not sampled)
    leaves the headers as they were, so the trace they carried continues downstream."""
    carried = dict(headers)
    if not span.is_recording():
        return carried
    for key in _TRACE_HEADERS:
        carried.pop(key, None)
    return inject_trace_headers(carried, context=trace.set_span_in_context(span))


def end_publish_span(
    span: Span, ok: bool, error: str | None = None, *, duplicate: bool = False
) -> None:
    """End a publish span, failed (``error.type``, scrubbed reason) when JetStream did not
    confirm the message; ``duplicate``: JetStream dropped it as a repeat of its message id."""
    if duplicate and span.is_recording():
        span.set_attribute("connector.publish.duplicate", True)
    if not ok and span.is_recording():
        span.set_attribute("error.type", "publish_failed")
        span.set_status(Status(StatusCode.ERROR, redact_text(error or "not published")[:300]))
    span.end()


def process_attributes(
    subject: str,
    headers: Mapping[str, str],
    *,
    consumer_group: str,
    attempt: int,
    body_size: int,
) -> tuple[str, dict[str, Any]]:
    """The name and attributes of the CONSUMER span that handles one delivered message."""
    label, attributes = _destination(subject)
    attributes["messaging.operation.type"] = "process"
    attributes["messaging.operation.name"] = "process"
    attributes["messaging.consumer.group.name"] = consumer_group
    attributes["messaging.message.body.size"] = body_size
    # Not a semantic-convention name (none is generic yet): JetStream's delivery count.
    attributes["messaging.message.delivery_attempt"] = attempt
    message_id = headers.get(MESSAGE_ID_HEADER)
    if message_id:
        attributes["messaging.message.id"] = message_id
    return f"process {label}", attributes
