"""The health-work subscriber: parse, call the service, say how the message is settled."""

from __future__ import annotations

from pydantic import ValidationError

from connector_common.ebay import EbayClient
from connector_common.events import CheckHealth
from connector_common.tokens.store import TokenStore
from connector_common.worker.consumer import Delivery, Handler, Settle, describe
from connector_common.worker.runtime import WorkerContext
from connector_common.worker.summary import BatchSummary
from connector_health_checker.service import (
    CheckOutcome,
    CheckResult,
    HealthChecker,
    HealthTiming,
)


def settle(result: CheckResult) -> Settle:
    """Ack every verdict and skip; nak when eBay could not be asked; dead-letter the unknown."""
    if result.outcome is CheckOutcome.UNKNOWN_ACCOUNT:
        return Settle.dead_letter(f"unknown account {result.account_id}")
    if result.outcome is CheckOutcome.RETRY:
        return Settle.nak(result.retry_in or 0.0, result.reason or "eBay unreachable")
    return Settle.ack()


def make_handler(
    context: WorkerContext, client: EbayClient, store: TokenStore, summary: BatchSummary
) -> Handler:
    """The handler bound to this process's checker."""
    settings = context.settings
    checker = HealthChecker(
        sessions=context.sessions,
        client=client,
        store=store,
        namespace=context.topology.namespace,
        timing=HealthTiming(
            interval_seconds=settings.pipeline.health_interval_seconds,
            jitter_seconds=settings.pipeline.health_jitter_seconds,
            attempts=min(settings.pipeline.health_attempts, settings.worker.max_deliver),
            retry_base_seconds=settings.worker.retry_base_seconds,
            retry_max_seconds=settings.worker.retry_max_seconds,
            token_wait_seconds=settings.refresh_lease_seconds(),
        ),
        meter=context.telemetry.meter(context.service),
        on_commit=context.relay.wake,
    )

    async def handle(body: bytes, delivery: Delivery) -> Settle:
        try:
            command = CheckHealth.model_validate_json(body)
        except ValidationError as exc:
            summary.add("malformed")
            return Settle.dead_letter(f"malformed health request: {describe(exc)}")
        result = await checker.check(command, delivery.attempt)
        summary.add(result.outcome.value)
        return settle(result)

    return handle
