"""One trace from the scheduler tick through the worker to the eBay call, and the pipeline's
metrics, captured with OpenTelemetry's in-memory exporters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.crypto import TokenCipher
from connector_common.ebay import EbayClient
from connector_common.messaging import Topology
from connector_common.settings import EbaySettings, OtelSettings, parse_key_ring
from connector_common.telemetry import Telemetry, setup_telemetry
from connector_common.worker.components import ConsumerComponent
from connector_common.worker.settings import PipelineSettings
from connector_scheduler.service import Scheduler, SchedulerInstruments
from connector_token_refresher.main import SPEC
from tests.fixtures.pipeline import (
    connect_seller,
    eventually,
    make_org_row,
    token_row,
    worker_context,
)
from tests.fixtures.sandbox import SandboxHandle


@pytest.fixture
def captured() -> Iterator[tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    metrics = InMemoryMetricReader()
    telemetry = setup_telemetry(
        OtelSettings(),
        "pipeline-tests",
        span_processors=[SimpleSpanProcessor(spans)],
        metric_readers=[metrics],
        set_global=False,
    )
    yield telemetry, spans, metrics
    telemetry.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        found.append((dict(point.attributes or {}), value))
    return found


def span_named(spans: list[ReadableSpan], prefix: str) -> ReadableSpan:
    return next(s for s in spans if s.name.startswith(prefix))


async def test_one_trace_runs_from_the_scheduler_tick_through_the_refresher_to_ebay(
    captured: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader],
    engine: AsyncEngine,
    nats_client: NatsClient,
    js: JetStreamContext,
    topology: Topology,
    token_keys: str,
    ebay_settings: EbaySettings,
    ebay_client: EbayClient,
    sandbox: SandboxHandle,
) -> None:
    telemetry, spans, metrics = captured
    sandbox.settings(access_token_lifetime=300)
    async with worker_context(
        engine=engine,
        nats_client=nats_client,
        js=js,
        topology=topology,
        token_keys=token_keys,
        ebay=ebay_settings,
        telemetry=telemetry,
    ) as context:
        org = await make_org_row(context.sessions)
        cipher = TokenCipher(parse_key_ring(token_keys))
        account_id = await connect_seller(
            context.sessions, cipher, ebay_client, sandbox, "demo_motors_seller", org=org
        )
        scheduler = Scheduler(
            sessions=context.sessions,
            js=js,
            namespace=topology.namespace,
            holder="scheduler-test",
            settings=PipelineSettings(refresh_lead_seconds=600),
            tracer=telemetry.tracer("scheduler"),
            instruments=SchedulerInstruments.create(telemetry.meter("scheduler")),
        )
        component = ConsumerComponent(context, SPEC)
        await component.start()
        try:
            report = await scheduler.tick()
            assert report.published == 1

            async def refreshed() -> bool:
                return (await token_row(context.sessions, account_id)).version == 2

            await eventually(refreshed, what="the refresh")
        finally:
            await component.stop()
    finished = list(spans.get_finished_spans())
    tick = span_named(finished, "scheduler tick")
    publish = span_named(finished, f"publish {topology.refresh_subject}")
    work = span_named(finished, f"process {topology.refresh_subject}")
    ebay = span_named(finished, "ebay.oauth")
    assert work.context is not None
    assert tick.context is not None
    assert publish.context is not None
    assert ebay.context is not None
    assert work.context.trace_id == tick.context.trace_id == ebay.context.trace_id
    # tick -> one PRODUCER span for the batch -> the worker's CONSUMER span, its child.
    assert publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None
    assert publish.parent.span_id == tick.context.span_id
    assert publish.attributes is not None
    assert publish.attributes["messaging.batch.message_count"] == 1
    assert publish.attributes["messaging.operation.type"] == "send"
    assert work.kind is SpanKind.CONSUMER
    assert work.parent is not None
    assert work.parent.span_id == publish.context.span_id
    assert work.attributes is not None
    assert work.attributes["messaging.operation.type"] == "process"
    assert work.attributes["messaging.consumer.group.name"] == topology.refresher_durable
    assert work.attributes["messaging.destination.name"] == topology.refresh_subject
    assert str(work.attributes["messaging.message.id"]).startswith("refresh:")
    assert ebay.parent is not None
    assert ebay.parent.span_id == work.context.span_id
    assert ebay.attributes is not None
    assert ebay.attributes["ebay.account_key"] == str(account_id)

    refreshes = points(metrics, "connector.token.refreshes")
    assert ({"outcome": "refreshed", "error_kind": ""}, 1) in refreshes
    lag = points(metrics, "connector.work.lag")
    assert {attrs["kind"] for attrs, _v in lag} == {"refresh", "health"}
    assert points(metrics, "ebay.calls")
