"""The token store: the one way tokens get refreshed, shared by the token refresher and the
health checker's 401 refresh-and-retry path.

A refresh is three steps, each its own short transaction, because the eBay call must not run
inside one (it would hold a pooled connection and row locks for seconds):

1. claim the account's refresh lease (fencing epoch), check it still needs refreshing;
2. decrypt the refresh token and call eBay, no transaction open;
3. write the result only if the claim still holds, with its event in the same transaction
   (outbox): new ciphertexts, ``version + 1``, ``lease_epoch + 1``; or the failure and backoff;
   or ``reconnect_required`` on ``invalid_grant``.

Every refresh reads like that, one account at a time (:meth:`TokenStore._refresh`), but the
claims and the writes of refreshes running at the same time are grouped (:mod:`batching`): one
statement claims all the leases asked for meanwhile and reads their circuit breakers, one
statement writes all the refreshed tokens and their events, the fencing checked row by row.

Leases are short (``lease_seconds``, 10 s by default) and renewed while the eBay call runs (one
statement for all the leases this process holds, every third of the lease), so the leases of a
process that died are free again within seconds; the fencing epoch still guards every write.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal, Protocol

from opentelemetry import metrics
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncConnection

from connector_common.batching import Batcher
from connector_common.crypto import TokenCipher, TokenCipherError
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.ebay.breaker import UNREAD, BreakerSnapshot
from connector_common.ebay.errors import (
    CircuitOpen,
    EbayError,
    InvalidGrant,
    RateLimited,
    TransientError,
)
from connector_common.ebay.models import UserToken
from connector_common.events import ReconnectRequired, TokenRefreshed, TokenRefreshFailed
from connector_common.logs import get_logger
from connector_common.outbox import enqueue_event, outbox_row
from connector_common.redaction import redact_text
from connector_common.telemetry import inject_trace_headers
from connector_common.tokens import repository
from connector_common.tokens.leases import HeldLeases
from connector_common.tokens.repository import Busy, Claim, Failure, Refreshed
from connector_common.worker.backoff import retry_delay

log = get_logger(__name__)

# Requests that want a refresh of the current version even if it is not due yet.
FORCING_REASONS = frozenset({"manual", "connected", "reconnected", "rejected"})
ErrorKind = Literal["rate_limited", "transient", "permanent", "circuit_open"]


class RefreshesTokens(Protocol):
    """The part of ``connector_common.ebay.EbayClient`` the store uses."""

    async def refresh_access_token(
        self,
        refresh_token: str,
        scopes: Sequence[str],
        *,
        account_key: str | None = None,
        breaker_state: BreakerSnapshot | object | None = UNREAD,
    ) -> UserToken: ...


class RefreshOutcome(StrEnum):
    REFRESHED = "refreshed"
    ALREADY_FRESH = "already_fresh"  # nothing to do: a newer version exists, or not due
    BUSY = "busy"  # another replica holds the lease
    NOT_ELIGIBLE = "not_eligible"  # deactivated: refreshing is switched off
    RECONNECT_REQUIRED = "reconnect_required"
    FAILED = "failed"
    LEASE_LOST = "lease_lost"  # someone wrote newer tokens while we called eBay
    UNKNOWN_ACCOUNT = "unknown_account"


@dataclass(frozen=True)
class RefreshRequest:
    account_id: uuid.UUID
    org_id: uuid.UUID | None = None  # when given, must match the account's org
    token_version: int | None = None  # the version the request was made for
    reason: str = "scheduled"


@dataclass(frozen=True)
class RefreshResult:
    outcome: RefreshOutcome
    account_id: uuid.UUID
    house_name: str | None = None
    token_version: int | None = None
    access_expires_at: datetime | None = None
    retry_in: float | None = None  # BUSY, or a retryable failure: seconds until worth retrying
    error_kind: ErrorKind | None = None
    error: str | None = None
    access_token: SecretStr | None = field(default=None, repr=False)  # REFRESHED only

    @property
    def retryable(self) -> bool:
        """A failure that a later attempt may fix (rate limit, outage, open breaker)."""
        return self.outcome is RefreshOutcome.FAILED and self.error_kind != "permanent"


@dataclass(frozen=True)
class StoreTiming:
    lease_seconds: float
    refresh_lead_seconds: float
    retry_base_seconds: float
    retry_max_seconds: float
    permanent_retry_seconds: float


@dataclass(frozen=True)
class _FailureWrite:
    failure: Failure
    kind: ErrorKind
    trace_headers: dict[str, str]  # the refresh's trace, for its event


class TokenStore:
    """Refreshes one account at a time across every replica (lease + fencing epoch)."""

    def __init__(
        self,
        sessions: SessionFactory,
        cipher: TokenCipher,
        client: RefreshesTokens,
        *,
        owner: str,
        namespace: str,
        timing: StoreTiming,
        default_scopes: Sequence[str] = (),
        meter: metrics.Meter | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._cipher = cipher
        self._client = client
        self._owner = owner
        self._namespace = namespace
        self._timing = timing
        self._default_scopes = tuple(default_scopes)
        self._on_commit = on_commit or (lambda: None)
        self._claims: Batcher[uuid.UUID, Claim | Busy | None] = Batcher(
            self._claim_many, name="token claim"
        )
        self._written: Batcher[Refreshed, int | None] = Batcher(
            self._store_many, name="token write"
        )
        self._failures: Batcher[_FailureWrite, tuple[int, datetime] | None] = Batcher(
            self._fail_many, name="token failure write"
        )
        self._leases = HeldLeases(self._autocommit, owner, timing.lease_seconds)
        meter = meter or metrics.get_meter(__name__)
        self._refreshes = meter.create_counter(
            "connector.token.refreshes",
            unit="{refresh}",
            description="token refresh attempts by outcome (and error kind)",
        )

    @property
    def cipher(self) -> TokenCipher:
        return self._cipher

    @property
    def sessions(self) -> SessionFactory:
        return self._sessions

    async def refresh(self, request: RefreshRequest) -> RefreshResult:
        """Refresh the account's access token unless it is fresh, busy, or must not be."""
        result = await self._refresh(request)
        self._refreshes.add(
            1, {"outcome": result.outcome.value, "error_kind": result.error_kind or ""}
        )
        return result

    async def _refresh(self, request: RefreshRequest) -> RefreshResult:
        claimed = await self._claims.submit(request.account_id)
        if isinstance(claimed, Claim):
            try:
                return await self._refresh_claimed(claimed, request)
            except asyncio.CancelledError:
                self._leases.abandon(claimed.account_id, claimed.epoch)  # see close()
                raise
            finally:
                self._leases.done(claimed.account_id)
        if claimed is None:
            return RefreshResult(RefreshOutcome.UNKNOWN_ACCOUNT, request.account_id)
        # lease_until is None when the holder released the lease between our claim and our
        # look at it: worth retrying at once.
        held = claimed.lease_until
        wait = max(0.0, (held - claimed.now).total_seconds()) if held is not None else 0.0
        return RefreshResult(RefreshOutcome.BUSY, request.account_id, retry_in=wait)

    async def _refresh_claimed(self, claim: Claim, request: RefreshRequest) -> RefreshResult:
        claimed_at = time.monotonic()
        skip = self._skip_reason(claim, request)
        if skip is not None:
            async with unit_of_work(self._sessions) as session:
                await repository.release_lease(session, claim.account_id, self._owner, claim.epoch)
            return RefreshResult(
                skip, claim.account_id, claim.house_name, claim.version, claim.access_expires_at
            )
        if claim.refresh_token_ct is None:
            return await self._reconnect_required(claim, "no refresh token is stored")
        if claim.refresh_expires_at is not None and claim.refresh_expires_at <= claim.now:
            # Nothing but a new consent renews it: eBay is not even asked.
            return await self._reconnect_required(claim, "the refresh token has expired")
        try:
            refresh_token = self._cipher.decrypt(
                claim.refresh_token_ct, claim.account_id, "refresh_token"
            )
        except TokenCipherError as exc:
            return await self._failed(claim, "permanent", str(exc), None)
        try:
            token = await self._client.refresh_access_token(
                refresh_token,
                claim.scopes or self._default_scopes,
                account_key=str(claim.account_id),
                breaker_state=_breaker_snapshot(claim),
            )
        except InvalidGrant as exc:
            return await self._reconnect_required(claim, f"invalid_grant: {exc.message}")
        except RateLimited as exc:
            return await self._failed(claim, "rate_limited", exc.message, exc.retry_after)
        except CircuitOpen as exc:
            elapsed = timedelta(seconds=time.monotonic() - claimed_at)
            wait = max(0.0, (exc.open_until - claim.now - elapsed).total_seconds())
            return await self._failed(claim, "circuit_open", exc.message, wait)
        except TransientError as exc:
            return await self._failed(claim, "transient", exc.message, None)
        except EbayError as exc:  # PermanentError and anything unexpected from eBay
            return await self._failed(claim, "permanent", f"{exc.kind}: {exc.message}", None)
        return await self._store(claim, token, refresh_token)

    def _skip_reason(self, claim: Claim, request: RefreshRequest) -> RefreshOutcome | None:
        if request.org_id is not None and request.org_id != claim.org_id:
            return RefreshOutcome.UNKNOWN_ACCOUNT  # an id from another org is no account of it
        if claim.reconnect_required_at is not None:
            return RefreshOutcome.RECONNECT_REQUIRED
        if not claim.refresh_enabled or not claim.is_active:
            return RefreshOutcome.NOT_ELIGIBLE
        lead = timedelta(seconds=self._timing.refresh_lead_seconds)
        due = claim.access_expires_at is None or claim.access_expires_at <= claim.now + lead
        if request.token_version is not None and claim.version > request.token_version:
            return None if due else RefreshOutcome.ALREADY_FRESH
        if request.reason in FORCING_REASONS:
            return None
        return None if due else RefreshOutcome.ALREADY_FRESH

    async def _store(self, claim: Claim, token: UserToken, refresh_token: str) -> RefreshResult:
        cipher = self._cipher
        # eBay normally sends no new refresh token; re-encrypting the old one moves it to the
        # newest key (lazy key rotation) so both ciphertexts share ``key_id``.
        new_refresh = (
            token.refresh_token.get_secret_value() if token.refresh_token else refresh_token
        )
        version = claim.version + 1  # what the fenced write makes it, if the claim holds
        event = TokenRefreshed(
            org_id=claim.org_id,
            account_id=claim.account_id,
            house_name=claim.house_name,
            access_expires_at=token.access_expires_at,
            token_version=version,
        )
        written = await self._written.submit(
            Refreshed(
                claim,
                access_token_ct=cipher.encrypt(
                    token.access_token.get_secret_value(), claim.account_id, "access_token"
                ),
                refresh_token_ct=cipher.encrypt(new_refresh, claim.account_id, "refresh_token"),
                key_id=cipher.primary_key_id,
                access_expires_at=token.access_expires_at,
                refresh_expires_at=token.refresh_expires_at,
                event=outbox_row(event, self._namespace),
            )
        )
        if written is None:
            return self._lease_lost(claim)
        self._on_commit()
        log.debug(
            "token refreshed",
            account_id=str(claim.account_id),
            house_name=claim.house_name,
            token_version=written,
            access_expires_at=token.access_expires_at.isoformat(),
        )
        return RefreshResult(
            RefreshOutcome.REFRESHED,
            claim.account_id,
            claim.house_name,
            written,
            token.access_expires_at,
            access_token=token.access_token,
        )

    async def _failed(
        self, claim: Claim, kind: ErrorKind, message: str, at_least: float | None
    ) -> RefreshResult:
        timing = self._timing
        attempt = claim.consecutive_failures + 1
        if kind == "permanent":
            wait = timing.permanent_retry_seconds
        elif kind == "rate_limited" and at_least is not None:
            # eBay said how long: exactly that (and up to 5 % jitter so the accounts limited
            # together do not come back together), never sooner.
            wait = at_least * (1 + 0.05 * _jitter())
        else:
            wait = retry_delay(
                attempt, timing.retry_base_seconds, timing.retry_max_seconds, at_least=at_least
            )
        error = redact_text(f"{kind}: {message}")[:500]
        recorded = await self._failures.submit(
            _FailureWrite(
                Failure(claim, error, timedelta(seconds=wait)), kind, inject_trace_headers()
            )
        )
        if recorded is None:
            return self._lease_lost(claim)
        failures, _retry_at = recorded
        self._on_commit()
        (log.info if kind in ("rate_limited", "circuit_open") else log.warning)(
            "token refresh failed",
            account_id=str(claim.account_id),
            house_name=claim.house_name,
            error_kind=kind,
            error=error,
            consecutive_failures=failures,
            retry_in_s=round(wait, 1),
        )
        return RefreshResult(
            RefreshOutcome.FAILED,
            claim.account_id,
            claim.house_name,
            claim.version,
            claim.access_expires_at,
            retry_in=wait,
            error_kind=kind,
            error=error,
        )

    async def _reconnect_required(self, claim: Claim, reason: str) -> RefreshResult:
        error = redact_text(reason)[:500]
        async with unit_of_work(self._sessions) as session:
            first = await repository.mark_reconnect_required(
                session, claim, self._owner, error=error
            )
            if first is None:
                return self._lease_lost(claim)
            if first:
                enqueue_event(
                    session,
                    ReconnectRequired(
                        org_id=claim.org_id,
                        account_id=claim.account_id,
                        house_name=claim.house_name,
                        reason=error[:300],
                    ),
                    self._namespace,
                )
        self._on_commit()
        log.warning(
            "account needs reconnecting",
            account_id=str(claim.account_id),
            house_name=claim.house_name,
            error=error,
        )
        return RefreshResult(
            RefreshOutcome.RECONNECT_REQUIRED,
            claim.account_id,
            claim.house_name,
            claim.version,
            error=error,
        )

    def _lease_lost(self, claim: Claim) -> RefreshResult:
        # Newer tokens were written meanwhile (reconnect, or a replica after our lease ran
        # out): ours are discarded, theirs stand.
        log.info(
            "refresh result discarded: the lease was taken over",
            account_id=str(claim.account_id),
            lease_epoch=claim.epoch,
        )
        return RefreshResult(RefreshOutcome.LEASE_LOST, claim.account_id, claim.house_name)

    async def close(self) -> None:
        """Give back the leases still held (a shutdown that abandoned refreshes): another
        replica may take them at once instead of waiting for them to expire."""
        await self._leases.give_back()

    # --- batched statements -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection for single-statement writes (each statement is atomic)."""
        async with self._sessions() as session:
            yield await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})

    async def _claim_many(self, account_ids: Sequence[uuid.UUID]) -> list[Claim | Busy | None]:
        lease = timedelta(seconds=self._timing.lease_seconds)
        async with self._autocommit() as connection:
            found = await repository.claim_leases(connection, account_ids, self._owner, lease)
        results: list[Claim | Busy | None] = []
        for account_id in account_ids:
            got = found.get(account_id)
            if isinstance(got, Claim):
                if account_id in self._leases:  # asked twice in one batch: the first has it
                    got = Busy(got.lease_until or got.now, got.now)
                else:
                    self._leases.hold(account_id, got.epoch)
            results.append(got)
        return results

    async def _store_many(self, writes: Sequence[Refreshed]) -> list[int | None]:
        async with self._autocommit() as connection:
            written = await repository.store_refreshed_many(connection, self._owner, writes)
        return [written.get(w.claim.account_id) for w in writes]

    async def _fail_many(
        self, writes: Sequence[_FailureWrite]
    ) -> list[tuple[int, datetime] | None]:
        async with unit_of_work(self._sessions) as session:
            recorded = await repository.record_failures(
                session, self._owner, [w.failure for w in writes]
            )
            for write in writes:
                claim = write.failure.claim
                got = recorded.get(claim.account_id)
                if got is None or got[0] != 1:
                    continue  # lease lost, or not news: one event per failure streak
                enqueue_event(
                    session,
                    TokenRefreshFailed(
                        org_id=claim.org_id,
                        account_id=claim.account_id,
                        house_name=claim.house_name,
                        error_kind=write.kind,
                        reason=write.failure.error[:300],
                        consecutive_failures=got[0],
                        retry_at=got[1],
                    ),
                    self._namespace,
                    trace_headers=write.trace_headers,
                )
        return [recorded.get(w.failure.claim.account_id) for w in writes]


def _breaker_snapshot(claim: Claim) -> BreakerSnapshot | None:
    """The account's circuit breaker as the claim read it (None: no row, closed)."""
    if claim.breaker_state is None:
        return None
    return BreakerSnapshot(
        claim.breaker_state,
        claim.breaker_failures,
        claim.breaker_open_until,
        claim.breaker_probe_until,
        claim.now,
    )


def _jitter() -> float:
    return random.random()  # noqa: S311 - spreading retries, not cryptography
