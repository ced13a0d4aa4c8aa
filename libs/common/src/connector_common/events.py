"""The typed vocabulary on NATS: commands (imperative) and events (past tense).

Every message is a frozen pydantic model with ``extra="forbid"``, an id consumers can
de-duplicate on, the time it happened and a schema ``version``. Its subject is built next to
the model: events go to ``{ns}.events.{org_id}.{type}`` (one org = one subject prefix), work to
``{ns}.work.{kind}``. No message ever carries a token.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of every command and event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> bytes:
        """Canonical JSON bytes for NATS."""
        return self.model_dump_json().encode()


# ---------------------------------------------------------------------------------------------
# Commands: work for the workers, on the WorkQueue stream. They carry ids only.
# ---------------------------------------------------------------------------------------------


class Command(Message):
    """Work for a worker."""

    kind: ClassVar[str]
    command_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    requested_at: datetime = Field(default_factory=utcnow)
    version: Literal[1] = 1
    account_id: uuid.UUID
    org_id: uuid.UUID
    reason: Literal["scheduled", "manual", "connected", "reconnected", "retry"] = "scheduled"

    @classmethod
    def subject(cls, namespace: str) -> str:
        """Where this kind of work is published."""
        return f"{namespace}.work.{cls.kind}"


class RefreshToken(Command):
    """Refresh this account's access token."""

    kind: ClassVar[str] = "refresh"
    # The token version the request was made for; a newer version means "already done".
    token_version: int = Field(ge=0)

    def dedup_id(self) -> str:
        """Nats-Msg-Id: repeats for the same token version collapse in JetStream."""
        return f"refresh:{self.account_id}:{self.token_version}"


class CheckHealth(Command):
    """Check this account against eBay."""

    kind: ClassVar[str] = "health"
    # The time slot the check belongs to; repeats within one slot collapse.
    slot: int = Field(ge=0)

    def dedup_id(self) -> str:
        """Nats-Msg-Id: one check per account per slot."""
        return f"health:{self.account_id}:{self.slot}"


# ---------------------------------------------------------------------------------------------
# Events: what happened, on the Events stream, per org.
# ---------------------------------------------------------------------------------------------


class Event(Message):
    """Something that happened to an account."""

    type: ClassVar[str]
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=utcnow)
    version: Literal[1] = 1
    org_id: uuid.UUID
    account_id: uuid.UUID
    house_name: str  # the name at the time of the event: a rename does not rewrite history

    def subject(self, namespace: str) -> str:
        """Where this event is published: one subject prefix per org."""
        return f"{namespace}.events.{self.org_id}.{self.type}"

    def envelope(self) -> dict[str, Any]:
        """The payload with its type, as published."""
        return {"type": self.type, **self.model_dump(mode="json")}


class AccountEvent(Event):
    """Account lifecycle events, published by the API."""

    actor: str  # the person (JWT sub) who caused it


class AccountConnected(AccountEvent):
    type: ClassVar[str] = "account.connected"
    purpose: str
    ebay_user_id: str
    username: str | None
    marketplace_id: str
    site_id: int


class AccountReconnected(AccountConnected):
    type: ClassVar[str] = "account.reconnected"


class AccountRenamed(AccountEvent):
    type: ClassVar[str] = "account.renamed"
    old_house_name: str
    new_house_name: str


class AccountPurposeChanged(AccountEvent):
    type: ClassVar[str] = "account.purpose_changed"
    old_purpose: str
    new_purpose: str


class AccountDeactivated(AccountEvent):
    type: ClassVar[str] = "account.deactivated"


class AccountReactivated(AccountEvent):
    type: ClassVar[str] = "account.reactivated"


class AccountDeleted(AccountEvent):
    type: ClassVar[str] = "account.deleted"


class TokenRefreshed(Event):
    type: ClassVar[str] = "token.refreshed"
    access_expires_at: datetime
    token_version: int


class TokenRefreshFailed(Event):
    """Published once per failure streak, not once per retry."""

    type: ClassVar[str] = "token.refresh_failed"
    error_kind: Literal["rate_limited", "transient", "permanent", "circuit_open"]
    reason: str
    consecutive_failures: int
    retry_at: datetime | None


class ReconnectRequired(Event):
    """The seller must consent again (revoked consent, expired refresh token)."""

    type: ClassVar[str] = "account.reconnect_required"
    reason: str


class HealthChecked(Event):
    type: ClassVar[str] = "health.checked"
    outcome: Literal["healthy", "unhealthy"]
    checked_at: datetime
    latency_ms: int | None
    http_status: int | None
    ebay_error_code: str | None
    ebay_request_id: str | None
    api: str | None
    reason: str | None = None


class HealthChanged(Event):
    """Only when the verdict differs from the previous one."""

    type: ClassVar[str] = "health.changed"
    previous_outcome: Literal["healthy", "unhealthy"] | None
    outcome: Literal["healthy", "unhealthy"]
    reason: str | None = None


class AccountDeletedByEbay(Event):
    """eBay told us the seller deleted their eBay account: its data is purged, a tombstone
    without personal data remains. Carries no seller data (not even the eBay user id)."""

    type: ClassVar[str] = "account.deleted_by_ebay"
    notification_id: str  # eBay's notificationId (not personal data)
    event_date: datetime | None  # when eBay says the deletion happened


class AccountUsernameChanged(Event):
    """The seller's eBay username changed (the eBay user id did not); published once."""

    type: ClassVar[str] = "account.username_changed"
    old_username: str | None
    new_username: str
    source: Literal["health_check", "reconnect"]


class AccountReconsentDue(Event):
    """The refresh token ends soon: the seller must consent again (Reconnect) before then.

    Published once per account and refresh token, not once per scheduler tick.
    """

    type: ClassVar[str] = "account.reconsent_due"
    refresh_expires_at: datetime
    days_left: int


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        AccountConnected,
        AccountReconnected,
        AccountRenamed,
        AccountPurposeChanged,
        AccountDeactivated,
        AccountReactivated,
        AccountDeleted,
        TokenRefreshed,
        TokenRefreshFailed,
        ReconnectRequired,
        HealthChecked,
        HealthChanged,
        AccountDeletedByEbay,
        AccountUsernameChanged,
        AccountReconsentDue,
    )
}


# ---------------------------------------------------------------------------------------------
# Application events: about the connector's eBay app as a whole, not one org's account.
# ---------------------------------------------------------------------------------------------

APP_SUBJECT_PART = "app"  # in place of an org id (org ids are UUIDs: no clash)


class AppEvent(Message):
    """Something that happened to the whole installation (every org shares one eBay app)."""

    type: ClassVar[str]
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=utcnow)
    version: Literal[1] = 1

    def subject(self, namespace: str) -> str:
        """``{ns}.events.app.{type}``: operators subscribe to it; no org sees another's data."""
        return f"{namespace}.events.{APP_SUBJECT_PART}.{self.type}"

    def envelope(self) -> dict[str, Any]:
        """The payload with its type, as published."""
        return {"type": self.type, **self.model_dump(mode="json")}


class BudgetExhausted(AppEvent):
    """A daily eBay call budget ran out: this kind of work waits for the next UTC day.

    Published once per UTC day and kind of work, whatever the number of accounts or replicas.
    """

    type: ClassVar[str] = "budget.exhausted"
    work: Literal["health", "refresh"]
    bucket: str  # e.g. "trading", "oauth.refresh_token"
    day: date  # the UTC day whose budget ran out
    daily_limit: int
    used: int
    deferred_until: datetime


APP_EVENT_TYPES: dict[str, type[AppEvent]] = {cls.type: cls for cls in (BudgetExhausted,)}


def event_payload(event: Event | AppEvent) -> bytes:
    """The JSON published for an event: its fields plus its ``type``."""
    return json.dumps(event.envelope(), separators=(",", ":")).encode()


def parse_event(payload: bytes) -> Event:
    """Parse a published event payload back into its model (raises ValueError when invalid)."""
    raw = json.loads(payload)
    if not isinstance(raw, dict):
        raise ValueError("an event payload must be a JSON object")
    cls = EVENT_TYPES.get(str(raw.pop("type", "")))
    if cls is None:
        raise ValueError("unknown or missing event type")
    return cls.model_validate(raw)


def parse_app_event(payload: bytes) -> AppEvent:
    """Parse an application event payload (subject ``{ns}.events.app.*``)."""
    raw = json.loads(payload)
    if not isinstance(raw, dict):
        raise ValueError("an event payload must be a JSON object")
    cls = APP_EVENT_TYPES.get(str(raw.pop("type", "")))
    if cls is None:
        raise ValueError("unknown or missing application event type")
    return cls.model_validate(raw)
