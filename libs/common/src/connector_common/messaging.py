"""NATS JetStream topology, declared once: streams, subjects, durable consumer names.

=========  ==================  ===========================  =====================================
stream     retention           subjects                     what
=========  ==================  ===========================  =====================================
WORK       work queue          ``{ns}.work.>``              refresh / health requests (ids only)
EVENTS     limits, max age     ``{ns}.events.>``            account, token, health events per org
DLQ        limits, max age     ``{ns}.dlq.>``               work that could not be processed
=========  ==================  ===========================  =====================================

Stream names are the namespace upper-cased plus the role (``EBAY-WORK``), so several
installations or test runs can share one NATS cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from connector_common.logs import get_logger
from connector_common.redaction import redact_text
from connector_common.settings import NatsSettings

log = get_logger(__name__)

DAY = 24 * 3600.0
WORK_DUPLICATE_WINDOW = 60.0
# Work messages carry ids only (well under 1 KiB). Anything far bigger is refused when it is
# published (a clear error for the producer) instead of becoming work nobody can do.
WORK_MAX_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Topology:
    """Names derived from the namespace."""

    namespace: str

    @property
    def prefix(self) -> str:
        return self.namespace.upper()

    @property
    def work_stream(self) -> str:
        return f"{self.prefix}-WORK"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix}-EVENTS"

    @property
    def dlq_stream(self) -> str:
        return f"{self.prefix}-DLQ"

    @property
    def refresh_subject(self) -> str:
        return f"{self.namespace}.work.refresh"

    @property
    def health_subject(self) -> str:
        return f"{self.namespace}.work.health"

    def events_subject(self, org_id: str = "*", event_type: str = ">") -> str:
        """Events of one org (or all: ``*``), of one type (or all: ``>``)."""
        return f"{self.namespace}.events.{org_id}.{event_type}"

    def dlq_subject(self, kind: str) -> str:
        return f"{self.namespace}.dlq.{kind}"

    @property
    def refresher_durable(self) -> str:
        return f"{self.prefix}-token-refresher"

    @property
    def health_durable(self) -> str:
        return f"{self.prefix}-health-checker"

    def stream_configs(self, replicas: int = 1) -> list[StreamConfig]:
        """The three streams, as they should exist."""
        return [
            StreamConfig(
                name=self.work_stream,
                description="refresh and health-check requests; one durable consumer per worker",
                subjects=[f"{self.namespace}.work.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=replicas,
                # Repeats of one request within a minute collapse. Kept short on purpose: the
                # scheduler re-publishes work that was not done (same Nats-Msg-Id) after its
                # requeue interval, and health checks of one account come at least this far
                # apart (connector_common.worker.settings validates both).
                duplicate_window=WORK_DUPLICATE_WINDOW,
                max_age=2 * DAY,
                max_msg_size=WORK_MAX_MESSAGE_BYTES,
                discard=DiscardPolicy.OLD,
            ),
            StreamConfig(
                name=self.events_stream,
                description="account, token and health events, per org",
                subjects=[f"{self.namespace}.events.>"],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=replicas,
                duplicate_window=600.0,
                max_age=7 * DAY,
                discard=DiscardPolicy.OLD,
            ),
            StreamConfig(
                name=self.dlq_stream,
                description="work that failed its bounded deliveries or could not be parsed",
                subjects=[f"{self.namespace}.dlq.>"],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=replicas,
                duplicate_window=600.0,
                max_age=30 * DAY,
                discard=DiscardPolicy.OLD,
            ),
        ]


class _ConnectionLog:
    """nats-py's default callbacks log a full traceback on every reconnect attempt (each second,
    in every process, for the whole outage); these log one line, at most every 30 s per error.

    nats-py also calls "disconnected" when we close or drain the connection ourselves: that is
    a shutdown, not a problem, and is logged as such (``closed``), not as a warning.
    """

    QUIET_SECONDS = 30.0

    def __init__(self, name: str) -> None:
        self._name = name
        self._last: dict[str, float] = {}
        self.client: NatsClient | None = None  # set once connected

    async def error(self, exc: Exception) -> None:
        kind = type(exc).__name__
        now = time.monotonic()
        if now - self._last.get(kind, -self.QUIET_SECONDS) < self.QUIET_SECONDS:
            return
        self._last[kind] = now
        log.warning(
            "nats connection problem",
            client=self._name,
            error=redact_text(f"{kind}: {exc}")[:300],
        )

    async def disconnected(self) -> None:
        if self.client is not None and self.client.is_closed:
            return  # a close (ours, or the server's): ``closed`` says which
        log.warning("nats disconnected; reconnecting", client=self._name)

    async def closed(self) -> None:
        error = self.client.last_error if self.client is not None else None
        if isinstance(error, nats.errors.Error) and not isinstance(
            error, nats.errors.ConnectionClosedError | nats.errors.NoServersError
        ):
            # The server refused us (-ERR, authorization): the connection is gone for good.
            log.warning(
                "nats connection closed by the server",
                client=self._name,
                error=redact_text(f"{type(error).__name__}: {error}")[:300],
            )
        else:
            log.info("nats connection closed", client=self._name)

    async def reconnected(self) -> None:
        self._last.clear()
        log.info("nats reconnected", client=self._name)


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """The TLS context for NATS (server verified against ``tls_ca_file`` or the system's CAs,
    client certificate when given), or None for plain connections."""
    if not settings.uses_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.tls_ca_file)
    if settings.tls_cert_file and settings.tls_key_file:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def auth_options(settings: NatsSettings) -> dict[str, Any]:
    """``nats.connect`` keyword arguments for authentication and TLS."""
    options: dict[str, Any] = {}
    if settings.user:
        options["user"] = settings.user
    if settings.password:
        options["password"] = settings.password.get_secret_value()
    if settings.token:
        options["token"] = settings.token.get_secret_value()
    if settings.creds_file:
        options["user_credentials"] = settings.creds_file
    if settings.nkey_seed_file:
        options["nkeys_seed"] = settings.nkey_seed_file
    if (context := tls_context(settings)) is not None:
        options["tls"] = context
    return options


async def connect(settings: NatsSettings, name: str) -> NatsClient:
    """Connect to NATS with bounded reconnects that never give up."""
    events = _ConnectionLog(name)
    options: dict[str, Any] = {
        "servers": settings.servers,
        "name": name,
        "connect_timeout": settings.connect_timeout_seconds,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "allow_reconnect": True,
        "error_cb": events.error,
        "disconnected_cb": events.disconnected,
        "reconnected_cb": events.reconnected,
        "closed_cb": events.closed,
        **auth_options(settings),
    }
    client = await nats.connect(**options)
    events.client = client
    return client


async def connect_until_stopped(
    settings: NatsSettings,
    name: str,
    stop: asyncio.Event,
    *,
    on_wait: Callable[[], None] | None = None,
    poll_seconds: float = 1.0,
) -> NatsClient | None:
    """:func:`connect`, but give up when ``stop`` is set first (then returns None).

    :func:`connect` never gives up while NATS is down; a process started during an outage must
    still answer SIGTERM at once. ``on_wait`` is called every ``poll_seconds`` while waiting
    (waiting for a dependency is progress, not a hang).
    """
    attempt = asyncio.create_task(connect(settings, name), name="nats-connect")
    stopped = asyncio.create_task(stop.wait(), name="nats-connect-stop")
    try:
        while not attempt.done() and not stop.is_set():
            await asyncio.wait(
                {attempt, stopped}, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if on_wait is not None and not attempt.done():
                on_wait()
        if stop.is_set():
            attempt.cancel()
            with contextlib.suppress(BaseException):
                client = await attempt
                await client.close()
            return None
        return attempt.result()
    finally:
        stopped.cancel()


async def ensure_streams(js: JetStreamContext, topology: Topology, replicas: int = 1) -> None:
    """Create the streams, or bring their configuration up to date; idempotent."""
    for config in topology.stream_configs(replicas):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


@dataclass(frozen=True)
class Published:
    """What JetStream said about one message of a :meth:`BulkPublisher.publish`."""

    ok: bool
    duplicate: bool = False  # de-duplicated: an earlier message had its Nats-Msg-Id
    error: str | None = None


@dataclass
class _Acks:
    results: list[Published | None]
    waiting: int
    done: asyncio.Event = field(default_factory=asyncio.Event)


class BulkPublisher:
    """Many JetStream publishes in flight at once, their acks collected together.

    nats-py's ``publish`` waits for each ack in turn (about 1,100 msg/s here) and its
    ``publish_async`` makes a future, a task hop and a parsed ``PubAck`` per message (measured
    40-50 us of CPU each); this sends every message with its own reply subject under one
    subscription and records each ack where it belongs (15 us). Used by the scheduler (its
    work) and the outbox relay (events).
    """

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._batches: dict[int, _Acks] = {}
        self._next = 0

    @classmethod
    def for_jetstream(cls, js: JetStreamContext) -> BulkPublisher:
        """The publisher on the connection a JetStream context uses."""
        nc: NatsClient = js._nc
        return cls(nc)

    async def publish(
        self,
        messages: Sequence[tuple[str, bytes, Mapping[str, str]]],
        ack_wait: float,
    ) -> list[Published]:
        """Publish ``(subject, payload, headers)`` messages; one result each, in order. A
        message JetStream did not acknowledge within ``ack_wait`` seconds is not ``ok``."""
        if not messages:
            return []
        if self._subscription is None:
            self._prefix = self._nc.new_inbox()
            self._subscription = await self._nc.subscribe(f"{self._prefix}.*.*", cb=self._on_ack)
        batch_id = self._next
        self._next += 1
        acks = _Acks([None] * len(messages), len(messages))
        self._batches[batch_id] = acks
        try:
            for index, (subject, payload, headers) in enumerate(messages):
                try:
                    await self._nc.publish(
                        subject,
                        payload,
                        reply=f"{self._prefix}.{batch_id}.{index}",
                        headers=dict(headers),
                    )
                except Exception as exc:  # not sent (closed, too big): this one fails
                    self._record(acks, index, Published(False, error=type(exc).__name__))
            if acks.waiting:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ack_wait):
                        await acks.done.wait()
        finally:
            del self._batches[batch_id]
        missing = Published(False, error="no acknowledgement from JetStream in time")
        return [result or missing for result in acks.results]

    async def _on_ack(self, msg: Msg) -> None:
        _, batch_id, index = msg.subject.rsplit(".", 2)
        acks = self._batches.get(int(batch_id))
        if acks is None:
            return  # the batch gave up waiting: too late
        data = msg.data or b""
        if msg.headers and msg.headers.get("Status") == "503":
            result = Published(False, error="no stream answers (JetStream unavailable)")
        elif b'"error"' in data:
            try:
                detail = json.loads(data)["error"]
                error = f"{detail.get('code')} {detail.get('description')}"
            except (ValueError, KeyError, AttributeError):
                error = "JetStream refused the message"
            result = Published(False, error=error[:200])
        elif b'"duplicate"' in data:  # only present on a repeat (JetStream omits false)
            result = Published(True, duplicate=bool(json.loads(data).get("duplicate")))
        else:
            result = Published(True)
        self._record(acks, int(index), result)

    @staticmethod
    def _record(acks: _Acks, index: int, result: Published) -> None:
        if acks.results[index] is None:
            acks.results[index] = result
            acks.waiting -= 1
            if acks.waiting == 0:
                acks.done.set()
