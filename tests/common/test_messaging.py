"""The streams as declared: what JetStream accepts on them."""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext
from nats.js.errors import APIError

from connector_common.messaging import WORK_MAX_MESSAGE_BYTES, Topology


async def test_the_work_stream_refuses_an_oversized_message_when_it_is_published(
    js: JetStreamContext, topology: Topology
) -> None:
    with pytest.raises(APIError):
        await js.publish(topology.refresh_subject, b"x" * (WORK_MAX_MESSAGE_BYTES + 1))
    await js.publish(topology.refresh_subject, b'{"ids": "only"}')
    assert (await js.stream_info(topology.work_stream)).state.messages == 1
