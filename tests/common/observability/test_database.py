"""Every statement is a span under the one that ran it, with its text and never its parameters;
the pool's connections in use are a gauge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.db.engine import create_engine
from connector_common.observability.database import instrument_engine, operation_name
from connector_common.settings import DatabaseSettings, OtelSettings
from connector_common.telemetry import Telemetry, setup_telemetry

CANARY = "v^1.1#i^1#canary-refresh-token-value"


@pytest.fixture
async def traced(
    database_url: str,
) -> AsyncIterator[tuple[AsyncEngine, Telemetry, InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    telemetry = setup_telemetry(
        OtelSettings(),
        "db-tests",
        span_processors=[SimpleSpanProcessor(spans)],
        metric_readers=[reader],
        set_global=False,
    )
    engine = create_engine(
        DatabaseSettings(url=SecretStr(database_url), pool_size=3), application_name="tests"
    )
    instrument_engine(engine, telemetry.tracer_provider, telemetry.meter_provider, "db-tests")
    yield engine, telemetry, spans, reader
    await engine.dispose()
    telemetry.shutdown()


def gauge(reader: InMemoryMetricReader, name: str) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    values = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        key = str((point.attributes or {}).get("db.client.connection.state"))
                        values[key] = getattr(point, "value", None)
    return values


async def test_statements_are_child_spans_with_their_text_and_without_their_parameters(
    traced: tuple[AsyncEngine, Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    engine, telemetry, spans, reader = traced
    tracer = telemetry.tracer("tests")
    with tracer.start_as_current_span("refresh process") as parent:
        async with engine.connect() as connection:
            result = await connection.execute(text("SELECT length(:token) AS n"), {"token": CANARY})
            assert result.scalar_one() == len(CANARY)
            assert gauge(reader, "db.client.connection.count")["used"] == 1
    assert gauge(reader, "db.client.connection.count")["used"] == 0
    assert set(gauge(reader, "db.client.connection.max").values()) == {3 + 10}
    statements = [s for s in spans.get_finished_spans() if s.name.startswith("SELECT")]
    query = next(s for s in statements if "length" in str((s.attributes or {})["db.query.text"]))
    attributes = dict(query.attributes or {})
    assert attributes["db.query.text"] == "SELECT length(%(token)s) AS n"
    assert attributes["db.system.name"] == "postgresql"
    assert attributes["db.operation.name"] == "SELECT"
    assert query.parent is not None
    assert query.parent.span_id == parent.get_span_context().span_id
    everything = repr([(s.name, dict(s.attributes or {}), s.events) for s in statements])
    assert "canary" not in everything
    durations = reader.get_metrics_data()
    assert durations is not None
    names = {
        m.name for r in durations.resource_metrics for sc in r.scope_metrics for m in sc.metrics
    }
    assert "db.client.operation.duration" in names


async def test_a_failed_statement_is_an_error_span_whose_message_is_scrubbed(
    traced: tuple[AsyncEngine, Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    engine, _telemetry, spans, _reader = traced
    with pytest.raises(DataError):
        async with engine.connect() as connection:
            # PostgreSQL quotes the bad value in its message.
            await connection.execute(text("SELECT CAST(:token AS integer)"), {"token": CANARY})
    failed = [s for s in spans.get_finished_spans() if "CAST" in str(s.attributes)]
    assert len(failed) == 1
    assert failed[0].status.description is not None
    assert "invalid input syntax" in failed[0].status.description
    assert "canary" not in failed[0].status.description
    assert dict(failed[0].attributes or {})["error.type"] == "InvalidTextRepresentation"


def test_the_operation_is_the_first_keyword() -> None:
    assert operation_name("  select 1") == "SELECT"
    assert operation_name("(SELECT 1) UNION (SELECT 2)") == "SELECT"
    assert operation_name("") == "SQL"


async def test_statements_run_untraced_are_timed_but_make_no_span(
    traced: tuple[AsyncEngine, Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    from connector_common.telemetry import untraced

    engine, _telemetry, spans, reader = traced
    with untraced():
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 'a relay poll'"))
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 'a traced statement'"))
    texts = [str((s.attributes or {}).get("db.query.text")) for s in spans.get_finished_spans()]
    assert "SELECT 'a traced statement'" in texts
    assert not [t for t in texts if "relay poll" in t]
    data = reader.get_metrics_data()
    assert data is not None
    counts = [
        int(getattr(point, "count", 0))
        for r in data.resource_metrics
        for sc in r.scope_metrics
        for m in sc.metrics
        if m.name == "db.client.operation.duration"
        for point in m.data.data_points
        if (point.attributes or {}).get("db.operation.name") == "SELECT"
    ]
    assert sum(counts) >= 2  # both timed
