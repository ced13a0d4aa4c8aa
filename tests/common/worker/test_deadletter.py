"""A message that ran out of deliveries unsettled is moved from WORK to the DLQ."""

from __future__ import annotations

import contextlib

from nats.aio.client import Client as NatsClient
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from connector_common.messaging import Topology
from connector_common.worker.deadletter import (
    DELIVERIES_HEADER,
    MAX_PAYLOAD,
    REASON_HEADER,
    TRUNCATED_HEADER,
    DeadLetter,
    DeadLetters,
    MaxDeliveriesWatcher,
)
from tests.fixtures.pipeline import dead_letters, eventually, work_left


async def test_an_exhausted_message_is_dead_lettered_from_its_advisory(
    nats_client: NatsClient, js: JetStreamContext, topology: Topology
) -> None:
    durable = topology.refresher_durable
    await js.add_consumer(
        topology.work_stream,
        ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=1,
            max_deliver=2,
            filter_subject=topology.refresh_subject,
        ),
    )
    watcher = MaxDeliveriesWatcher(
        nats_client,
        js,
        DeadLetters(js, topology),
        kind="refresh",
        stream=topology.work_stream,
        consumer=durable,
    )
    await watcher.start()
    subscription = await js.pull_subscribe_bind(durable, topology.work_stream)
    try:
        await js.publish(
            topology.refresh_subject, b'{"poison": true}', headers={"Nats-Msg-Id": "p-1"}
        )
        for _ in range(2):  # a worker that dies on it twice: never acks
            [msg] = await subscription.fetch(1, timeout=5)
            assert msg.data == b'{"poison": true}'
        # Live workers keep a pull waiting: that is when JetStream notices the limit.
        with contextlib.suppress(NatsTimeoutError):
            await subscription.fetch(1, timeout=3)

        async def moved() -> bool:
            return len(await dead_letters(js, topology)) == 1

        await eventually(moved, timeout=10, what="the dead letter")
        await eventually(lambda: _empty(js, topology), what="WORK emptied")
    finally:
        await subscription.unsubscribe()
        await watcher.stop()
    [(subject, headers, payload)] = await dead_letters(js, topology)
    assert subject == topology.dlq_subject("refresh")
    assert payload == b'{"poison": true}'
    assert headers[REASON_HEADER].startswith("max deliveries (2)")
    assert headers[DELIVERIES_HEADER] == "2"
    assert headers["Connector-Original-Msg-Id"] == "p-1"


async def test_a_dead_letter_too_big_for_nats_is_stored_cut_and_the_connection_stays_up(
    nats_client: NatsClient, js: JetStreamContext, topology: Topology
) -> None:
    # As big as NATS takes: with the dead letter's own headers it would no longer fit.
    payload = b"x" * (nats_client.max_payload - 100)
    letter = DeadLetter(
        kind="refresh",
        subject=topology.refresh_subject,
        payload=payload,
        headers={"Nats-Msg-Id": "huge-1"},
        reason="malformed refresh request: body: invalid JSON",
        deliveries=1,
        stream=topology.work_stream,
        stream_seq=7,
        consumer=topology.refresher_durable,
    )
    await DeadLetters(js, topology).publish(letter)
    assert nats_client.is_connected
    [(_subject, headers, stored)] = await dead_letters(js, topology)
    assert stored == payload[:MAX_PAYLOAD]
    assert headers[TRUNCATED_HEADER] == str(len(payload))


async def _empty(js: JetStreamContext, topology: Topology) -> bool:
    return await work_left(js, topology) == 0


async def test_a_dead_letter_is_published_in_the_failed_messages_trace(
    js: JetStreamContext, topology: Topology
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from connector_common.telemetry import extract_trace_context

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("tests")
    letter = DeadLetter(
        kind="refresh",
        subject=topology.refresh_subject,
        payload=b"not json",
        headers={"Nats-Msg-Id": "bad-1"},
        reason="malformed refresh request: body: invalid JSON",
        deliveries=1,
        stream=topology.work_stream,
        stream_seq=9,
        consumer=topology.refresher_durable,
    )
    with tracer.start_as_current_span("process", kind=trace.SpanKind.CONSUMER) as process:
        await DeadLetters(js, topology, tracer=tracer).publish(letter)
    (publish,) = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.PRODUCER]
    assert publish.name == f"publish {topology.dlq_subject('refresh')}"
    assert publish.parent is not None
    assert publish.parent.span_id == process.get_span_context().span_id
    assert dict(publish.attributes or {})["messaging.message.id"] == f"dlq:{topology.work_stream}:9"
    [(_subject, headers, _payload)] = await dead_letters(js, topology)
    carried = trace.get_current_span(extract_trace_context(headers)).get_span_context()
    assert publish.context is not None
    assert carried.span_id == publish.context.span_id
