"""eBay Marketplace Account Deletion: the challenge, and a notification checked then purged.

A notification is trusted only when ``X-EBAY-SIGNATURE`` verifies against the public key eBay's
Notification API gives for its ``kid``. Anything else is 412 and changes nothing. A trusted
notification purges, in one transaction, every org's account of that eBay user: tokens, health
history, usernames, pending consents and seller details in the audit log go; the account row
stays as a tombstone without personal data (``deleted_by_ebay``), with an audit entry and an
``account.deleted_by_ebay`` event (outbox). Only after that transaction committed is eBay told
204. The same ``notificationId`` again is 204 and does nothing; a user we never connected is 204.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import structlog
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connector_api import deletion_repository as repo
from connector_api.errors import (
    InvalidInput,
    PreconditionFailed,
    TooLarge,
    TooManyRequests,
    Unavailable,
)
from connector_api.notifications.keys import KeyUnavailable, PublicKeyCache, UnknownKey
from connector_api.notifications.limits import BodyTooLarge, TokenBucket, read_body
from connector_api.notifications.signature import BadSignature, parse_header, verify
from connector_api.repository import add_audit
from connector_api.settings import ApiSettings
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.ebay import EbayClient
from connector_common.events import AccountDeletedByEbay, utcnow
from connector_common.outbox import enqueue_event

# Resolved at each use, so it follows configure_logging even when imported earlier.
log = structlog.stdlib.get_logger(__name__)

TOPIC = "MARKETPLACE_ACCOUNT_DELETION"
ACTOR = "ebay"  # who the audit log says acted


def challenge_response(challenge_code: str, verification_token: str, endpoint: str) -> str:
    """hex(SHA-256(challengeCode + verificationToken + endpoint)), in exactly that order."""
    digest = hashlib.sha256()
    for part in (challenge_code, verification_token, endpoint):
        digest.update(part.encode("utf-8"))
    return digest.hexdigest()


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore")
    userId: str = Field(min_length=1, max_length=200)
    username: str | None = Field(default=None, max_length=200)
    eiasToken: str | None = Field(default=None, max_length=500)


class _Notification(BaseModel):
    model_config = ConfigDict(extra="ignore")
    notificationId: str = Field(min_length=1, max_length=200)
    eventDate: datetime | None = None
    data: _Data


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="ignore")
    topic: str


class DeletionMessage(BaseModel):
    """What we read of eBay's payload (AsyncAPI ``marketplace_account_deletion``)."""

    model_config = ConfigDict(extra="ignore")
    metadata: _Metadata
    notification: _Notification


@dataclass(frozen=True)
class DeletionResult:
    """What a notification did (no personal data)."""

    notification_id: str | None
    duplicate: bool
    accounts_purged: int


class DeletionEndpoint:
    """The endpoint's state in one API process: rate, key cache, verification token."""

    def __init__(
        self, settings: ApiSettings, sessions: SessionFactory, ebay: EbayClient, namespace: str
    ) -> None:
        config = settings.ebay.deletion
        self._sessions = sessions
        self._namespace = namespace
        self._token = config.verification_token
        self._max_body = config.max_body_bytes
        self.endpoint = settings.deletion_endpoint_url
        self.requests = TokenBucket(config.requests_per_second, config.burst)
        self.keys = PublicKeyCache(
            ebay.notification_public_key,
            ttl=config.key_cache_seconds,
            negative_ttl=config.unknown_key_seconds,
            max_keys=config.key_cache_size,
            fetches_per_minute=config.key_fetches_per_minute,
        )

    def challenge(self, challenge_code: str) -> str:
        """The ``challengeResponse`` for eBay's GET."""
        self._admit()
        if self._token is None:
            raise Unavailable(
                "account-deletion notifications are not configured: "
                "set CONNECTOR_EBAY__DELETION__VERIFICATION_TOKEN"
            )
        return challenge_response(challenge_code, self._token.get_secret_value(), self.endpoint)

    async def receive(self, request: Request) -> DeletionResult:
        """Check one notification and purge what it names; returns once that committed."""
        self._admit()
        try:
            body = await read_body(request, self._max_body)
        except BodyTooLarge:
            raise TooLarge(f"the request body is larger than {self._max_body} bytes") from None
        try:
            header = parse_header(request.headers.get("x-ebay-signature"))
            key = await self.keys.get(header.kid)
        except BadSignature as exc:
            raise self._refused(exc.reason) from None
        except UnknownKey:
            raise self._refused("the signature names a key eBay does not know") from None
        except KeyUnavailable as exc:
            log.warning("deletion notification: eBay's key is unavailable", reason=str(exc))
            raise Unavailable(
                "eBay's signing key cannot be fetched right now; retry later",
                headers={"Retry-After": "60"},
            ) from None
        if not verify(key, header, body):
            raise self._refused("the signature does not match the notification")
        try:
            message = DeletionMessage.model_validate_json(body)
        except ValidationError:
            # Signed by eBay, yet not what the topic's schema says: say so, change nothing.
            raise InvalidInput("the notification is not a marketplace account deletion") from None
        if message.metadata.topic != TOPIC:
            log.info(
                "eBay notification of another topic acknowledged", topic=message.metadata.topic[:60]
            )
            return DeletionResult(message.notification.notificationId, False, 0)
        return await self._purge(message.notification, request)

    def _admit(self) -> None:
        wait = self.requests.take()
        if wait is not None:
            raise TooManyRequests(
                "too many requests to the notification endpoint",
                headers={"Retry-After": str(max(1, round(wait + 0.5)))},
            )

    @staticmethod
    def _refused(reason: str) -> PreconditionFailed:
        log.warning("deletion notification refused", reason=reason)
        return PreconditionFailed(f"notification refused: {reason}; nothing was changed")

    async def _purge(self, notification: _Notification, request: Request) -> DeletionResult:
        data = notification.data
        now = utcnow()
        request_id = request.scope.get("state", {}).get("log_context", {}).get("request_id")
        async with unit_of_work(self._sessions) as session:
            first = await repo.claim_notification(
                session, notification.notificationId, notification.eventDate
            )
            if not first:
                return DeletionResult(notification.notificationId, True, 0)
            accounts = await repo.accounts_of_seller(session, data.userId, data.eiasToken)
            for account in accounts:
                await repo.purge_account(session, account, now)
                add_audit(
                    session,
                    org_id=account.org_id,
                    actor=ACTOR,
                    action="account.deleted_by_ebay",
                    account_id=account.id,
                    house_name=account.house_name,
                    request_id=str(request_id) if request_id else None,
                    details={"notification_id": notification.notificationId},
                )
                enqueue_event(
                    session,
                    AccountDeletedByEbay(
                        org_id=account.org_id,
                        account_id=account.id,
                        house_name=account.house_name,
                        notification_id=notification.notificationId,
                        event_date=notification.eventDate,
                    ),
                    self._namespace,
                )
            if accounts:
                await repo.scrub_outbox(
                    session, [data.userId, data.username or "", data.eiasToken or ""]
                )
            await repo.finish_notification(session, notification.notificationId, len(accounts))
            await session.flush()
        for account in accounts:
            log.info(
                "account deleted by eBay: purged to a tombstone",
                account_id=str(account.id),
                org_id=str(account.org_id),
                notification_id=notification.notificationId,
            )
        if not accounts:
            log.info(
                "deletion notification for a seller we never connected",
                notification_id=notification.notificationId,
            )
        return DeletionResult(notification.notificationId, False, len(accounts))
