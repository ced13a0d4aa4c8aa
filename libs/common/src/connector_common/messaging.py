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
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from connector_common.logs import get_logger

if TYPE_CHECKING:
    from faststream.nats.security import NatsSecurity
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


def broker_security(settings: NatsSettings) -> NatsSecurity | None:
    """The same authentication and TLS, in FastStream's terms (its ``security=``)."""
    # Imported here: FastStream is heavy, and only the consuming workers need it.
    from faststream.nats.security import (
        NatsCredentials,
        NatsNKey,
        NatsSecurity,
        NatsToken,
        NatsUserPassword,
    )

    context = tls_context(settings)
    if settings.creds_file:
        return NatsCredentials.from_file(settings.creds_file, ssl_context=context)
    if settings.nkey_seed_file:
        return NatsNKey.from_file(settings.nkey_seed_file, ssl_context=context)
    if settings.token:
        return NatsToken(settings.token.get_secret_value(), ssl_context=context)
    if settings.user or settings.password:
        password = settings.password.get_secret_value() if settings.password else ""
        return NatsUserPassword(settings.user or "", password, ssl_context=context)
    return NatsSecurity(ssl_context=context) if context is not None else None


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
