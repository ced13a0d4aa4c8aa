"""What the sandbox knows about: apps, sellers, consents, tokens, codes, call log lines."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ebay_sandbox.sites import SandboxSite, site_for

ACCESS_TOKEN_LIFETIME = 7200
REFRESH_TOKEN_LIFETIME = 47_304_000
CODE_LIFETIME = 299
CALL_LOG_LIMIT = 500_000  # a bounded log: benchmarks make millions of calls

API_SCOPE = "https://api.ebay.com/oauth/api_scope"
# Scopes a seller can consent to (a subset of eBay's list: enough to reject made-up ones).
USER_SCOPES = frozenset(
    {API_SCOPE}
    | {
        f"{API_SCOPE}/{name}"
        for name in (
            "sell.account",
            "sell.account.readonly",
            "sell.inventory",
            "sell.inventory.readonly",
            "sell.fulfillment",
            "sell.fulfillment.readonly",
            "sell.marketing",
            "sell.marketing.readonly",
            "sell.analytics.readonly",
            "sell.finances",
            "sell.payment.dispute",
            "sell.reputation",
            "sell.reputation.readonly",
            "sell.stores",
            "sell.stores.readonly",
            "sell.item",
            "sell.item.draft",
            "commerce.identity.readonly",
            "commerce.identity.name.readonly",
            "commerce.identity.address.readonly",
            "commerce.identity.email.readonly",
            "commerce.identity.phone.readonly",
            "commerce.notification.subscription",
            "commerce.notification.subscription.readonly",
        )
    }
)
APP_SCOPES = frozenset({API_SCOPE, f"{API_SCOPE}/buy.item.feed", f"{API_SCOPE}/buy.marketing"})
IDENTITY_SCOPE = f"{API_SCOPE}/commerce.identity.readonly"


class SandboxError(ValueError):
    """A control API request the sandbox cannot honour (the message says why)."""


@dataclass
class AppRegistration:
    """An eBay developer app with one RuName."""

    client_id: str
    client_secret: str
    ru_name: str
    accept_url: str
    decline_url: str | None = None

    def record(self) -> dict[str, Any]:
        """What the state file keeps."""
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "ru_name": self.ru_name,
            "accept_url": self.accept_url,
            "decline_url": self.decline_url,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AppRegistration:
        """Back from the state file."""
        return cls(**record)


@dataclass
class SandboxConfig:
    """How the sandbox starts; ``reset`` returns to exactly this."""

    access_token_lifetime: int = ACCESS_TOKEN_LIFETIME
    refresh_token_lifetime: int = REFRESH_TOKEN_LIFETIME
    code_lifetime: int = CODE_LIFETIME
    apps: list[AppRegistration] = field(default_factory=list)
    demo_sellers: bool = True
    rotate_refresh_tokens: bool = False
    rate_limit_headers: bool = True
    # Where the state is kept across restarts (SQLite); None keeps it in memory only.
    state_file: Path | None = None


@dataclass
class Seller:
    """An eBay seller account."""

    user_id: str  # Identity userId: immutable
    username: str  # Trading UserID: can change
    site: SandboxSite
    eias_token: str
    email: str
    account_type: str = "INDIVIDUAL"
    store_owner: bool = False
    suspended: bool = False
    registration_date: datetime = field(
        default_factory=lambda: datetime(2017, 11, 1, 20, 21, 9, tzinfo=UTC)
    )

    def public(self) -> dict[str, Any]:
        """The control API's view of a seller."""
        return {
            "username": self.username,
            "user_id": self.user_id,
            "eias_token": self.eias_token,
            "site_id": self.site.site_id,
            "site_code": self.site.code,
            "marketplace_id": self.site.marketplace_id,
            "email": self.email,
            "account_type": self.account_type,
            "store_owner": self.store_owner,
            "suspended": self.suspended,
        }

    def record(self) -> dict[str, Any]:
        """What the state file keeps."""
        return {
            "user_id": self.user_id,
            "username": self.username,
            "site_id": self.site.site_id,
            "eias_token": self.eias_token,
            "email": self.email,
            "account_type": self.account_type,
            "store_owner": self.store_owner,
            "suspended": self.suspended,
            "registration_date": self.registration_date.isoformat(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Seller:
        """Back from the state file."""
        site = site_for(record["site_id"])
        if site is None:
            raise ValueError(f"unknown site {record['site_id']!r} in the state file")
        return cls(
            user_id=record["user_id"],
            username=record["username"],
            site=site,
            eias_token=record["eias_token"],
            email=record["email"],
            account_type=record["account_type"],
            store_owner=record["store_owner"],
            suspended=record["suspended"],
            registration_date=datetime.fromisoformat(record["registration_date"]),
        )


@dataclass
class Grant:
    """A seller's consent to an app: what a refresh token stands for."""

    seller_id: str
    client_id: str
    scopes: frozenset[str]
    refresh_token: str
    refresh_expires_at: float
    revoked: bool = False
    # Stable across refresh token rotation: how access tokens name their grant on disk.
    grant_id: str = field(default_factory=lambda: secrets.token_hex(8))

    def record(self) -> dict[str, Any]:
        """What the state file keeps."""
        return {
            "grant_id": self.grant_id,
            "seller_id": self.seller_id,
            "client_id": self.client_id,
            "scopes": sorted(self.scopes),
            "refresh_token": self.refresh_token,
            "refresh_expires_at": self.refresh_expires_at,
            "revoked": self.revoked,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Grant:
        """Back from the state file."""
        return cls(**{**record, "scopes": frozenset(record["scopes"])})


@dataclass
class AccessGrant:
    """An access token: a user token (with a grant) or an application token."""

    client_id: str
    scopes: frozenset[str]
    expires_at: float
    grant: Grant | None = None
    invalid_reason: str | None = None  # "expired", "invalid", "hard_expired", "revoked"

    def problem(self, now: float) -> str | None:
        """Why the token cannot be used right now, or None."""
        if self.invalid_reason:
            return self.invalid_reason
        if self.grant is not None and self.grant.revoked:
            return "revoked"
        if now >= self.expires_at:
            return "expired"
        return None

    def record(self) -> dict[str, Any]:
        """What the state file keeps (the grant by its id)."""
        return {
            "client_id": self.client_id,
            "scopes": sorted(self.scopes),
            "expires_at": self.expires_at,
            "grant_id": self.grant.grant_id if self.grant else None,
            "invalid_reason": self.invalid_reason,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], grants: dict[str, Grant]) -> AccessGrant:
        """Back from the state file; ``grants`` by grant id."""
        grant_id = record["grant_id"]
        return cls(
            client_id=record["client_id"],
            scopes=frozenset(record["scopes"]),
            expires_at=record["expires_at"],
            grant=grants.get(grant_id) if grant_id else None,
            invalid_reason=record["invalid_reason"],
        )


@dataclass
class Code:
    """An authorization code: single use, short-lived."""

    seller_id: str
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    used: bool = False

    def record(self) -> dict[str, Any]:
        """What the state file keeps."""
        return {
            "seller_id": self.seller_id,
            "client_id": self.client_id,
            "scopes": sorted(self.scopes),
            "expires_at": self.expires_at,
            "used": self.used,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Code:
        """Back from the state file."""
        return cls(**{**record, "scopes": frozenset(record["scopes"])})


@dataclass
class CallRecord:
    """One line of the call log."""

    at: float  # epoch seconds when the request arrived
    route: str
    method: str
    status: int
    outcome: str
    seller: str | None
    client_id: str | None
    request_id: str
    duration_ms: float

    def public(self) -> dict[str, Any]:
        """The call log's JSON view."""
        return {
            "at": self.at,
            "time": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="milliseconds"),
            "route": self.route,
            "method": self.method,
            "status": self.status,
            "outcome": self.outcome,
            "seller": self.seller,
            "client_id": self.client_id,
            "request_id": self.request_id,
            "duration_ms": round(self.duration_ms, 3),
        }


DEMO_SELLERS = (
    ("demo_us_seller", 0, "BUSINESS", True),
    ("demo_uk_seller", 3, "INDIVIDUAL", False),
    ("demo_de_seller", 77, "BUSINESS", True),
    ("demo_ca_seller", 2, "INDIVIDUAL", False),
    ("demo_au_seller", 15, "INDIVIDUAL", False),
    ("demo_motors_seller", 100, "BUSINESS", False),
)
