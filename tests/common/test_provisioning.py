"""Provisioning declares the streams and consumers once; the services only bind to them."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import trace

from connector_cli.main import main
from connector_common.messaging import Topology
from connector_common.provisioning import consumer_config, missing, provision, work_consumers
from connector_common.worker.consumer import Delivery, Settle, WorkConsumer
from connector_common.worker.deadletter import DeadLetters
from connector_common.worker.probes import Progress
from connector_common.worker.settings import ConsumerSettings


@pytest.fixture
async def clean(nats_client: NatsClient, topology: Topology) -> AsyncIterator[JetStreamContext]:
    """JetStream with nothing of this test's namespace; removed again afterwards."""
    js = nats_client.jetstream()
    yield js
    for config in topology.stream_configs():
        assert config.name is not None
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(config.name)


async def test_provisioning_creates_everything_once_then_changes_nothing(
    clean: JetStreamContext, topology: Topology
) -> None:
    first = await provision(clean, topology)
    assert [(c.what, c.name, c.action) for c in first] == [
        ("stream", topology.work_stream, "created"),
        ("stream", topology.events_stream, "created"),
        ("stream", topology.dlq_stream, "created"),
        ("consumer", topology.refresher_durable, "created"),
        ("consumer", topology.health_durable, "created"),
    ]
    assert {c.action for c in await provision(clean, topology)} == {"unchanged"}
    changed = await provision(
        clean, topology, consumer_settings=ConsumerSettings(ack_wait_seconds=45, max_deliver=7)
    )
    updated = {c.name: c for c in changed if c.action == "updated"}
    assert set(updated) == {topology.refresher_durable, topology.health_durable}
    assert "ack_wait" in updated[topology.refresher_durable].detail
    info = await clean.consumer_info(topology.work_stream, topology.refresher_durable)
    assert (info.config.ack_wait, info.config.max_deliver) == (45.0, 7)


async def test_missing_names_what_to_run(clean: JetStreamContext, topology: Topology) -> None:
    said = await missing(clean, topology, "token-refresher")
    assert said == f"stream {topology.work_stream} does not exist: run `connector nats provision`"
    for config in topology.stream_configs():
        await clean.add_stream(config)
    said = await missing(clean, topology, "token-refresher")
    assert said is not None
    assert said.startswith(f"consumer {topology.refresher_durable} on stream")
    assert await missing(clean, topology, "scheduler") is None  # it needs no consumer
    await provision(clean, topology)
    assert await missing(clean, topology, "token-refresher") is None


async def test_a_worker_consumes_from_the_provisioned_consumer_and_never_declares_one(
    nats_client: NatsClient, clean: JetStreamContext, namespace: str
) -> None:
    """Workers only bind: the consumer they read is the provisioned one (its settings kept), and
    a worker started where nothing was provisioned creates nothing."""
    settings = ConsumerSettings(concurrency=3, ack_wait_seconds=20, max_deliver=5)
    provisioned = Topology(namespace)
    await provision(clean, provisioned, consumer_settings=settings)
    bare = Topology(f"{namespace}b")
    for config in bare.stream_configs():
        await clean.add_stream(config)
    received: list[bytes] = []

    async def handler(body: bytes, delivery: Delivery) -> Settle:
        received.append(body)
        return Settle.ack()

    def worker(topology: Topology) -> WorkConsumer:
        (consumer, _health) = work_consumers(topology)
        return WorkConsumer(
            nats_client,
            clean,
            kind=consumer.kind,
            stream=consumer.stream,
            subject=consumer.subject,
            durable=consumer.durable,
            settings=settings,
            handler=handler,
            dead_letters=DeadLetters(clean, topology),
            progress=Progress(stall_after=5, handler_timeout=5),
            tracer=trace.get_tracer("tests"),
        )

    bound, unbound = worker(provisioned), worker(bare)
    await bound.start()
    await unbound.start()
    try:
        await clean.publish(provisioned.refresh_subject, b'{"hello": 1}')
        deadline = asyncio.get_running_loop().time() + 10
        while not received:
            assert asyncio.get_running_loop().time() < deadline, "nothing was consumed"
            await asyncio.sleep(0.02)
        assert received == [b'{"hello": 1}']
        refresher = work_consumers(provisioned)[0]
        kept = (await clean.consumer_info(refresher.stream, refresher.durable)).config
        assert kept.ack_wait == consumer_config(refresher, settings).ack_wait == 20
        assert kept.max_deliver == 5
        with pytest.raises(NotFoundError):
            await clean.consumer_info(bare.work_stream, bare.refresher_durable)
    finally:
        await bound.stop(grace=1)
        await unbound.stop(grace=1)
        for topology in (provisioned, bare):
            for config in topology.stream_configs():
                assert config.name is not None
                with contextlib.suppress(NotFoundError):
                    await clean.delete_stream(config.name)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _provision_cli(nats_url: str, namespace: str, *args: str) -> Ran:
    """`connector nats provision` in this process, with only these CONNECTOR_* variables."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for variable in list(os.environ):
            if variable.startswith("CONNECTOR_"):
                patch.delenv(variable)
        patch.setenv("CONNECTOR_NATS__URL", nats_url)
        patch.setenv("CONNECTOR_NATS__NAMESPACE", namespace)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["nats", "provision", *args])
            except SystemExit as exited:  # argparse
                code = int(exited.code or 0)
    return Ran(code, out.getvalue(), err.getvalue())


async def test_the_command_says_what_it_did_and_is_idempotent(
    nats_url: str, clean: JetStreamContext, topology: Topology
) -> None:
    first = await asyncio.to_thread(_provision_cli, nats_url, topology.namespace)
    assert first.returncode == 0, first.stderr
    assert f"stream {topology.work_stream}: created (R1)" in first.stdout
    assert f"consumer {topology.health_durable}: created" in first.stdout
    again = await asyncio.to_thread(_provision_cli, nats_url, topology.namespace)
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout
    assert again.stdout.count("unchanged") == 5


async def test_replicas_a_single_server_cannot_hold_are_refused_in_one_line(
    nats_url: str, clean: JetStreamContext, topology: Topology
) -> None:
    result = await asyncio.to_thread(
        _provision_cli, nats_url, topology.namespace, "--replicas", "3"
    )
    assert result.returncode == 1
    assert result.stderr.startswith("connector nats provision: JetStream refused:")
    assert "Traceback" not in result.stderr


def test_an_unreachable_nats_gives_up_at_the_deadline_with_one_line() -> None:
    from connector_devstack.embedded import free_port

    result = _provision_cli(f"nats://127.0.0.1:{free_port()}", "ebay", "--wait", "2")
    assert result.returncode == 1
    assert "did not answer within 2 s" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flags_exit_2() -> None:
    result = _provision_cli("nats://127.0.0.1:1", "ebay", "--replicas", "7")
    assert result.returncode == 2
    assert "--replicas" in result.stderr
