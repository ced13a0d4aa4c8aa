"""The event contract, machine-readable: an AsyncAPI 3.1 document of every NATS subject the
connector publishes or consumes, with JSON Schemas generated from the typed models of
:mod:`connector_common.events`.

``docs/asyncapi.yaml`` is this document; ``make asyncapi`` (``python -m connector_common.asyncapi
docs/asyncapi.yaml``) rewrites it, and a test fails when the code and the file drift apart.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from connector_common.events import (
    APP_EVENT_TYPES,
    APP_SUBJECT_PART,
    EVENT_TYPES,
    AppEvent,
    CheckHealth,
    Command,
    Event,
    RefreshToken,
)
from connector_common.messaging import Topology
from connector_common.telemetry import package_version
from connector_common.worker.deadletter import (
    CONSUMER_HEADER,
    DELIVERIES_HEADER,
    MSG_ID_HEADER,
    REASON_HEADER,
    STREAM_SEQ_HEADER,
    SUBJECT_HEADER,
    TRUNCATED_HEADER,
)

NAMESPACE = "{namespace}"
COMMANDS: tuple[type[Command], ...] = (RefreshToken, CheckHealth)
REF = "#/components/schemas/{model}"


def _schema(model: type[Command] | type[Event] | type[AppEvent]) -> dict[str, Any]:
    """The JSON Schema of what is published: every field is always present."""
    schema = model.model_json_schema(mode="serialization", ref_template=REF)
    schema.pop("$defs", None)
    properties: dict[str, Any] = schema["properties"]
    if issubclass(model, Event | AppEvent):
        # The published envelope adds the type (connector_common.events.event_payload).
        properties = {"type": {"type": "string", "const": model.type}, **properties}
        schema["properties"] = properties
    schema["required"] = list(properties)
    return schema


def _trace_headers(*extra: tuple[str, str]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "traceparent": {
            "type": "string",
            "description": "W3C trace context of the request or job that caused the message.",
        },
        "Nats-Msg-Id": {
            "type": "string",
            "description": "JetStream de-duplication id.",
        },
    }
    for name, description in extra:
        properties[name] = {"type": "string", "description": description}
    return {"type": "object", "properties": properties}


def _operation(action: str, channel: str, message: str, summary: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
    }


def _namespace() -> dict[str, Any]:
    return {
        "description": "CONNECTOR_NATS__NAMESPACE (default `ebay`): the first token of every "
        "subject and the prefix of every stream name.",
        "default": "ebay",
    }


def _channel_id(event_type: str) -> str:
    return "event" + "".join(part.title() for part in event_type.replace(".", "_").split("_"))


def build_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document (a plain mapping, ready for YAML or JSON)."""
    topology = Topology(NAMESPACE)  # subjects with the namespace as a parameter
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    for command in COMMANDS:
        name = command.__name__
        schemas[name] = _schema(command)
        messages[name] = {
            "name": name,
            "title": name,
            "summary": (command.__doc__ or "").strip(),
            "contentType": "application/json",
            "headers": _trace_headers(),
            "payload": {"$ref": REF.format(model=name)},
        }
        channel = f"work{command.kind.title()}"
        channels[channel] = {
            "address": command.subject(NAMESPACE),
            "title": f"{command.kind} work",
            "description": "Stream `<NAMESPACE>-WORK` (`EBAY-WORK`; work queue): one durable "
            "pull consumer per worker. Internal to the connector.",
            "parameters": {"namespace": _namespace()},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"publish{name}"] = _operation(
            "send", channel, name, f"The scheduler (due work) and the API (manual) request {name}."
        )
        operations[f"consume{name}"] = _operation(
            "receive", channel, name, f"The {command.kind} worker does the work."
        )
        dead = f"dlq{command.kind.title()}"
        letter = f"DeadLetter{name}"
        messages[letter] = {
            "name": letter,
            "title": f"Dead {command.kind} work",
            "summary": "The original payload (cut at 64 KiB) and headers, plus why it failed.",
            "contentType": "application/json",
            "headers": _trace_headers(
                (REASON_HEADER, "Why the work could not be done (redacted)."),
                (SUBJECT_HEADER, "The subject the work was published to."),
                (DELIVERIES_HEADER, "How many times it was delivered."),
                (STREAM_SEQ_HEADER, "Its sequence in the work stream."),
                (CONSUMER_HEADER, "The durable consumer that gave up."),
                (MSG_ID_HEADER, "Its original Nats-Msg-Id."),
                (TRUNCATED_HEADER, "The original size, when the payload was cut."),
            ),
            "payload": {"$ref": REF.format(model=name)},
        }
        channels[dead] = {
            "address": topology.dlq_subject(command.kind),
            "title": f"dead {command.kind} work",
            "description": "Stream `<NAMESPACE>-DLQ` (`EBAY-DLQ`; limits, 30 days): work that "
            "failed its bounded deliveries or could not be parsed.",
            "parameters": {"namespace": _namespace()},
            "messages": {letter: {"$ref": f"#/components/messages/{letter}"}},
        }
        operations[f"deadLetter{name}"] = _operation(
            "send", dead, letter, f"A {command.kind} worker gives up on a message."
        )

    for event_type, event in EVENT_TYPES.items():
        name = event.__name__
        schemas[name] = _schema(event)
        messages[name] = {
            "name": name,
            "title": event_type,
            "summary": (event.__doc__ or event_type).strip(),
            "contentType": "application/json",
            "headers": _trace_headers(),
            "payload": {"$ref": REF.format(model=name)},
        }
        channel = _channel_id(event_type)
        channels[channel] = {
            "address": topology.events_subject("{orgId}", event_type),
            "title": event_type,
            "description": "Stream `<NAMESPACE>-EVENTS` (`EBAY-EVENTS`; limits, 7 days). "
            "Subscribe to one org with `ebay.events.<org_id>.>`.",
            "parameters": {
                "namespace": _namespace(),
                "orgId": {"description": "The organisation's id (a UUID), also `org_id`."},
            },
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"publish{name}"] = _operation(
            "send", channel, name, f"The connector announces {event_type} (outbox, at least once)."
        )

    for event_type, app_event in APP_EVENT_TYPES.items():
        name = app_event.__name__
        schemas[name] = _schema(app_event)
        messages[name] = {
            "name": name,
            "title": event_type,
            "summary": (app_event.__doc__ or event_type).strip(),
            "contentType": "application/json",
            "headers": _trace_headers(),
            "payload": {"$ref": REF.format(model=name)},
        }
        channel = _channel_id(event_type)
        channels[channel] = {
            "address": f"{NAMESPACE}.events.{APP_SUBJECT_PART}.{event_type}",
            "title": event_type,
            "description": "Stream `<NAMESPACE>-EVENTS` (`EBAY-EVENTS`; limits, 7 days). About the "
            "whole installation (every org shares one eBay app), for its operators: subscribe "
            f"to `ebay.events.{APP_SUBJECT_PART}.>`.",
            "parameters": {"namespace": _namespace()},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"publish{name}"] = _operation(
            "send", channel, name, f"The connector announces {event_type} (outbox, at least once)."
        )

    schemas["MaxDeliveriesAdvisory"] = {
        "type": "object",
        "description": "JetStream's advisory (the fields the connector reads).",
        "properties": {
            "stream_seq": {"type": "integer", "description": "The exhausted message."},
            "deliveries": {"type": "integer"},
        },
        "required": ["stream_seq"],
    }
    messages["MaxDeliveriesAdvisory"] = {
        "name": "MaxDeliveriesAdvisory",
        "title": "Max deliveries reached",
        "contentType": "application/json",
        "payload": {"$ref": REF.format(model="MaxDeliveriesAdvisory")},
    }
    channels["maxDeliveriesAdvisory"] = {
        "address": "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}",
        "title": "JetStream max-deliveries advisory",
        "description": "Published by JetStream when a work message reaches its consumer's "
        "max_deliver; the worker copies the message to the DLQ and deletes it from the work "
        "stream.",
        "parameters": {
            "stream": {"description": "The work stream, `<NAMESPACE>-WORK`."},
            "consumer": {"description": "The worker's durable consumer."},
        },
        "messages": {
            "MaxDeliveriesAdvisory": {"$ref": "#/components/messages/MaxDeliveriesAdvisory"}
        },
    }
    operations["consumeMaxDeliveriesAdvisory"] = _operation(
        "receive",
        "maxDeliveriesAdvisory",
        "MaxDeliveriesAdvisory",
        "Every worker replica, in one queue group per consumer.",
    )
    return {
        "asyncapi": "3.1.0",
        "info": {
            "title": "eBay connector events",
            "version": package_version(),
            "description": "Every NATS JetStream subject the connector publishes or consumes. "
            "Generated from connector_common.events by `make asyncapi`; docs/events.md explains "
            "delivery and ordering. Every message is JSON, never carries a token, and has an id "
            "to de-duplicate on.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    """The document as YAML, as ``docs/asyncapi.yaml`` holds it."""
    import yaml  # a development tool: PyYAML comes with the dev dependencies

    header = "# Generated by `make asyncapi` from connector_common.events: do not edit.\n"
    return header + yaml.safe_dump(build_document(), sort_keys=False, width=100)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m connector_common.asyncapi [PATH]``: write the document (stdout without PATH)."""
    args = list(sys.argv[1:] if argv is None else argv)
    text = render()
    if not args:
        sys.stdout.write(text)
        return 0
    with open(args[0], "w", encoding="utf-8") as handle:
        handle.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
