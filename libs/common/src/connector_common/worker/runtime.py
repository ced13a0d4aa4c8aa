"""The life of a pipeline process: start-up, probes, outbox relay, SIGTERM, orderly shutdown.

A service supplies a :class:`Component` (its consumer or its tick loop); :func:`run_worker` opens
what every pipeline process shares (database engine, NATS connection, streams, telemetry, the
outbox relay, the probe server), starts the component, waits for SIGTERM/SIGINT and then stops in
the order that loses nothing: readiness goes red, the component stops taking work and finishes
or hands back what it holds, the relay publishes the last committed events, NATS drains, the
database pool closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_common import provisioning
from connector_common.budget.recorder import CallRecorder
from connector_common.db.engine import SessionFactory, create_engine, create_session_factory
from connector_common.logs import configure_logging, get_logger
from connector_common.messaging import Topology, connect_until_stopped
from connector_common.observability.database import instrument_engine
from connector_common.outbox import OutboxRelay
from connector_common.redaction import redact_text, register_settings_secrets
from connector_common.settings import DatabaseSettings
from connector_common.telemetry import Telemetry, setup_telemetry
from connector_common.worker.deadletter import DeadLetters
from connector_common.worker.probes import NotReady, ProbeServer, Progress
from connector_common.worker.settings import WorkerSettings, default_instance_id

log = get_logger(__name__)
# At shutdown the outbox relay gets this long to stop, then this long to publish what the last
# handlers committed (the Kubernetes grace periods account for both).
RELAY_FLUSH_SECONDS = 10.0


@dataclass
class WorkerContext:
    """What a pipeline component gets from the runtime."""

    settings: WorkerSettings
    service: str
    instance_id: str
    topology: Topology
    engine: AsyncEngine
    sessions: SessionFactory
    nc: NatsClient
    js: JetStreamContext
    telemetry: Telemetry
    relay: OutboxRelay
    progress: Progress
    dead_letters: DeadLetters
    stop: asyncio.Event
    calls: CallRecorder | None = None  # counts eBay calls for the daily budget


class Component(Protocol):
    """A service's loop: started once, stopped gracefully once."""

    async def start(self) -> None: ...

    async def stop(self) -> int:
        """Finish or hand back the work in hand; returns how many items had to be abandoned
        (handed back unfinished) because the grace period ran out."""
        ...


# The exit status of a process whose SIGTERM grace period ran out with work still in hand.
EXIT_ABANDONED = 3


def register_secrets(settings: WorkerSettings) -> None:
    """Teach the log redaction the secrets this process knows."""
    register_settings_secrets(settings)


def pool_for(settings: WorkerSettings) -> DatabaseSettings:
    """Database settings whose pool holds a connection for every message in work.

    Overflow connections are closed when given back, so a pool smaller than the concurrency
    would open and close connections all the time (measured: most of a refresher's CPU).
    """
    database = settings.database
    needed = settings.worker.concurrency + 5  # handlers, outbox relay, breaker, probes
    if database.pool_size >= needed:
        return database
    return database.model_copy(update={"pool_size": needed})


def run_until_complete(main: Coroutine[Any, Any, int], event_loop: str = "uvloop") -> int:
    """``asyncio.run`` on uvloop (libuv's event loop: less CPU per I/O event) unless asked
    otherwise or unavailable."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if event_loop == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def run_worker(
    settings: WorkerSettings,
    service: str,
    build: Callable[[WorkerContext], Component],
    *,
    stall_after: float,
    handler_timeout: float,
    stop: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
) -> int:
    """Run one pipeline process until SIGTERM (or ``stop``); returns the exit code."""
    configure_logging(settings.log_level, settings.log_format, service)
    register_secrets(settings)
    stop = stop or asyncio.Event()
    if install_signal_handlers:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    telemetry = setup_telemetry(settings.otel, service, environment=settings.env.value)
    engine = create_engine(pool_for(settings), application_name=service)
    instrument_engine(engine, telemetry.tracer_provider, telemetry.meter_provider, service)
    progress = Progress(stall_after=stall_after, handler_timeout=handler_timeout)
    poll_seconds = min(1.0, stall_after / 3)
    nc: NatsClient | None = None
    topology = Topology(settings.nats.namespace)
    binding = Binding()

    async def database_ready() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def nats_ready() -> None:
        if nc is None or not nc.is_connected:
            raise ConnectionError("NATS is not connected")
        await binding.check(nc.jetstream(timeout=2), topology, service)

    # Probes first: while NATS is still down at start-up the process is alive (waiting for a
    # dependency), just not ready; without them Kubernetes would restart it in a loop.
    probes = ProbeServer(
        progress,
        {"database": database_ready, "nats": nats_ready},
        host=settings.probe_host,
        port=settings.probe_port,
        metrics=telemetry.metrics_text if telemetry.prometheus is not None else None,
    )
    await probes.start()
    try:
        nc = await connect_until_stopped(
            settings.nats, service, stop, on_wait=progress.cycle, poll_seconds=poll_seconds
        )
        if nc is None:
            log.info("stopped before NATS could be reached", service=service)
            return 0
        if not await _bind(nc.jetstream(), topology, service, settings, stop, progress, binding):
            log.info("stopped before the JetStream streams could be bound", service=service)
            return 0
        return await _serve(settings, service, build, engine, nc, telemetry, stop, progress, probes)
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.drain()
        await probes.stop()
        await engine.dispose()
        telemetry.shutdown()
        log.info("stopped", service=service)


class Binding:
    """Whether the streams and consumers this process needs exist; readiness says what is not.

    Provisioning (`connector nats provision`) declares them; a service only binds, so its NATS
    user needs no stream or consumer administration rights.
    """

    def __init__(self) -> None:
        self.missing: str | None = "not bound to the JetStream streams yet"

    async def check(self, js: JetStreamContext, topology: Topology, service: str) -> None:
        """Look again (raises :class:`NotReady` naming what is missing)."""
        self.missing = await provisioning.missing(js, topology, service)
        if self.missing is not None:
            raise NotReady(self.missing)


async def _bind(
    js: JetStreamContext,
    topology: Topology,
    service: str,
    settings: WorkerSettings,
    stop: asyncio.Event,
    progress: Progress,
    binding: Binding,
) -> bool:
    """Wait until the streams and this service's consumers exist; False when stopped first.

    Never declares them. While something is missing (not provisioned yet, or JetStream not
    answering: a cluster electing its meta leader), the process stays alive and not ready,
    and says so in its log every little while; a crash loop would back off for minutes.
    """
    poll_seconds = min(1.0, progress.stall_after / 3)
    delay = 1.0
    said: str | None = None
    while True:
        try:
            await binding.check(js, topology, service)
        except NotReady as exc:
            reason = str(exc)
        except Exception as exc:
            reason = "JetStream did not answer: " + redact_text(f"{type(exc).__name__}: {exc}")
            binding.missing = reason[:200]
        else:
            for difference in await provisioning.drift(js, topology, service, settings.worker):
                log.warning("consumer provisioned with other settings", difference=difference)
            return True
        if reason != said:  # once per distinct reason, not every second
            log.warning("waiting for JetStream; not ready", reason=reason[:200], retry_in_s=delay)
            said = reason
        deadline = asyncio.get_running_loop().time() + delay
        while asyncio.get_running_loop().time() < deadline:
            if stop.is_set():
                return False
            progress.cycle()  # waiting for a dependency is progress, not a hang
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_seconds)
        delay = min(delay * 2, 10.0)


async def _serve(
    settings: WorkerSettings,
    service: str,
    build: Callable[[WorkerContext], Component],
    engine: AsyncEngine,
    nc: NatsClient,
    telemetry: Telemetry,
    stop: asyncio.Event,
    progress: Progress,
    probes: ProbeServer,
) -> int:
    topology = Topology(settings.nats.namespace)
    js = nc.jetstream()
    sessions = create_session_factory(engine)
    relay = OutboxRelay(sessions, js, tracer=telemetry.tracer("connector_common.outbox"))
    context = WorkerContext(
        settings=settings,
        service=service,
        instance_id=settings.instance_id or default_instance_id(service),
        topology=topology,
        engine=engine,
        sessions=sessions,
        nc=nc,
        js=js,
        telemetry=telemetry,
        relay=relay,
        progress=progress,
        dead_letters=DeadLetters(js, topology, tracer=telemetry.tracer("connector_common.worker")),
        stop=stop,
        calls=CallRecorder(sessions, flush_seconds=settings.ebay.budget.flush_seconds),
    )
    relay_stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(relay_stop), name="outbox-relay")
    calls_task = asyncio.create_task(_count_calls(context, relay_stop), name="ebay-call-counts")
    component = build(context)
    try:
        await component.start()
        log.info("started", service=service, instance_id=context.instance_id)
        await stop.wait()
        log.info("stopping: finishing the work in hand", service=service)
        probes.stopping = True
        abandoned = await component.stop()
        if abandoned:
            log.error(
                "shutdown grace period ran out; messages abandoned to redelivery",
                service=service,
                abandoned=abandoned,
                grace_seconds=settings.worker.graceful_timeout_seconds,
            )
            return EXIT_ABANDONED
        return 0
    finally:
        relay_stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(calls_task, 10)  # the component's last calls are counted
        with contextlib.suppress(Exception):
            await asyncio.wait_for(relay_task, RELAY_FLUSH_SECONDS)
        with contextlib.suppress(Exception):
            # Events committed by the last handlers go out before the connection drains.
            await asyncio.wait_for(relay.publish_pending(), RELAY_FLUSH_SECONDS)


async def _count_calls(context: WorkerContext, stop: asyncio.Event) -> None:
    """Add this process's eBay call counts to PostgreSQL until stopped, then a last time."""
    if context.calls is None:
        return
    await context.calls.run(stop)
    await context.calls.close()
