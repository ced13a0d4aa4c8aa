"""What the eBay client returns: typed results, each with the metadata of the call that made it.

Tokens are ``SecretStr``: their ``repr`` and ``str`` show ``**********``, never the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import SecretStr

from connector_common.ebay.sites import Site


@dataclass(frozen=True)
class CallMeta:
    """One HTTP call to eBay, as seen on the wire (no token, no auth header, no body)."""

    api: str  # "oauth", "trading", "identity", "analytics"
    operation: str  # e.g. "refresh_token", "GetUser", "getUser"
    http_status: int | None
    latency_ms: float
    request_id: str | None = None  # X-EBAY-C-REQUEST-ID, else rlogid
    rlogid: str | None = None
    ebay_headers: dict[str, str] = field(default_factory=dict)
    rate_limit_remaining: int | None = None
    attempt: int = 1


@dataclass(frozen=True)
class UserToken:
    """A user access token (and the refresh token, when eBay sent one)."""

    access_token: SecretStr
    access_expires_at: datetime
    refresh_token: SecretStr | None  # None: eBay sent none, keep the one you have
    refresh_expires_at: datetime | None
    token_type: str
    meta: CallMeta
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AppToken:
    """An application (client credentials) access token."""

    access_token: SecretStr
    expires_at: datetime
    token_type: str
    scopes: tuple[str, ...]
    meta: CallMeta


@dataclass(frozen=True)
class TradingUser:
    """Trading ``GetUser`` for the token's own user."""

    user_id: str  # Trading UserID (the username; it can change)
    eias_token: str | None  # stable id
    site_code: str | None  # registration site, SiteCodeType ("UK")
    site: Site | None  # from the site table, None if eBay names a site we do not know
    status: str | None
    registration_date: datetime | None
    email: str | None
    seller_good_standing: bool | None
    store_owner: bool | None
    meta: CallMeta


@dataclass(frozen=True)
class IdentityUser:
    """Commerce Identity ``getUser``."""

    user_id: str  # immutable
    username: str | None
    account_type: str | None  # BUSINESS | INDIVIDUAL
    registration_marketplace_id: str | None
    status: str | None  # CONFIRMED, UNCONFIRMED, ACCOUNTONHOLD, UNDETERMINED
    meta: CallMeta


@dataclass(frozen=True)
class Rate:
    """One quota window."""

    count: int | None
    limit: int | None
    remaining: int | None
    reset: datetime | None
    time_window_seconds: int | None


@dataclass(frozen=True)
class RateLimitResource:
    """A resource of an API and its quotas."""

    name: str
    rates: tuple[Rate, ...]


@dataclass(frozen=True)
class RateLimitApi:
    """An API's quotas (Developer Analytics ``rateLimits[]``)."""

    api_context: str
    api_name: str
    api_version: str | None
    resources: tuple[RateLimitResource, ...]


@dataclass(frozen=True)
class RateLimits:
    """Developer Analytics answer; empty when eBay answered 204 No Content."""

    apis: tuple[RateLimitApi, ...]
    meta: CallMeta

    def lowest_remaining(self) -> int | None:
        """The smallest ``remaining`` across every quota, or None."""
        values = [
            rate.remaining
            for api in self.apis
            for resource in api.resources
            for rate in resource.rates
            if rate.remaining is not None
        ]
        return min(values) if values else None


@dataclass(frozen=True)
class NotificationPublicKey:
    """Notification API ``getPublicKey``: a PEM (as eBay sends it) and how it signs."""

    pem: str  # one line, as eBay sends it; see connector_common.ebay.parsers.pem_lines
    algorithm: str  # "ECDSA"
    digest: str  # "SHA1"
    meta: CallMeta
