"""The work consumer's loop, as liveness sees it, on real JetStream."""

from __future__ import annotations

import asyncio
import time

import nats
from nats.js import JetStreamContext
from opentelemetry.sdk.trace import TracerProvider

from connector_common.messaging import Topology
from connector_common.provisioning import provision
from connector_common.worker.consumer import Delivery, Settle, WorkConsumer
from connector_common.worker.deadletter import DeadLetters
from connector_common.worker.probes import Progress
from connector_common.worker.settings import ConsumerSettings


async def ack(body: bytes, delivery: Delivery) -> Settle:
    return Settle.ack()


async def test_a_consumer_whose_nats_connection_closed_for_good_stops_looking_alive(
    nats_url: str, js: JetStreamContext, topology: Topology
) -> None:
    settings = ConsumerSettings(fetch_timeout_seconds=0.2)
    progress = Progress(stall_after=0.6, handler_timeout=5)
    nc = await nats.connect(nats_url)
    await provision(js, topology, consumer_settings=settings)  # the workers only bind
    consumer = WorkConsumer(
        nc,
        nc.jetstream(),
        kind="refresh",
        stream=topology.work_stream,
        subject=topology.refresh_subject,
        durable=topology.refresher_durable,
        settings=settings,
        handler=ack,
        dead_letters=DeadLetters(js, topology),
        progress=progress,
        tracer=TracerProvider().get_tracer("tests"),
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 10
        while progress.cycles < 3:  # empty pulls: alive
            assert time.monotonic() < deadline, "the loop never cycled"
            await asyncio.sleep(0.05)
        assert progress.alive()[0]
        # nats-py closes a connection for good on a server -ERR (an expired or revoked user,
        # say) and never reconnects: from then on nothing answers the loop.
        await nc.close()
        cycles = progress.cycles
        deadline = time.monotonic() + 5
        while progress.alive()[0]:
            assert time.monotonic() < deadline, "a dead consumer still looks alive"
            await asyncio.sleep(0.05)
        assert progress.cycles == cycles
    finally:
        await consumer.stop(grace=1)


async def test_messages_still_in_work_when_the_grace_period_ends_are_handed_back(
    nats_url: str, js: JetStreamContext, topology: Topology
) -> None:
    settings = ConsumerSettings(fetch_timeout_seconds=0.5)
    progress = Progress(stall_after=5, handler_timeout=60)
    nc = await nats.connect(nats_url)
    started = asyncio.Event()

    async def endless(body: bytes, delivery: Delivery) -> Settle:
        started.set()
        await asyncio.sleep(60)
        return Settle.ack()

    await provision(js, topology, consumer_settings=settings)  # the workers only bind
    consumer = WorkConsumer(
        nc,
        nc.jetstream(),
        kind="refresh",
        stream=topology.work_stream,
        subject=topology.refresh_subject,
        durable=topology.refresher_durable,
        settings=settings,
        handler=endless,
        dead_letters=DeadLetters(js, topology),
        progress=progress,
        tracer=TracerProvider().get_tracer("tests"),
    )
    for n in range(3):
        await js.publish(topology.refresh_subject, b"{}", headers={"Nats-Msg-Id": f"m{n}"})
    await consumer.start()
    try:
        deadline = time.monotonic() + 10
        while consumer.in_work < 3:
            assert time.monotonic() < deadline, "the messages never reached the handler"
            await asyncio.sleep(0.02)
        stopping = time.monotonic()
        assert await consumer.stop(grace=0.3) == 3
        assert time.monotonic() - stopping < 2
    finally:
        await nc.close()
    # Naked, not left to time out: another replica gets them at once, not after AckWait (10 s).
    replica = await js.pull_subscribe_bind(topology.refresher_durable, topology.work_stream)
    asking = time.monotonic()
    again = await replica.fetch(3, timeout=5)
    assert len(again) == 3
    assert time.monotonic() - asking < 2
