"""The refresh leases one process holds: renewed while held, given back when abandoned.

Leases are short (10 s by default) so that a replica that dies frees its accounts within
seconds; one that lives renews all it holds in one statement every third of the lease. The
fencing epoch still guards every write: a renewal that failed only risks a lease lost.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from connector_common.logs import Throttle, get_logger
from connector_common.redaction import redact_text
from connector_common.tokens import repository

log = get_logger(__name__)

Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


class HeldLeases:
    """Which accounts this process holds the refresh lease of, under which epoch."""

    def __init__(self, connect: Connect, owner: str, lease_seconds: float) -> None:
        self._connect = connect
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._held: dict[uuid.UUID, int] = {}
        self._abandoned: list[tuple[uuid.UUID, int]] = []  # held by refreshes cancelled
        self._heartbeat: asyncio.Task[None] | None = None
        self._errors = Throttle(30.0)

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._held

    def hold(self, account_id: uuid.UUID, epoch: int) -> None:
        """A claim succeeded: keep its lease alive until :meth:`done`."""
        self._held[account_id] = epoch
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._renew(), name="lease-heartbeat")

    def done(self, account_id: uuid.UUID) -> None:
        """The refresh wrote (or released) its result: nothing left to renew."""
        self._held.pop(account_id, None)

    def abandon(self, account_id: uuid.UUID, epoch: int) -> None:
        """The refresh was cancelled (shutdown) with its lease still taken."""
        self._abandoned.append((account_id, epoch))

    async def give_back(self) -> None:
        """Release every lease still held (a stopping process): another replica may take the
        accounts at once instead of waiting for the leases to expire."""
        held = [*self._held.items(), *self._abandoned]
        self._held.clear()
        self._abandoned.clear()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if not held:
            return
        try:
            async with self._connect() as connection:
                await repository.release_leases(connection, held, self._owner)
        except Exception as exc:  # they expire on their own within a lease
            log.warning("refresh leases not given back", error=type(exc).__name__, held=len(held))

    async def _renew(self) -> None:
        lease = timedelta(seconds=self._lease_seconds)
        try:
            while self._held:
                await asyncio.sleep(self._lease_seconds / 3)
                held = list(self._held.items())
                if not held:
                    break
                try:
                    async with self._connect() as connection:
                        await repository.renew_leases(connection, held, self._owner, lease)
                except Exception as exc:  # the fencing epoch still guards every write
                    if (skipped := self._errors.ready(type(exc).__name__)) is not None:
                        log.warning(
                            "refresh leases not renewed",
                            error=redact_text(f"{type(exc).__name__}: {exc}")[:200],
                            held=len(held),
                            more_since_last_line=skipped,
                        )
        finally:
            self._heartbeat = None
