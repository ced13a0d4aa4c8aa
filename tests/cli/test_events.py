"""`connector events`: prints what is on the EVENTS stream, one JSON line each, and leaves."""

from __future__ import annotations

import argparse
import json
import uuid

import pytest
from nats.js import JetStreamContext

from connector_cli import events
from connector_common.events import AccountDeletedByEbay, event_payload
from connector_common.messaging import Topology


async def test_events_prints_the_stream_as_json_lines(
    js: JetStreamContext, topology: Topology, nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    event = AccountDeletedByEbay(
        org_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        house_name="London",
        notification_id="n-1",
        event_date=None,
    )
    await js.publish(event.subject(topology.namespace), event_payload(event))
    args = argparse.Namespace(
        nats_url=nats_url, namespace=topology.namespace, subject=None, since=60.0, follow=False
    )
    assert await events._print_events(args) == 0
    # (Log lines of the NATS connection may share stdout in tests; events are the JSON lines.)
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith('{"subject"')]
    printed = json.loads(line)
    assert printed["subject"] == event.subject(topology.namespace)
    assert printed["event"]["type"] == "account.deleted_by_ebay"
    assert printed["event"]["account_id"] == str(event.account_id)
