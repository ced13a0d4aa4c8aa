"""What the API opens at start-up and closes at shutdown, shared by every request."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncEngine

from connector_api import repository as repo
from connector_api.auth import TokenVerifier
from connector_api.maintenance import DailyPurge
from connector_api.oidc import OidcClient
from connector_api.ratelimit import RateLimits
from connector_api.services.deletion import DeletionEndpoint
from connector_api.sessions import SessionManager
from connector_api.settings import ApiSettings
from connector_api.signing import CursorCodec, Sealed
from connector_common.budget.recorder import CallRecorder
from connector_common.crypto import TokenCipher
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.ebay import EbayClient
from connector_common.messaging import Topology, connect_until_stopped, ensure_streams
from connector_common.outbox import OutboxRelay
from connector_common.redaction import redact_text
from connector_common.telemetry import Telemetry

# Resolved at each use, so it follows configure_logging even when imported earlier.
log = structlog.stdlib.get_logger(__name__)


class OrgDirectory:
    """Maps the JWT ``org_id`` claim to our organisation id, creating unknown orgs once."""

    def __init__(self, sessions: SessionFactory, max_entries: int = 10_000) -> None:
        self._sessions = sessions
        self._cache: OrderedDict[str, uuid.UUID] = OrderedDict()
        self._max = max_entries

    async def resolve(self, external_id: str) -> uuid.UUID:
        """The internal id (committed in its own short transaction, so it can be cached)."""
        cached = self._cache.get(external_id)
        if cached is not None:
            self._cache.move_to_end(external_id)
            return cached
        async with unit_of_work(self._sessions) as session:
            org_id = await repo.ensure_org(session, external_id)
        self._cache[external_id] = org_id
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return org_id


@dataclass
class AppState:
    """Everything a request handler may need; built in the lifespan, closed after it."""

    settings: ApiSettings
    engine: AsyncEngine
    sessions: SessionFactory
    verifier: TokenVerifier
    orgs: OrgDirectory
    cursors: CursorCodec
    admin_sessions: SessionManager
    cipher: TokenCipher
    ebay: EbayClient
    telemetry: Telemetry
    topology: Topology
    oidc_signer: Sealed
    limits: RateLimits
    calls: CallRecorder  # counts this process's eBay calls for the daily budget
    deletion: DeletionEndpoint  # eBay Marketplace Account Deletion notifications
    # The engine (same pool) for routes that read with one statement each: autocommit, no
    # BEGIN/COMMIT round trips; a Core connection, no ORM session (issue 11).
    read_engine: AsyncEngine | None = None
    oidc: OidcClient | None = None
    nats: NatsClient | None = None
    relay: OutboxRelay | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.settings.nats.namespace

    @property
    def reconsent_window(self) -> timedelta:
        """How long before its refresh token ends an account is ``reconsent_due``."""
        return timedelta(days=self.settings.ebay.reconsent_warning_days)

    def wake_relay(self) -> None:
        """Publish what the last commit enqueued without waiting for the next poll."""
        if self.relay is not None:
            self.relay.wake()

    def start_maintenance(self) -> None:
        """The daily purge (audit retention, ended sessions, old rate-limit windows)."""
        purge = DailyPurge(self.sessions, self.settings.api.audit_retention_days)
        check = self.settings.api.maintenance_check_seconds
        self.tasks.append(asyncio.create_task(purge.run(self.stop, check), name="daily-purge"))

    def start_messaging(self) -> None:
        """Connect to NATS in the background; until then events wait safely in the outbox."""
        self.tasks.append(asyncio.create_task(self._messaging(), name="nats-and-outbox-relay"))
        self.tasks.append(asyncio.create_task(self.calls.run(self.stop), name="ebay-call-counts"))

    async def _messaging(self) -> None:
        delay = 0.5
        while not self.stop.is_set():
            try:
                # Gives up when the API stops: a shutdown during a NATS outage is not delayed.
                client = await connect_until_stopped(
                    self.settings.nats, self.settings.service_name, self.stop
                )
            except Exception as exc:  # NATS is down: retry, the API keeps serving
                log.warning(
                    "nats connect failed", error=redact_text(str(exc))[:200], retry_in=delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                delay = min(delay * 2, 10.0)
                continue
            if client is None:
                return
            self.nats = client
            js = client.jetstream()
            if self.settings.api.declare_streams:
                try:
                    await ensure_streams(js, self.topology, self.settings.nats.stream_replicas)
                except Exception as exc:  # someone else manages the streams; keep going
                    log.warning("declaring streams failed", error=redact_text(str(exc))[:200])
            self.relay = OutboxRelay(
                self.sessions, js, tracer=self.telemetry.tracer("connector_common.outbox")
            )
            log.info("nats connected; outbox relay running")
            await self.relay.run(self.stop)
            return

    async def nats_ready(self) -> bool:
        """True when NATS is connected and JetStream answers."""
        client = self.nats
        if client is None or not client.is_connected:
            return False
        try:
            await asyncio.wait_for(client.jetstream().account_info(), timeout=2)
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        """Stop the relay, then close NATS, eBay, the verifier, telemetry and the database."""
        self.stop.set()
        for task in self.tasks:
            try:
                await asyncio.wait_for(task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception as exc:
                log.warning("background task failed", error=redact_text(str(exc))[:200])
        await self.calls.close()  # the last calls of this process are counted
        if self.nats is not None:
            with contextlib.suppress(Exception):
                await self.nats.drain()
        await self.ebay.aclose()
        await self.verifier.aclose()
        if self.oidc is not None:
            await self.oidc.aclose()
        await self.engine.dispose()
        self.telemetry.shutdown()
