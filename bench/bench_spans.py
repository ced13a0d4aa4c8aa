"""The cost of a span: what one exported PRODUCER span adds, and the outbox relay with them.

Two parts, the same run:

* **one span**: 5,000 ``publish`` spans as the outbox relay makes them (parent extracted from
  stored headers, context injected into the message's), CPU per span when the span is recorded
  and processed by nothing, by a batch processor, and by the production pipeline (the scrubbing
  processor before the batch processor), each exporting to an exporter that drops everything;
* **the relay**: :class:`connector_common.outbox.OutboxRelay` publishing 4,000 outbox rows with
  stored trace context (200 per batch) to embedded NATS JetStream from embedded PostgreSQL, with
  a tracer that samples nothing (the baseline: what a process that exports nothing has) and with
  the production pipeline; CPU of this process per message and messages per second.

    make bench-spans
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from pydantic import SecretStr
from sqlalchemy import text

from bench.report import machine, rewrite_section, table
from connector_common import migrate
from connector_common.db.engine import create_engine, create_session_factory
from connector_common.logs import configure_logging
from connector_common.messaging import Topology, connect
from connector_common.observability.messaging import carry, end_publish_span, start_publish_span
from connector_common.outbox import OutboxRelay
from connector_common.provisioning import provision
from connector_common.settings import DatabaseSettings, NatsSettings
from connector_common.telemetry import (
    ScrubbingSpanProcessor,
    extract_trace_context,
    inject_trace_headers,
)
from connector_devstack.embedded import EmbeddedNats, EmbeddedPostgres

SUBJECT = "ebay.events.{org}.token.refreshed"


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def provider(kind: str) -> TracerProvider:
    """``off`` (samples nothing), ``recorded`` (no processor), ``batch``, ``exported``."""
    made = TracerProvider(sampler=ALWAYS_OFF) if kind == "off" else TracerProvider()
    if kind == "batch":
        made.add_span_processor(BatchSpanProcessor(_Discard()))
    elif kind == "exported":
        made.add_span_processor(ScrubbingSpanProcessor(BatchSpanProcessor(_Discard())))
    return made


def stored_headers() -> dict[str, str]:
    """Headers as the outbox stores them: a message id and the writer's trace context."""
    with TracerProvider().get_tracer("writer").start_as_current_span("request"):
        return inject_trace_headers({"Nats-Msg-Id": str(uuid.uuid4())})


def one_span_us(kind: str, count: int) -> float:
    """CPU microseconds per publish span."""
    made = provider(kind)
    tracer = made.get_tracer("bench")
    headers = stored_headers()
    subject = SUBJECT.format(org=uuid.uuid4())
    started = time.process_time()
    for _ in range(count):
        span = start_publish_span(
            tracer,
            subject,
            parent=extract_trace_context(headers),
            message_id=headers["Nats-Msg-Id"],
        )
        carry(span, headers)
        end_publish_span(span, True)
    made.force_flush()
    spent = time.process_time() - started
    made.shutdown()
    return spent * 1e6 / count


async def relay_run(
    engine: Any, sessions: Any, js: Any, kind: str, rows: int
) -> tuple[float, float]:
    """(CPU µs per message, messages per second) relaying ``rows`` rows."""
    values = []
    for _ in range(rows):
        headers = stored_headers()
        values.append(
            {
                "id": uuid.uuid4(),
                "subject": SUBJECT.format(org=uuid.uuid4()),
                "payload": "{}",
                "headers": json.dumps(headers),
            }
        )
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox (id, subject, payload, headers) "
                "VALUES (:id, :subject, :payload, CAST(:headers AS jsonb))"
            ),
            values,
        )
    made = provider(kind)
    relay = OutboxRelay(sessions, js, batch_size=200, tracer=made.get_tracer("relay"))
    cpu, wall, done = time.process_time(), time.perf_counter(), 0
    while done < rows:
        done += await relay.publish_pending()
    made.force_flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    made.shutdown()
    return cpu * 1e6 / rows, rows / wall


async def relay(postgres: EmbeddedPostgres, nats: EmbeddedNats, rows: int, repeats: int) -> Any:
    engine = create_engine(DatabaseSettings(url=SecretStr(postgres.url), pool_size=5), "bench")
    client = await connect(NatsSettings(url=nats.url), "bench")
    js = client.jetstream()
    await provision(js, Topology("ebay"))
    sessions = create_session_factory(engine)
    runs: dict[str, list[tuple[float, float]]] = {"off": [], "exported": []}
    try:
        await relay_run(engine, sessions, js, "off", rows // 4)  # warm-up
        for _ in range(repeats):
            for kind in runs:  # interleaved: both see the same load
                runs[kind].append(await relay_run(engine, sessions, js, kind, rows))
    finally:
        await client.drain()
        await engine.dispose()
    return {
        kind: {
            "cpu_us_per_message": round(statistics.median(r[0] for r in found), 1),
            "per_s": round(statistics.median(r[1] for r in found)),
        }
        for kind, found in runs.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-doc", dest="doc", action="store_false")
    args = parser.parse_args(argv)
    configure_logging("WARNING", "console")
    one_span_us("exported", 500)  # warm-up
    spans = {
        kind: round(statistics.median(one_span_us(kind, args.spans) for _ in range(3)), 1)
        for kind in ("off", "recorded", "batch", "exported")
    }
    print(json.dumps({"span_cpu_us": spans}), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-spans-") as tmp:
        root = Path(tmp)
        postgres = EmbeddedPostgres(root / "pg", log_path=root / "pg.log")
        nats = EmbeddedNats(root / "nats", log_path=root / "nats.log")
        postgres.start()
        nats.start()
        try:
            migrate.upgrade(postgres.url)
            relayed = asyncio.run(relay(postgres, nats, args.rows, args.repeats))
        finally:
            nats.stop()
            postgres.stop()
    result = {"span_cpu_us": spans, "relay": relayed, "baseline": "relay off", **machine()}
    if args.doc:
        span_rows = [(kind, f"{us}") for kind, us in spans.items()]
        relay_rows = [
            (kind, f"{v['cpu_us_per_message']}", f"{v['per_s']:,}") for kind, v in relayed.items()
        ]
        rewrite_section(
            "spans",
            f"**Last run ({result['date']})**, {result['cpus']} CPUs, load average "
            f"{result['load_average']}.\n\n"
            + table(span_rows, ("one publish span", "CPU (µs, median of 3)"))
            + "\n\n"
            + table(relay_rows, ("outbox relay, spans", "CPU per message (µs)", "messages/s"))
            + "\n\n```sh\nmake bench-spans\n```",
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
