"""P2: how long a scheduler tick takes, by table size and by how many accounts are due.

Embedded PostgreSQL (fsync on) and NATS JetStream; accounts and token rows made with SQL
``generate_series`` (the scheduler reads no ciphertext), statistics fresh. The real
:class:`connector_scheduler.service.Scheduler` runs its tick in this process: leadership, the
backlog measures, the claim batches (500), one work message per due account published to
JetStream (acks awaited), the rows marked requested. Each measured tick starts from the same
state: every due row unrequested, the WORK stream empty, token versions bumped (new
de-duplication ids).

Reported: tick milliseconds with 100 due at each table size (flat in the table size), and with
``--due`` due at the largest size, with the work messages published per second (due / tick).

    make bench-scheduler ARGS="--sizes 10000 100000 1000000 --due 10000"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.cpu import cpu_by_role
from bench.report import machine, rewrite_section, table
from connector_common import migrate
from connector_common.db.engine import create_engine, create_session_factory
from connector_common.logs import configure_logging
from connector_common.messaging import Topology, connect
from connector_common.provisioning import provision
from connector_common.settings import DatabaseSettings, NatsSettings
from connector_common.telemetry import ScrubbingSpanProcessor
from connector_common.worker.settings import PipelineSettings
from connector_devstack.embedded import EmbeddedNats, EmbeddedPostgres
from connector_scheduler.service import Scheduler, SchedulerInstruments

LEAD = 600.0


async def grow(engine: AsyncEngine, org: Any, start: int, stop: int) -> None:
    """Accounts ``start+1 .. stop`` with tokens expiring in 2-3 hours (none due)."""
    for low in range(start, stop, 100_000):
        await _grow(engine, org, low, min(stop, low + 100_000))
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE ebay_accounts"))
        await autocommit.execute(text("VACUUM ANALYZE ebay_tokens"))


async def _grow(engine: AsyncEngine, org: Any, start: int, stop: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                INSERT INTO ebay_accounts (id, org_id, house_name, ebay_user_id, marketplace_id,
                                           site_id, site_code, connected_at)
                SELECT gen_random_uuid(), :org, 'house-' || g, 'user-' || g, 'EBAY_US', 0, 'US',
                       now()
                  FROM generate_series(CAST(:start AS int) + 1, :stop) AS g
                """
            ),
            {"org": org, "start": start, "stop": stop},
        )
        await conn.execute(
            text(
                """
                INSERT INTO ebay_tokens (account_id, key_id, access_expires_at)
                SELECT a.id, 'k', now() + interval '2 hours' + random() * interval '1 hour'
                  FROM ebay_accounts a LEFT JOIN ebay_tokens t ON t.account_id = a.id
                 WHERE t.account_id IS NULL
                """
            )
        )


async def make_due(engine: AsyncEngine, due: int) -> None:
    """Exactly ``due`` tokens due (in a minute), nothing requested, new versions."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE ebay_tokens SET refresh_requested_at = NULL, version = version + 1, "
                "access_expires_at = now() + interval '2 hours' + random() * interval '1 hour' "
                "WHERE access_expires_at < now() + interval '1 hour' "
                "OR refresh_requested_at IS NOT NULL"
            )
        )
        await conn.execute(
            text(
                "UPDATE ebay_tokens SET access_expires_at = now() + interval '1 minute' "
                "+ random() * interval '1 minute' WHERE account_id IN "
                "(SELECT account_id FROM ebay_tokens ORDER BY random() LIMIT :due)"
            ),
            {"due": due},
        )
        await conn.execute(text("DELETE FROM leases"))
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE ebay_tokens"))


class _Discard(SpanExporter):
    """An exporter that drops what it gets: the cost of recording and scrubbing, no network."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def tracer_provider(exported: bool) -> TracerProvider:
    """Spans recorded (no processor), or also passed through the production pipeline
    (scrubbing, batch processor) to an exporter that drops them (``--traced``)."""
    provider = TracerProvider()
    if exported:
        provider.add_span_processor(ScrubbingSpanProcessor(BatchSpanProcessor(_Discard())))
    return provider


async def measure(
    engine: AsyncEngine, nats_url: str, due: int, repeats: int, traced: bool = False
) -> dict[str, Any]:
    """Tick milliseconds (median of ``repeats``) with ``due`` accounts due."""
    client = await connect(NatsSettings(url=nats_url), "bench")
    js = client.jetstream()
    topology = Topology("ebay")
    scheduler = Scheduler(
        sessions=create_session_factory(engine),
        js=js,
        namespace="ebay",
        holder="bench",
        settings=PipelineSettings(refresh_lead_seconds=LEAD, scheduler_max_per_tick=1_000_000),
        tracer=tracer_provider(traced).get_tracer("bench"),
        instruments=SchedulerInstruments.create(MeterProvider().get_meter("bench")),
    )
    ticks: list[float] = []
    cpu: list[float] = []
    parts: list[dict[str, float]] = []
    try:
        for _ in range(repeats + 1):  # the first warms the connections and caches
            await make_due(engine, due)
            await js.purge_stream(topology.work_stream)
            others = cpu_by_role()
            own = time.process_time()
            started = time.perf_counter()
            report = await scheduler.tick()
            ticks.append((time.perf_counter() - started) * 1000)
            after = cpu_by_role()
            part = {
                "scheduler": time.process_time() - own,
                **{r: after[r] - others[r] for r in ("postgres", "nats-server")},
            }
            parts.append(part)
            cpu.append(sum(part.values()))
            if report.published != due or report.failed:
                raise SystemExit(f"tick published {report.published}/{due}: {report}")
    finally:
        await client.drain()
    median = statistics.median(ticks[1:])
    return {
        "tick_ms": round(median, 1),
        "per_s": round(due / (median / 1000), 0),
        "cpu_ms": round(statistics.median(cpu[1:]) * 1000, 1),  # scheduler + PostgreSQL + NATS
        "cpu_us_per_message": {
            k: round(statistics.median(p[k] for p in parts[1:]) * 1e6 / due, 1) for k in parts[0]
        },
    }


async def run(
    args: argparse.Namespace, postgres: EmbeddedPostgres, nats: EmbeddedNats
) -> dict[str, Any]:
    engine = create_engine(
        DatabaseSettings(url=SecretStr(postgres.url), pool_size=10, statement_timeout_ms=600_000),
        "bench",
    )
    client = await connect(NatsSettings(url=nats.url), "bench")
    await provision(client.jetstream(), Topology("ebay"))
    await client.drain()
    async with engine.begin() as conn:
        org = (
            await conn.execute(
                text(
                    "INSERT INTO organisations (id, external_id, name) "
                    "VALUES (gen_random_uuid(), 'bench', 'bench') RETURNING id"
                )
            )
        ).scalar_one()
    flat: dict[int, dict[str, Any]] = {}
    size = 0
    try:
        for target in sorted(args.sizes):
            seeding = time.monotonic()
            await grow(engine, org, size, target)
            size = target
            print(f"{size:,} accounts in {time.monotonic() - seeding:.0f}s", flush=True)
            flat[size] = await measure(engine, nats.url, 100, args.repeats, args.traced)
            print(json.dumps({"accounts": size, "due": 100, **flat[size]}), flush=True)
        many = await measure(engine, nats.url, args.due, args.repeats, args.traced)
        print(json.dumps({"accounts": size, "due": args.due, **many}), flush=True)
    finally:
        await engine.dispose()
    return {
        "tick_ms_100_due": {str(k): v["tick_ms"] for k, v in flat.items()},
        "accounts": size,
        "due": args.due,
        "tick_ms": many["tick_ms"],
        "published_per_s": many["per_s"],
        "tick_cpu_ms": many["cpu_ms"],
        "cpu_us_per_message": many["cpu_us_per_message"],
        "tick_cpu_ms_100_due": {str(k): v["cpu_ms"] for k, v in flat.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-doc", dest="doc", action="store_false")
    parser.add_argument(
        "--traced", action="store_true", help="spans scrubbed and batch-exported (dropped)"
    )
    args = parser.parse_args(argv)
    configure_logging("WARNING", "console")  # the numbers only
    with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as tmp:
        root = Path(tmp)
        postgres = EmbeddedPostgres(root / "pg", log_path=root / "pg.log")
        nats = EmbeddedNats(root / "nats", log_path=root / "nats.log")
        postgres.start()
        nats.start()
        try:
            migrate.upgrade(postgres.url)
            result = asyncio.run(run(args, postgres, nats))
        finally:
            nats.stop()
            postgres.stop()
    result.update(machine())
    if args.doc:
        cpu = result["tick_cpu_ms_100_due"]
        rows = [
            (f"{int(k):,}", "100", f"{v}", f"{cpu[k]}")
            for k, v in result["tick_ms_100_due"].items()
        ]
        rows.append(
            (
                f"{result['accounts']:,}",
                f"{result['due']:,}",
                f"**{result['tick_ms']}**",
                f"{result['tick_cpu_ms']}",
            )
        )
        rewrite_section(
            "scheduler",
            f"**Last run ({result['date']})**, {result['cpus']} CPUs, load average before the "
            f"run {result['load_average']}: with {result['due']:,} due among "
            f"{result['accounts']:,} accounts a tick publishes "
            f"**{result['published_per_s']:,.0f} work messages/s**.\n\n"
            + table(rows, ("accounts", "due", "tick (ms, median)", "CPU (ms, all processes)"))
            + "\n\n```sh\nmake bench-scheduler\n```",
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
