"""Database spans and pool gauges for one SQLAlchemy engine.

Every statement is a CLIENT span (``SELECT connector``) child of the span that ran it, with the
statement text as SQLAlchemy sent it: placeholders (``%(account_id)s``), never the parameters,
which can be ciphertexts, house names or ids. ``db.client.operation.duration`` times them and
``db.client.connection.count`` (``state`` used / idle) with ``db.client.connection.max`` show the
pool, named by OpenTelemetry's database semantic conventions.

Why a small event hook rather than opentelemetry-instrumentation-sqlalchemy: its latest release
(0.66b1) pins opentelemetry-semantic-conventions 0.66b1 while our SDK (1.45.2) needs 0.66b2, so
it would force an SDK downgrade; and its entry point is a process-wide singleton that patches
``create_engine`` and binds the first tracer provider, where we build telemetry per process
object (and tests build many per interpreter). SQLAlchemy's own cursor events give the same spans
in a page of code, with the current semantic-convention names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from connector_common.redaction import redact_text
from connector_common.telemetry import tracing_suppressed

SCOPE = "connector_common.db"
MAX_QUERY_TEXT = 2000  # a multi-row INSERT renders one placeholder group per row
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SPAN = "_connector_span"
_STARTED = "_connector_started"


def operation_name(statement: str) -> str:
    """The statement's first keyword (``SELECT``, ``UPDATE``, ``WITH`` ...), upper case."""
    for word in statement.lstrip("( \n\t").split(None, 1)[:1]:
        return word.upper()[:20]
    return "SQL"


@dataclass
class DatabaseInstrumentation:
    """The listeners on one engine; :meth:`remove` takes them off (tests)."""

    engine: Engine
    tracer: trace.Tracer
    duration: metrics.Histogram
    attributes: dict[str, Any]

    def before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        context = args[1] if len(args) > 1 else None
        if context is None:
            return
        setattr(context, _STARTED, time.perf_counter())
        if tracing_suppressed():
            return  # timed, not traced (connector_common.telemetry.untraced)
        operation = operation_name(statement)
        span = self.tracer.start_span(
            f"{operation} {self.attributes.get('db.namespace', 'postgresql')}",
            kind=SpanKind.CLIENT,
        )
        if span.is_recording():
            span.set_attributes(self.attributes)
            span.set_attribute("db.operation.name", operation)
            span.set_attribute("db.query.text", statement[:MAX_QUERY_TEXT])
        setattr(context, _SPAN, span)

    def after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        context = args[1] if len(args) > 1 else None
        self._finish(context, statement, error=None)

    def failed(self, exception_context: Any) -> None:
        error = exception_context.original_exception
        self._finish(
            exception_context.execution_context, exception_context.statement or "", error=error
        )

    def _finish(self, context: Any, statement: str, error: BaseException | None) -> None:
        started = getattr(context, _STARTED, None)
        if started is None:
            return
        span = getattr(context, _SPAN, None)
        setattr(context, _STARTED, None)
        setattr(context, _SPAN, None)
        elapsed = time.perf_counter() - started
        labels = {
            "db.system.name": "postgresql",
            "db.operation.name": operation_name(statement),
        }
        if error is not None:
            labels["error.type"] = type(error).__name__
        if span is not None:
            if error is not None:
                span.set_attribute("error.type", type(error).__name__)
                # A driver's message may quote a value (a duplicate key): scrubbed, and short.
                span.set_status(Status(StatusCode.ERROR, redact_text(str(error))[:300]))
            span.end()
        self.duration.record(elapsed, labels)

    def remove(self) -> None:
        for name, listener in self._listeners():
            if event.contains(self.engine, name, listener):
                event.remove(self.engine, name, listener)

    def _listeners(self) -> Iterable[tuple[str, Any]]:
        return (
            ("before_cursor_execute", self.before),
            ("after_cursor_execute", self.after),
            ("handle_error", self.failed),
        )


def instrument_engine(
    engine: AsyncEngine,
    tracer_provider: trace.TracerProvider,
    meter_provider: metrics.MeterProvider,
    pool_name: str,
) -> DatabaseInstrumentation:
    """Trace every statement of ``engine`` and gauge its pool as ``pool_name`` (the service)."""
    sync = engine.sync_engine
    url = sync.url
    attributes: dict[str, Any] = {"db.system.name": "postgresql"}
    if url.database:
        attributes["db.namespace"] = url.database
    if url.host:
        attributes["server.address"] = url.host
    if url.port:
        attributes["server.port"] = url.port
    meter = meter_provider.get_meter(SCOPE)
    instrumentation = DatabaseInstrumentation(
        engine=sync,
        tracer=tracer_provider.get_tracer(SCOPE),
        duration=meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of database statements",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        ),
        attributes=attributes,
    )
    for name, listener in instrumentation._listeners():
        event.listen(sync, name, listener)
    pool = sync.pool

    def connections(options: CallbackOptions) -> Iterable[Observation]:
        if not isinstance(pool, QueuePool):
            return ()
        name, state = "db.client.connection.pool.name", "db.client.connection.state"
        return (
            Observation(pool.checkedout(), {name: pool_name, state: "used"}),
            Observation(pool.checkedin(), {name: pool_name, state: "idle"}),
        )

    def maximum(options: CallbackOptions) -> Iterable[Observation]:
        if not isinstance(pool, QueuePool):
            return ()
        most = pool.size() + max(getattr(pool, "_max_overflow", 0), 0)
        return (Observation(most, {"db.client.connection.pool.name": pool_name}),)

    meter.create_observable_gauge(
        "db.client.connection.count",
        [connections],
        unit="{connection}",
        description="Connections of the pool by state (used: checked out by a transaction)",
    )
    meter.create_observable_gauge(
        "db.client.connection.max",
        [maximum],
        unit="{connection}",
        description="The most connections the pool may open",
    )
    return instrumentation
