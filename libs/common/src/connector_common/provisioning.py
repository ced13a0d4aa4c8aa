"""What the connector needs in NATS JetStream, declared by one idempotent step.

``connector nats provision`` (a Kubernetes Job run with the NATS admin user), ``connector dev``
and the test fixtures create, or bring up to date, the three streams and the workers' durable
pull consumers. The services never declare anything: they bind to what exists and, while
something is missing, stay alive but not ready, naming it (:func:`missing`). So the services'
NATS users need no right to create, change or delete streams and consumers.

The consumers are declared with the ``CONNECTOR_WORKER__*`` tuning the workers read (their
AckWait, deliveries, ack-pending), so provisioning and workers share one configuration; the
workers' pull loop (connector_common.worker.consumer) only binds to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError

from connector_common.messaging import Topology
from connector_common.settings import EnvSettings, NatsSettings
from connector_common.worker.settings import ConsumerSettings

# Fields we set; anything else the server fills in (defaults) is not compared.
_STREAM_FIELDS = (
    "subjects",
    "retention",
    "storage",
    "num_replicas",
    "duplicate_window",
    "max_age",
    "max_msg_size",
    "discard",
    "description",
)
_CONSUMER_FIELDS = (
    "durable_name",
    "filter_subject",
    "ack_policy",
    "deliver_policy",
    "ack_wait",
    "max_deliver",
    "max_ack_pending",
    "description",
)


class ProvisionSettings(EnvSettings):
    """What `connector nats provision` reads: NATS (admin user) and the workers' consumer tuning
    (``CONNECTOR_WORKER__*``, the same variables the workers read)."""

    nats: NatsSettings = NatsSettings()
    worker: ConsumerSettings = ConsumerSettings()


@dataclass(frozen=True)
class WorkConsumer:
    """One worker kind's durable pull consumer on the WORK stream."""

    service: str  # the Deployment that binds to it
    kind: str  # "refresh" | "health"
    stream: str
    durable: str
    subject: str


def work_consumers(topology: Topology) -> list[WorkConsumer]:
    """The durable consumers of the token refresher and the health checker."""
    return [
        WorkConsumer(
            "token-refresher",
            "refresh",
            topology.work_stream,
            topology.refresher_durable,
            topology.refresh_subject,
        ),
        WorkConsumer(
            "health-checker",
            "health",
            topology.work_stream,
            topology.health_durable,
            topology.health_subject,
        ),
    ]


def consumers_of(topology: Topology, service: str) -> list[WorkConsumer]:
    """The consumers ``service`` binds to (none for the scheduler and the API)."""
    return [c for c in work_consumers(topology) if c.service == service]


def consumer_config(consumer: WorkConsumer, settings: ConsumerSettings) -> ConsumerConfig:
    """The durable pull consumer every replica of a worker kind shares."""
    return ConsumerConfig(
        name=consumer.durable,
        durable_name=consumer.durable,
        filter_subject=consumer.subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_seconds,
        max_deliver=settings.max_deliver,
        max_ack_pending=settings.max_ack_pending,
        description=f"{consumer.kind} work, shared by every replica",
    )


@dataclass(frozen=True)
class Change:
    """What provisioning did to one stream or consumer."""

    what: Literal["stream", "consumer"]
    name: str
    action: Literal["created", "updated", "unchanged"]
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.what} {self.name}: {self.action}" + (
            f" ({self.detail})" if self.detail else ""
        )


def _differences(current: Any, wanted: Any, fields: tuple[str, ...]) -> list[str]:
    return [f for f in fields if getattr(wanted, f) != getattr(current, f)]


async def provision(
    js: JetStreamContext,
    topology: Topology,
    *,
    replicas: int = 1,
    consumer_settings: ConsumerSettings | None = None,
) -> list[Change]:
    """Create the streams and consumers, or bring them up to date; idempotent."""
    settings = consumer_settings or ConsumerSettings()
    changes = [await _stream(js, config) for config in topology.stream_configs(replicas)]
    for consumer in work_consumers(topology):
        changes.append(await _consumer(js, consumer, consumer_config(consumer, settings)))
    return changes


async def _stream(js: JetStreamContext, wanted: StreamConfig) -> Change:
    assert wanted.name is not None
    replicas = f"R{wanted.num_replicas}"
    try:
        info = await js.stream_info(wanted.name)
    except NotFoundError:
        await js.add_stream(wanted)
        return Change("stream", wanted.name, "created", replicas)
    changed = _differences(info.config, wanted, _STREAM_FIELDS)
    if not changed:
        return Change("stream", wanted.name, "unchanged", replicas)
    await js.update_stream(wanted)
    return Change("stream", wanted.name, "updated", f"{replicas}; {', '.join(changed)}")


async def _consumer(js: JetStreamContext, consumer: WorkConsumer, wanted: ConsumerConfig) -> Change:
    try:
        info = await js.consumer_info(consumer.stream, consumer.durable)
    except NotFoundError:
        await js.add_consumer(consumer.stream, wanted)
        return Change("consumer", consumer.durable, "created", f"on {consumer.stream}")
    changed = _differences(info.config, wanted, _CONSUMER_FIELDS)
    if not changed:
        return Change("consumer", consumer.durable, "unchanged", f"on {consumer.stream}")
    await js.add_consumer(consumer.stream, wanted)  # create-or-update of the same durable
    return Change("consumer", consumer.durable, "updated", ", ".join(changed))


async def missing(js: JetStreamContext, topology: Topology, service: str) -> str | None:
    """What ``service`` needs and does not find (None: everything is there), in words an
    operator can act on. Raises when JetStream does not answer."""
    needed = [topology.work_stream, topology.events_stream, topology.dlq_stream]
    for stream in needed:
        try:
            await js.stream_info(stream)
        except NotFoundError:
            return f"stream {stream} does not exist: run `connector nats provision`"
    for consumer in consumers_of(topology, service):
        try:
            await js.consumer_info(consumer.stream, consumer.durable)
        except NotFoundError:
            return (
                f"consumer {consumer.durable} on stream {consumer.stream} does not exist: "
                "run `connector nats provision`"
            )
    return None


async def drift(
    js: JetStreamContext, topology: Topology, service: str, settings: ConsumerSettings
) -> list[str]:
    """Where this service's consumers differ from its own CONNECTOR_WORKER__* settings
    (provisioned with other values): worth a warning, the server's values apply."""
    found = []
    for consumer in consumers_of(topology, service):
        info = await js.consumer_info(consumer.stream, consumer.durable)
        wanted = consumer_config(consumer, settings)
        for field in _differences(info.config, wanted, ("ack_wait", "max_deliver")):
            found.append(
                f"{consumer.durable}.{field} is {getattr(info.config, field)} on the server, "
                f"{getattr(wanted, field)} in this service's settings"
            )
    return found
