"""Settings for eBay's platform rules: the daily call budget and account-deletion notifications.

``CONNECTOR_EBAY__BUDGET__*`` and ``CONNECTOR_EBAY__DELETION__*`` (groups of
:class:`connector_common.settings.EbaySettings`). Defaults are eBay's documented defaults
(docs/ebay-compliance.md); a higher tier granted by eBay is read from Developer Analytics
``getRateLimits`` at run time, or set here.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, SecretStr, field_validator

VERIFICATION_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,80}$")


class BudgetSettings(BaseModel):
    """eBay's daily call limits per application, and what is kept in reserve."""

    enabled: bool = True  # False: count calls, never hold work back
    # Calls per app per UTC day. Trading 5,000 and the OAuth grants are eBay's documented
    # defaults; Identity's limit is not documented (5,000 chosen, like Trading).
    trading: int = Field(default=5_000, ge=0)
    identity: int = Field(default=5_000, ge=0)
    analytics: int = Field(default=5_000, ge=0)
    notification: int = Field(default=10_000, ge=0)
    refresh_token: int = Field(default=50_000, ge=0)
    client_credentials: int = Field(default=1_000, ge=0)
    authorization_code: int = Field(default=10_000, ge=0)
    # Kept for what people ask for (connect, reconnect, "Refresh now", "Check now"): the
    # scheduler never spends it.
    user_reserve_percent: float = Field(default=5.0, ge=0, le=50)
    # Of the refresh_token grant's budget, what health checks (which may refresh a rejected
    # token) never touch: at least this share, and at least what the scheduled refreshes are
    # projected to need for the rest of the day.
    refresh_reserve_percent: float = Field(default=20.0, ge=0, le=90)
    # Health checks are paced over the UTC day; this share of the day's budget may be spent
    # ahead of the pace at any time (so a new day does not start with a trickle).
    pace_burst_percent: float = Field(default=2.0, ge=0, le=100)
    # Prefer the limits eBay reports through Developer Analytics getRateLimits (app token).
    use_ebay_limits: bool = True
    # How often one health checker of all reads them (they also feed the ebay.rate_limit.*
    # gauges): 288 Developer Analytics calls a day at 300 s, of its 5,000.
    limits_refresh_seconds: float = Field(default=300.0, ge=60)
    # Every process adds its buffered counts to PostgreSQL this often (and when it stops).
    flush_seconds: float = Field(default=1.0, gt=0, le=60)

    def configured_limit(self, bucket: str) -> int | None:
        """The configured daily limit of a bucket (``oauth.refresh_token`` -> refresh_token)."""
        name = bucket.removeprefix("oauth.")
        value = getattr(self, name, None)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class DeletionSettings(BaseModel):
    """eBay Marketplace Account Deletion notifications (the public endpoint of the API)."""

    # Given to eBay with the endpoint; 32-80 of [A-Za-z0-9_-] (eBay's rule).
    verification_token: SecretStr | None = None
    # The endpoint exactly as registered with eBay: the challenge hashes it byte for byte.
    # Default: {CONNECTOR_API__PUBLIC_URL}/ebay/notifications/account-deletion.
    endpoint_url: str | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    # The endpoint is public: requests beyond this rate (per API process) get 429.
    requests_per_second: float = Field(default=20.0, gt=0)
    burst: int = Field(default=100, ge=1)
    # eBay's public keys, cached per kid (eBay recommends about an hour).
    key_cache_seconds: float = Field(default=3600.0, gt=0)
    key_cache_size: int = Field(default=64, ge=1, le=10_000)
    # A kid eBay does not know is remembered as unknown this long (no refetch meanwhile).
    unknown_key_seconds: float = Field(default=300.0, gt=0)
    # Fetches of keys not in the cache, per API process and minute: a flood of made-up kids
    # cannot become a flood of getPublicKey calls.
    key_fetches_per_minute: int = Field(default=10, ge=1)

    @field_validator("verification_token")
    @classmethod
    def _token_format(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not VERIFICATION_TOKEN.match(value.get_secret_value()):
            # The message must not echo the value: it is a secret.
            raise ValueError("must be 32 to 80 characters, each a letter, digit, '_' or '-'")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an https:// URL (http:// only in development)")
        return value
