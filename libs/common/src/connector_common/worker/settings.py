"""Settings every pipeline process shares: probes, consumer tuning, refresh and health timing.

``CONNECTOR_PROBE_PORT`` is a top-level variable (the Kubernetes manifests set it);
``CONNECTOR_WORKER__*`` tunes the JetStream consumer of the token refresher and the health checker;
``CONNECTOR_PIPELINE__*`` is the timing the scheduler and the workers must agree on.
"""

from __future__ import annotations

import os
import socket
from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator

from connector_common.messaging import WORK_DUPLICATE_WINDOW
from connector_common.settings import CommonSettings


class ConsumerSettings(BaseModel):
    """How a worker takes messages from its durable pull consumer."""

    # Messages in work at once per replica. Refreshes are cheap to hold (a lease, an HTTP call in
    # flight) and their database work is grouped, so more in work means bigger, cheaper batches.
    concurrency: int = Field(default=64, ge=1, le=500)
    fetch_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # A message a dead replica held comes back this long after its last sign of life (work in
    # progress sends in-progress acks every third of it).
    ack_wait_seconds: float = Field(default=10.0, ge=3)
    max_deliver: int = Field(default=10, ge=2, le=100)  # then the message is dead-lettered
    max_ack_pending: int = Field(default=1000, ge=1)
    handler_timeout_seconds: float = Field(default=150.0, gt=0)
    graceful_timeout_seconds: float = Field(default=25.0, gt=0)  # below the 30 s SIGTERM grace
    retry_base_seconds: float = Field(default=5.0, gt=0)  # nak delay after the 1st failure
    retry_max_seconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("retry_max_seconds must be at least retry_base_seconds")
        return self


DEFAULT_REFRESH_LEASE_SECONDS = 10.0

# Production defaults; development (`connector dev`, sandbox tokens living 120 s) uses DEV_TIMING
# for every value that is not set explicitly.
DEV_TIMING = {
    "refresh_lead_seconds": 90.0,  # sandbox tokens live 120 s: a refresh every ~30 s
    "health_interval_seconds": 120.0,
    "health_jitter_seconds": 15.0,
    "scheduler_tick_seconds": 5.0,
    "requeue_seconds": 90.0,
}


class PipelineSettings(BaseModel):
    """Timing the scheduler, the token refresher and the health checker agree on."""

    refresh_lead_seconds: float = Field(default=600.0, gt=0)  # refresh this long before expiry
    health_interval_seconds: float = Field(default=900.0, gt=0)
    health_jitter_seconds: float = Field(default=90.0, ge=0)  # next check = interval ± jitter
    scheduler_tick_seconds: float = Field(default=30.0, gt=0)
    # A requested account is requested again only after this long without the work being done.
    requeue_seconds: float = Field(default=300.0, gt=0)
    scheduler_batch_size: int = Field(default=500, ge=1, le=10_000)
    scheduler_max_per_tick: int = Field(default=20_000, ge=1)
    scheduler_lease_seconds: float = Field(default=0.0, ge=0)  # 0: three ticks
    # A refresh lease lasts this long unless renewed (it is, every third of it, while the eBay
    # call runs): a dead replica's leases are free again within it. 0: the default, 10 s.
    refresh_lease_seconds: float = Field(default=0.0, ge=0)
    permanent_failure_retry_seconds: float = Field(default=3600.0, gt=0)
    health_attempts: int = Field(default=3, ge=1)  # deliveries before a failure is "unhealthy"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # Two requests with one Nats-Msg-Id inside the WORK stream's de-duplication window
        # collapse: repeated checks and re-published work must come further apart than that.
        if self.health_interval_seconds - self.health_jitter_seconds <= (WORK_DUPLICATE_WINDOW):
            raise ValueError(
                "health_interval_seconds minus health_jitter_seconds must exceed the WORK "
                f"stream's {WORK_DUPLICATE_WINDOW:.0f} s de-duplication window"
            )
        if self.requeue_seconds <= WORK_DUPLICATE_WINDOW:
            raise ValueError(
                "requeue_seconds must exceed the WORK stream's "
                f"{WORK_DUPLICATE_WINDOW:.0f} s de-duplication window"
            )
        return self

    @property
    def scheduler_lease(self) -> float:
        """How long the scheduler's leadership lasts without renewal."""
        return self.scheduler_lease_seconds or 3 * self.scheduler_tick_seconds


def default_instance_id(service: str) -> str:
    """Who holds a lease: host (pod) name and pid, unique among live replicas."""
    return f"{service}:{socket.gethostname()}:{os.getpid()}"


class WorkerSettings(CommonSettings):
    """Base settings of the scheduler, the token refresher and the health checker."""

    probe_port: int = Field(default=8080, ge=0, le=65535)  # CONNECTOR_PROBE_PORT; 0 = any free
    probe_host: str = "0.0.0.0"  # noqa: S104 - kubelet probes reach the pod IP
    instance_id: str = ""  # lease holder name; default host:pid
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"  # CONNECTOR_EVENT_LOOP
    worker: ConsumerSettings = ConsumerSettings()
    pipeline: PipelineSettings = PipelineSettings()

    @model_validator(mode="before")
    @classmethod
    def _development_timing(cls, data: object) -> object:
        # Only values nobody set explicitly take the development timing.
        if not isinstance(data, dict):
            return data
        env = str(data.get("env", "")).lower()
        if env != "development":
            return data
        pipeline = data.get("pipeline") or {}
        if isinstance(pipeline, BaseModel):
            pipeline = pipeline.model_dump(exclude_unset=True)
        if isinstance(pipeline, dict):
            data = {**data, "pipeline": {**DEV_TIMING, **pipeline}}
        # A developer's machine: probes on loopback unless asked otherwise.
        return {"probe_host": "127.0.0.1", **data}

    def refresh_lease_seconds(self) -> float:
        """How long a refresh lease lasts without renewal (it is renewed while the call runs)."""
        return self.pipeline.refresh_lease_seconds or DEFAULT_REFRESH_LEASE_SECONDS
