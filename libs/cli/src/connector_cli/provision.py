"""`connector nats provision`: create or update the JetStream streams and durable consumers.

Idempotent: run it at every install and upgrade (the Kubernetes provisioning Job does), with the
NATS admin user. The services only bind to what it declares. It waits for NATS and JetStream up
to ``--wait`` seconds (a cluster may still be electing its leaders), saying so every few
seconds, and prints one line per stream and consumer: created, updated (which fields) or
unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, ServiceUnavailableError

from connector_common.messaging import Topology, connect_until_stopped
from connector_common.provisioning import ProvisionSettings, provision
from connector_common.redaction import redact_text, register_secret
from connector_common.settings import load_settings

PROGRESS_SECONDS = 5.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `connector nats provision`."""
    nats = sub.add_parser("nats", help="NATS JetStream administration")
    actions = nats.add_subparsers(dest="nats_command", required=True, metavar="ACTION")
    provision_parser = actions.add_parser(
        "provision",
        help="create or update the streams and durable consumers (idempotent; NATS admin user)",
    )
    provision_parser.add_argument(
        "--replicas",
        type=int,
        choices=range(1, 6),
        metavar="{1..5}",
        help="stream replicas (default: CONNECTOR_NATS__STREAM_REPLICAS)",
    )
    provision_parser.add_argument(
        "--wait",
        type=_seconds,
        default=120.0,
        help="seconds to wait for NATS and JetStream before giving up (default 120)",
    )


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return seconds


def _say(message: str) -> None:
    print(f"connector nats provision: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Provision; 0 when everything exists as declared, 1 when NATS refused or never answered."""
    settings = load_settings(ProvisionSettings)
    for secret in (settings.nats.password, settings.nats.token):
        if secret is not None:
            register_secret(secret.get_secret_value())
    replicas = args.replicas or settings.nats.stream_replicas
    return asyncio.run(_provision(settings, replicas, args.wait))


async def _provision(settings: ProvisionSettings, replicas: int, wait: float) -> int:
    deadline = time.monotonic() + wait
    stop = asyncio.Event()
    started = time.monotonic()
    last_said = started

    def waiting() -> None:
        nonlocal last_said
        now = time.monotonic()
        if now >= deadline:
            stop.set()
        elif now - last_said >= PROGRESS_SECONDS:
            last_said = now
            _say(f"waiting for NATS at {settings.nats.url} ({now - started:.0f} s of {wait:.0f})")

    client = await connect_until_stopped(
        settings.nats, "connector-nats-provision", stop, on_wait=waiting, poll_seconds=1.0
    )
    if client is None:
        _say(f"NATS at {settings.nats.url} did not answer within {wait:.0f} s")
        return 1
    topology = Topology(settings.nats.namespace)
    try:
        while True:
            try:
                changes = await provision(
                    client.jetstream(timeout=10),
                    topology,
                    replicas=replicas,
                    consumer_settings=settings.worker,
                )
            except (ServiceUnavailableError, NatsTimeoutError, NoRespondersError) as exc:
                # JetStream not there yet (enabling, electing) - or never, for a user without
                # the JetStream API rights: say both while waiting.
                if time.monotonic() >= deadline:
                    _say(
                        f"JetStream did not answer within {wait:.0f} s ({type(exc).__name__}): "
                        "is JetStream enabled, and is this the NATS admin user? Provisioning "
                        "needs the rights to create streams and consumers."
                    )
                    return 1
                waiting()
                await asyncio.sleep(1.0)
                continue
            except APIError as exc:
                _say(f"JetStream refused: {redact_text(str(exc.description or exc))[:300]}")
                return 1
            break
    finally:
        await client.drain()
    for change in changes:
        print(change, flush=True)
    return 0
