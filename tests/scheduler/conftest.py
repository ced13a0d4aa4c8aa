"""Shared pieces for the scheduler tests: a scheduler bound to this test's database and NATS."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from nats.js import JetStreamContext
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common.db.engine import SessionFactory, create_session_factory
from connector_common.messaging import Topology
from connector_common.worker.settings import PipelineSettings
from connector_scheduler.service import Scheduler, SchedulerInstruments

MakeScheduler = Callable[..., Scheduler]


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return create_session_factory(engine)


@pytest.fixture
def make_scheduler(
    sessions: SessionFactory, js: JetStreamContext, topology: Topology
) -> MakeScheduler:
    def make(holder: str = "scheduler-a", **timing: float) -> Scheduler:
        settings = PipelineSettings(
            **{
                "refresh_lead_seconds": 600.0,
                "health_interval_seconds": 900.0,
                "health_jitter_seconds": 60.0,
                "scheduler_tick_seconds": 5.0,
                "requeue_seconds": 300.0,
                **timing,
            }
        )
        return Scheduler(
            sessions=sessions,
            js=js,
            namespace=topology.namespace,
            holder=holder,
            settings=settings,
            tracer=TracerProvider().get_tracer("tests"),
            instruments=SchedulerInstruments.create(MeterProvider().get_meter("tests")),
        )

    return make


async def work_messages(
    js: JetStreamContext, topology: Topology, kind: str
) -> list[dict[str, object]]:
    """Every message in the WORK stream on ``{ns}.work.{kind}``, oldest first (not consumed)."""
    import json

    from nats.js.errors import NotFoundError

    info = await js.stream_info(topology.work_stream)
    found: list[dict[str, object]] = []
    for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
        try:
            msg = await js.get_msg(topology.work_stream, seq)
        except NotFoundError:
            continue
        if msg.subject == f"{topology.namespace}.work.{kind}":
            found.append({**json.loads(msg.data or b"{}"), "_headers": dict(msg.headers or {})})
    return found
