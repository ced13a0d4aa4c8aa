"""The streams as declared (what JetStream accepts on them) and the NATS connection's logging."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import APIError

from connector_common.logs import configure_logging
from connector_common.messaging import (
    WORK_MAX_MESSAGE_BYTES,
    BulkPublisher,
    Topology,
    _ConnectionLog,
)


async def test_the_work_stream_refuses_an_oversized_message_when_it_is_published(
    js: JetStreamContext, topology: Topology
) -> None:
    with pytest.raises(APIError):
        await js.publish(topology.refresh_subject, b"x" * (WORK_MAX_MESSAGE_BYTES + 1))
    await js.publish(topology.refresh_subject, b'{"ids": "only"}')
    assert (await js.stream_info(topology.work_stream)).state.messages == 1


async def test_repeated_connection_errors_log_one_line_without_traceback() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", service="tests", stream=stream)
    events = _ConnectionLog("worker")
    for _ in range(5):  # nats-py calls back on every reconnect attempt, once a second
        await events.error(ConnectionRefusedError("connect call failed ('127.0.0.1', 4222)"))
    await events.error(TimeoutError("nats: timeout"))
    await events.disconnected()
    await events.reconnected()
    await events.error(ConnectionRefusedError("after a reconnect, a new outage is news"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    problems = [line for line in lines if line["event"] == "nats connection problem"]
    assert [p["error"].split(":")[0] for p in problems] == [
        "ConnectionRefusedError",
        "TimeoutError",
        "ConnectionRefusedError",
    ]
    assert {line["event"] for line in lines} >= {
        "nats disconnected; reconnecting",
        "nats reconnected",
    }
    assert "Traceback" not in stream.getvalue()


async def test_bulk_publishes_are_acknowledged_one_by_one_and_repeats_collapse(
    nats_client: NatsClient, js: JetStreamContext, topology: Topology
) -> None:
    publisher = BulkPublisher(nats_client)
    results = await publisher.publish(
        [
            (topology.refresh_subject, b'{"n": 1}', {"Nats-Msg-Id": "same"}),
            (topology.refresh_subject, b'{"n": 2}', {"Nats-Msg-Id": "same"}),
            (topology.refresh_subject, b'{"n": 3}', {"Nats-Msg-Id": "other"}),
            (f"{topology.namespace}.nowhere", b"{}", {}),  # no stream takes this subject
            (topology.refresh_subject, b"x" * (WORK_MAX_MESSAGE_BYTES + 1), {}),
        ],
        ack_wait=5,
    )
    assert [(r.ok, r.duplicate) for r in results] == [
        (True, False),
        (True, True),
        (True, False),
        (False, False),
        (False, False),
    ]
    assert results[3].error is not None
    assert (await js.stream_info(topology.work_stream)).state.messages == 2


async def test_closing_the_connection_ourselves_is_not_a_disconnect_warning_but_an_outage_is(
    tmp_path: Path,
) -> None:
    import asyncio

    from connector_common.messaging import connect
    from connector_common.settings import NatsSettings
    from connector_devstack.embedded import EmbeddedNats, free_port

    stream = io.StringIO()
    configure_logging("INFO", "json", service="tests", stream=stream)
    port = free_port()
    server = EmbeddedNats(tmp_path / "nats", port=port)
    server.start()
    try:
        settings = NatsSettings(url=f"nats://127.0.0.1:{port}")
        drained = await connect(settings, "drained")
        await drained.drain()
        closed = await connect(settings, "closed")
        await closed.close()
        dropped = await connect(settings, "dropped")
        server.stop()  # the server goes away under a live connection
        deadline = asyncio.get_running_loop().time() + 10
        while "nats disconnected" not in stream.getvalue():
            assert asyncio.get_running_loop().time() < deadline, stream.getvalue()
            await asyncio.sleep(0.05)
        await dropped.close()
    finally:
        server.stop()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    warnings = [(line["client"], line["event"]) for line in lines if line["level"] == "warning"]
    assert ("dropped", "nats disconnected; reconnecting") in warnings
    assert not [w for w in warnings if w[0] in ("drained", "closed")], warnings
    closes = {line["client"] for line in lines if line["event"] == "nats connection closed"}
    assert closes == {"drained", "closed", "dropped"}
