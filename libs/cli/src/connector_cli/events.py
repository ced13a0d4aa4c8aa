"""``connector events``: print the events on NATS JetStream, one JSON line each.

    connector events [--nats-url URL] [--namespace NS] [--subject SUBJECT] [--since SECONDS]
                     [--follow]

Reads the EVENTS stream with an ordered (ephemeral) consumer: it changes nothing and leaves no
consumer behind. Without ``--follow`` it stops once it has caught up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, DeliverPolicy

from connector_common.messaging import connect
from connector_common.settings import NatsSettings

IDLE_SECONDS = 2.0


def add_parser(sub: Any) -> None:
    """Register ``connector events``."""
    parser = sub.add_parser("events", help="print the events on NATS (JSON lines)")
    parser.add_argument(
        "--nats-url", default=os.environ.get("CONNECTOR_NATS__URL", "nats://127.0.0.1:4222")
    )
    parser.add_argument("--namespace", default=os.environ.get("CONNECTOR_NATS__NAMESPACE", "ebay"))
    parser.add_argument("--subject", help="default: every event, {namespace}.events.>")
    parser.add_argument(
        "--since", type=float, default=3600.0, help="from this many seconds ago (default 3600)"
    )
    parser.add_argument("--follow", action="store_true", help="keep printing new events")


def run(args: argparse.Namespace) -> int:
    """Print the events; 1 when NATS cannot be reached."""
    try:
        return asyncio.run(_print_events(args))
    except (OSError, ConnectionError) as exc:
        print(f"connector events: cannot reach NATS: {type(exc).__name__}", file=sys.stderr)
        return 1


async def _print_events(args: argparse.Namespace) -> int:
    settings = NatsSettings(url=args.nats_url, namespace=args.namespace)
    client = await connect(settings, "connector-events")
    subject = args.subject or f"{args.namespace}.events.>"
    start = datetime.now(UTC) - timedelta(seconds=max(0.0, args.since))
    try:
        js = client.jetstream()
        subscription = await js.subscribe(
            subject,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=start,
            ),
        )
        while True:
            try:
                message = await subscription.next_msg(timeout=IDLE_SECONDS)
            except NatsTimeout:
                if args.follow:
                    continue
                return 0
            try:
                payload: Any = json.loads(message.data)
            except ValueError:
                payload = message.data.decode("utf-8", "replace")
            print(json.dumps({"subject": message.subject, "event": payload}), flush=True)
    finally:
        await client.drain()
