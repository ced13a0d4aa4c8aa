"""The consuming half of a worker: eBay client, token store, the pull consumer, dead letters.

The token refresher and the health checker differ only in their subject, their durable consumer
and their handler; :class:`ConsumerComponent` is everything else, and
:func:`run_consumer_service` is their ``main``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from connector_common.crypto import TokenCipher
from connector_common.ebay import CircuitBreaker, EbayClient, PostgresBreakerStore
from connector_common.logs import get_logger
from connector_common.settings import load_settings
from connector_common.tokens.store import StoreTiming, TokenStore
from connector_common.worker.consumer import Handler, WorkConsumer
from connector_common.worker.deadletter import MaxDeliveriesWatcher
from connector_common.worker.runtime import WorkerContext, run_until_complete, run_worker
from connector_common.worker.settings import WorkerSettings
from connector_common.worker.summary import BatchSummary

log = get_logger(__name__)


Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class ConsumerSpec:
    """What makes one worker kind."""

    service: str  # "token-refresher"
    kind: str  # "refresh" | "health": the work subject's last token, and the DLQ's
    summary: tuple[str, str, str]  # BatchSummary(event, done outcome, verb)
    make_handler: Callable[[WorkerContext, EbayClient, TokenStore, BatchSummary], Handler]
    # Work beside the consumer, run until the worker stops (the health checker reads eBay's
    # limits with it): given the context and the client, returns ``run(stop)``.
    background: Callable[[WorkerContext, EbayClient], Background] | None = None


def build_ebay_client(context: WorkerContext) -> EbayClient:
    """The eBay client with the per-account breaker shared through PostgreSQL."""
    settings = context.settings.ebay
    return EbayClient(
        settings,
        breaker=CircuitBreaker.from_settings(settings, PostgresBreakerStore(context.sessions)),
        tracer_provider=context.telemetry.tracer_provider,
        meter_provider=context.telemetry.meter_provider,
        on_call=context.calls.record if context.calls is not None else None,
        # A worker never sleeps on a Retry-After: the message comes back exactly that much later
        # and the handler takes the next one meanwhile.
        rate_limit_wait=0.0,
    )


def build_token_store(context: WorkerContext, client: EbayClient) -> TokenStore:
    """The token store every refresh goes through (refresher and health checker alike)."""
    settings = context.settings
    return TokenStore(
        context.sessions,
        TokenCipher(settings.key_ring()),
        client,
        owner=context.instance_id,
        namespace=context.topology.namespace,
        timing=StoreTiming(
            lease_seconds=settings.refresh_lease_seconds(),
            refresh_lead_seconds=settings.pipeline.refresh_lead_seconds,
            retry_base_seconds=settings.worker.retry_base_seconds,
            retry_max_seconds=settings.worker.retry_max_seconds,
            permanent_retry_seconds=settings.pipeline.permanent_failure_retry_seconds,
        ),
        default_scopes=settings.ebay.scopes,
        meter=context.telemetry.meter(context.service),
        on_commit=context.relay.wake,
    )


class ConsumerComponent:
    """Consumes one kind of work until stopped; stopping finishes or hands back what it holds."""

    def __init__(self, context: WorkerContext, spec: ConsumerSpec) -> None:
        self.context = context
        self._context = context
        self._spec = spec
        self._client: EbayClient | None = None
        self._store: TokenStore | None = None
        self._consumer: WorkConsumer | None = None
        self._watcher: MaxDeliveriesWatcher | None = None
        self._halt = asyncio.Event()
        self._background: asyncio.Task[None] | None = None

    async def start(self) -> None:
        context, spec = self._context, self._spec
        settings = context.settings
        topology = context.topology
        durable = topology.refresher_durable if spec.kind == "refresh" else topology.health_durable
        subject = topology.refresh_subject if spec.kind == "refresh" else topology.health_subject
        self._client = build_ebay_client(context)
        store = self._store = build_token_store(context, self._client)
        summary = BatchSummary(*spec.summary)
        self._consumer = WorkConsumer(
            context.nc,
            context.js,
            kind=spec.kind,
            stream=topology.work_stream,
            subject=subject,
            durable=durable,
            settings=settings.worker,
            handler=spec.make_handler(context, self._client, store, summary),
            dead_letters=context.dead_letters,
            progress=context.progress,
            tracer=context.telemetry.tracer(spec.service),
            on_idle=summary.flush,
        )
        await self._consumer.start()
        self._watcher = MaxDeliveriesWatcher(
            context.nc,
            context.js,
            context.dead_letters,
            kind=spec.kind,
            stream=topology.work_stream,
            consumer=durable,
        )
        await self._watcher.start()
        if spec.background is not None:
            run = spec.background(context, self._client)
            self._background = asyncio.create_task(run(self._halt), name=f"{spec.service}-bg")

    async def stop(self) -> int:
        """Stop taking work and finish what is in work (graceful timeout); returns how many
        messages were abandoned to redelivery because the grace period ran out."""
        abandoned = 0
        self._halt.set()
        if self._consumer is not None:
            abandoned = await self._consumer.stop()
        if self._background is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._background, 10)
        if self._store is not None:
            await self._store.close()
        if self._watcher is not None:
            await self._watcher.stop()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
        return abandoned


def run_consumer_service(
    argv: Sequence[str] | None,
    spec: ConsumerSpec,
    settings_cls: type[WorkerSettings],
    description: str,
) -> int:
    """``main`` of a consuming worker: flags, settings, then :func:`run_worker` until SIGTERM."""
    parser = argparse.ArgumentParser(prog=f"connector {spec.service}", description=description)
    parser.add_argument("--probe-port", type=int, help="probe port (CONNECTOR_PROBE_PORT)")
    parser.add_argument(
        "--concurrency", type=int, help="messages in work at once (CONNECTOR_WORKER__CONCURRENCY)"
    )
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {}
    if args.probe_port is not None:
        overrides["probe_port"] = args.probe_port
    if args.concurrency is not None:
        overrides["worker"] = {"concurrency": args.concurrency}
    settings = load_settings(settings_cls, **overrides)
    worker = settings.worker
    return run_until_complete(
        run_worker(
            settings,
            spec.service,
            lambda context: ConsumerComponent(context, spec),
            stall_after=3 * worker.fetch_timeout_seconds,
            handler_timeout=worker.handler_timeout_seconds,
        ),
        settings.event_loop,
    )
