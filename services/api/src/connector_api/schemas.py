"""Request and response bodies of the REST API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from connector_common.status import AccountStatus

HOUSE_NAME_MAX = 100
PURPOSE_MAX = 500
# Format characters a name legitimately needs: zero-width (non-)joiners (Persian, Indic
# scripts, emoji sequences) and the tag characters of subdivision flag emoji.
_NAME_FORMAT_CHARS = frozenset({"\u200c", "\u200d"}) | {chr(c) for c in range(0xE0020, 0xE0080)}


def _clean_text(value: str, *, single_line: bool) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    for char in value:
        category = unicodedata.category(char)
        if category == "Cc" and not (not single_line and char in "\n\t"):
            raise ValueError("must not contain control characters")
    return value


def _house_name(value: str) -> str:
    value = _clean_text(value, single_line=True)
    if not 1 <= len(value) <= HOUSE_NAME_MAX:
        raise ValueError(f"must be 1 to {HOUSE_NAME_MAX} characters after trimming spaces")
    # A name is shown in lists, pages, logs and events, and must be unique per org: invisible
    # characters (zero-width spaces, BOM), direction overrides and line separators would make
    # blank names, names that read as something else, or look-alikes of an existing name.
    for char in value:
        category = unicodedata.category(char)
        if category in ("Zl", "Zp", "Cs") or (category == "Cf" and char not in _NAME_FORMAT_CHARS):
            raise ValueError(
                f"must not contain invisible or formatting characters (U+{ord(char):04X})"
            )
    if not any(unicodedata.category(char)[0] in "LNPS" for char in value):
        raise ValueError("must contain at least one visible letter, digit or symbol")
    return value


def _purpose(value: str) -> str:
    value = _clean_text(value, single_line=False)
    if len(value) > PURPOSE_MAX:
        raise ValueError(f"must be at most {PURPOSE_MAX} characters")
    return value


def printable(value: str) -> str:
    """Refuse control characters (PostgreSQL cannot even store a NUL in text)."""
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise ValueError("must not contain control characters")
    return value


# A person as the audit trail records them (a JWT subject) or a filter on one.
Actor = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(printable)]
# Bounded before cleaning too, so a huge value is refused without being processed; the same
# bound as after cleaning, so the OpenAPI document states the limit that holds.
HouseName = Annotated[str, Field(max_length=HOUSE_NAME_MAX), AfterValidator(_house_name)]
Purpose = Annotated[str, Field(max_length=PURPOSE_MAX), AfterValidator(_purpose)]
# A purpose to filter by: what a stored purpose may be (a NUL would fail in PostgreSQL).
PurposeFilter = Annotated[str, AfterValidator(_purpose)]
# Text to search names for: one line, no control characters (a NUL would fail in PostgreSQL).
SearchText = Annotated[str, AfterValidator(lambda v: _clean_text(v, single_line=True))]


class Input(BaseModel):
    """Request bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class ConnectRequest(Input):
    house_name: HouseName = Field(description="Your name for this seller account, unique per org.")
    purpose: Purpose = Field(default="", description="What the account is used for.")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"house_name": "Warehouse-A", "purpose": "UK orders"}]},
    )


class AccountUpdate(Input):
    house_name: HouseName | None = None
    purpose: Purpose | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"house_name": "Montreal"}, {"purpose": "returns"}]},
    )

    @model_validator(mode="after")
    def _something(self) -> AccountUpdate:
        if self.house_name is None and self.purpose is None:
            raise ValueError("give house_name, purpose or both")
        return self


class ConnectStarted(BaseModel):
    consent_url: str = Field(description="Send the seller's browser here (eBay's consent page).")
    expires_at: datetime = Field(description="The consent must be completed before this time.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "consent_url": "https://auth.ebay.com/oauth2/authorize?client_id=...",
                    "expires_at": "2026-01-01T12:10:00Z",
                }
            ]
        }
    )


class TokenInfo(BaseModel):
    """Metadata about the account's tokens; never the tokens themselves."""

    access_expires_at: datetime | None
    refresh_expires_at: datetime | None
    last_refreshed_at: datetime | None
    last_refresh_error: str | None
    consecutive_failures: int
    reconnect_required_at: datetime | None
    retry_at: datetime | None
    refresh_enabled: bool
    scopes: list[str]


class LastHealth(BaseModel):
    checked_at: datetime
    outcome: str
    latency_ms: int | None
    error: str | None


class Account(BaseModel):
    id: uuid.UUID
    house_name: str
    purpose: str
    # The eBay details are null only on an account deleted by eBay (status deleted_by_ebay).
    ebay_user_id: str | None
    username: str | None = Field(description="The seller's current eBay username.")
    marketplace_id: str | None
    site_id: int | None
    site_code: str | None
    is_active: bool
    status: AccountStatus
    connected_at: datetime
    created_at: datetime
    updated_at: datetime
    deactivated_at: datetime | None
    deleted_by_ebay_at: datetime | None = Field(
        default=None,
        description="When eBay told us the seller deleted their eBay account (a tombstone).",
    )
    next_health_check_at: datetime | None
    token: TokenInfo | None
    last_health: LastHealth | None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5f0c8a52-3f55-4a54-a3a3-7d1f7e0b7a11",
                    "house_name": "Warehouse-A",
                    "purpose": "UK orders",
                    "ebay_user_id": "q1w2e3r4t5",
                    "username": "warehouse_a_uk",
                    "marketplace_id": "EBAY_GB",
                    "site_id": 3,
                    "site_code": "UK",
                    "is_active": True,
                    "status": "healthy",
                    "connected_at": "2026-01-01T12:00:00Z",
                    "created_at": "2026-01-01T12:00:00Z",
                    "updated_at": "2026-01-01T12:00:00Z",
                    "deactivated_at": None,
                    "next_health_check_at": "2026-01-01T12:15:00Z",
                    "token": {
                        "access_expires_at": "2026-01-01T14:00:00Z",
                        "refresh_expires_at": "2027-07-01T12:00:00Z",
                        "last_refreshed_at": "2026-01-01T12:00:00Z",
                        "last_refresh_error": None,
                        "consecutive_failures": 0,
                        "reconnect_required_at": None,
                        "retry_at": None,
                        "refresh_enabled": True,
                        "scopes": ["https://api.ebay.com/oauth/api_scope"],
                    },
                    "last_health": {
                        "checked_at": "2026-01-01T12:00:05Z",
                        "outcome": "healthy",
                        "latency_ms": 182,
                        "error": None,
                    },
                }
            ]
        }
    )


class OrgInfo(BaseModel):
    id: uuid.UUID = Field(description="Our id of the organisation: NATS subjects use it.")
    external_id: str = Field(description="The identity provider's `org_id` claim.")
    name: str


class EventSubscription(BaseModel):
    subject_prefix: str = Field(description="Every event of the org is under this subject.")
    subscribe: str = Field(description="The wildcard subject that receives all of them.")
    stream: str = Field(description="The JetStream stream that keeps them.")


class Me(BaseModel):
    """Who the caller is, and where their organisation's events are published."""

    subject: str
    roles: list[str]
    can_write: bool
    org: OrgInfo
    events: EventSubscription

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "subject": "alice",
                    "roles": ["admin"],
                    "can_write": True,
                    "org": {
                        "id": "0b6c1c1e-8d7a-4f39-9d69-3f1f4b1f7c2a",
                        "external_id": "demo",
                        "name": "demo",
                    },
                    "events": {
                        "subject_prefix": "ebay.events.0b6c1c1e-8d7a-4f39-9d69-3f1f4b1f7c2a",
                        "subscribe": "ebay.events.0b6c1c1e-8d7a-4f39-9d69-3f1f4b1f7c2a.>",
                        "stream": "EBAY-EVENTS",
                    },
                }
            ]
        }
    )


class AccountSummary(BaseModel):
    """The org's accounts at a glance: how many in each status, and the values to filter by."""

    total: int
    by_status: dict[AccountStatus, int] = Field(description="Every status, zero included.")
    marketplaces: list[str] = Field(description="Marketplace ids the org's accounts are on.")
    purposes: list[str] = Field(description="Distinct purposes (at most 200).")


class AccountPage(BaseModel):
    items: list[Account]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


class HealthCheckItem(BaseModel):
    id: int
    checked_at: datetime
    outcome: str
    latency_ms: int | None
    http_status: int | None
    ebay_error_code: str | None
    ebay_request_id: str | None
    api: str | None
    detail: str | None


class HealthCheckPage(BaseModel):
    items: list[HealthCheckItem]
    next_cursor: str | None


class WorkQueued(BaseModel):
    """What was asked of the workers."""

    command_id: uuid.UUID
    kind: Literal["refresh", "health"]
    account_id: uuid.UUID
    reason: str
    dedup_id: str = Field(description="JetStream Nats-Msg-Id: repeats with the same id collapse.")
    token_version: int | None = None
    slot: int | None = None


class SortKey(StrEnum):
    HOUSE_NAME = "house_name"
    HOUSE_NAME_DESC = "-house_name"
    CREATED_AT = "created_at"
    CREATED_AT_DESC = "-created_at"
    TOKEN_EXPIRES_AT = "token_expires_at"  # noqa: S105 (a column name)
    TOKEN_EXPIRES_AT_DESC = "-token_expires_at"  # noqa: S105
    LAST_HEALTH_AT = "last_health_at"
    LAST_HEALTH_AT_DESC = "-last_health_at"
    # By the status rules' precedence (connector_common.status.AccountStatus order).
    STATUS = "status"
    STATUS_DESC = "-status"


class FieldChange(BaseModel):
    before: str | int | bool | None
    after: str | int | bool | None


AuditDetail = str | int | bool | None


class AuditEvent(BaseModel):
    """One entry of the audit trail: who did what, to which account, what changed."""

    id: int = Field(description="Increasing: newer entries have larger ids.")
    occurred_at: datetime
    actor: str = Field(description="The `sub` of the person (or tool) who acted.")
    action: str = Field(description="e.g. `account.renamed`, `session.started`.")
    account_id: uuid.UUID | None
    house_name: str | None = Field(description="The account's house name at the time.")
    changes: dict[str, FieldChange] = Field(
        description="Each changed field, before and after (no secret, no seller data)."
    )
    details: dict[str, AuditDetail] = Field(
        description="Context of the action, e.g. `marketplace_id`, `token_version`."
    )
    request_id: str | None = Field(description="The request's `X-Request-ID` (access log).")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1042,
                    "occurred_at": "2026-01-01T12:00:00Z",
                    "actor": "alice",
                    "action": "account.renamed",
                    "account_id": "5f0c8a52-3f55-4a54-a3a3-7d1f7e0b7a11",
                    "house_name": "Montreal",
                    "changes": {"house_name": {"before": "Warehouse-A", "after": "Montreal"}},
                    "details": {},
                    "request_id": "4bf92f3577b34da6",
                }
            ]
        }
    )


class AuditEventPage(BaseModel):
    items: list[AuditEvent]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer has this shape."""

    error: str = Field(description="A stable machine-readable code, e.g. `not_found`.")
    message: str = Field(description="What went wrong, for a person.")
    fields: list[FieldError] = Field(default_factory=list)
    request_id: str | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "conflict",
                    "message": "house name 'Warehouse-A' is already used by another active account",
                    "fields": [],
                    "request_id": "4bf92f3577b34da6",
                }
            ]
        }
    )


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses=` for the given error status codes."""
    descriptions = {
        401: "Missing or invalid bearer token (see `WWW-Authenticate`).",
        403: "The token's role may not do this (viewers only read).",
        404: "No such account in your organisation.",
        409: "The change conflicts with the account's state or another account.",
        422: "The request is invalid; `fields` says which field and why.",
        429: "Too many requests: wait for `Retry-After` seconds.",
        502: "eBay answered with an error.",
        503: "A dependency (database, NATS, eBay) is not reachable.",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}


class ChallengeAnswer(BaseModel):
    """eBay's endpoint challenge answer."""

    challengeResponse: str


class ReportedLimit(BaseModel):
    """What eBay's Developer Analytics said (its own window: midnight US Pacific)."""

    daily_limit: int
    count: int | None
    remaining: int | None
    reset: datetime | None
    fetched_at: datetime


class BudgetBucket(BaseModel):
    """One eBay API (or OAuth grant) today."""

    bucket: str = Field(description="e.g. trading, oauth.refresh_token")
    limit: int
    limit_source: Literal["ebay", "settings"]
    used: int
    remaining: int
    user_reserve: int = Field(description="Kept for what people ask for; never scheduled.")
    ebay_reported: ReportedLimit | None


class WorkBudget(BaseModel):
    """Whether a kind of scheduled work is held back by the budget."""

    state: Literal["open", "paced", "deferred"]
    reason: str | None
    deferred_until: datetime | None
    allowed_by_now: int | None = Field(
        default=None, description="Health checks: calls the pace allows so far today."
    )


class EbayBudget(BaseModel):
    """eBay's daily call budget of this installation's eBay app (shared by every org)."""

    day: date
    resets_at: datetime
    enabled: bool
    buckets: list[BudgetBucket]
    health_checks: WorkBudget
    refreshes: WorkBudget
