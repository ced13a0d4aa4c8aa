"""The eBay client: typed calls, typed errors, retries, a shared circuit breaker, telemetry.

Usage::

    client = EbayClient(settings.ebay, breaker=CircuitBreaker.from_settings(
        settings.ebay, PostgresBreakerStore(session_factory)))
    token = await client.refresh_access_token(refresh_token, scopes, account_key=str(account.id))
    user = await call_with_token_refresh(
        lambda t: client.get_user(t, site_id=account.site_id, account_key=str(account.id)),
        access_token, refresh)
    await client.aclose()

See ``docs/ebay-client.md``.
"""

from connector_common.ebay.breaker import (
    BreakerSnapshot,
    BreakerStore,
    CircuitBreaker,
    MemoryBreakerStore,
    Permit,
    PostgresBreakerStore,
    counts_as_failure,
)
from connector_common.ebay.client import APP_SCOPE, EbayClient
from connector_common.ebay.endpoints import Endpoints, endpoints_for
from connector_common.ebay.errors import (
    AccessTokenRejected,
    CircuitOpen,
    EbayError,
    InvalidGrant,
    PermanentError,
    RateLimited,
    ReauthenticationRequired,
    SellerSuspended,
    TransientError,
)
from connector_common.ebay.models import (
    AppToken,
    CallMeta,
    IdentityUser,
    Rate,
    RateLimitApi,
    RateLimitResource,
    RateLimits,
    TradingUser,
    UserToken,
)
from connector_common.ebay.refresh_retry import call_with_token_refresh
from connector_common.ebay.sites import (
    SITES,
    Site,
    UnknownSiteError,
    site_by_code,
    site_by_id,
    site_for_marketplace,
    sites_for_marketplace,
)

__all__ = [
    "APP_SCOPE",
    "SITES",
    "AccessTokenRejected",
    "AppToken",
    "BreakerSnapshot",
    "BreakerStore",
    "CallMeta",
    "CircuitBreaker",
    "CircuitOpen",
    "EbayClient",
    "EbayError",
    "Endpoints",
    "IdentityUser",
    "InvalidGrant",
    "MemoryBreakerStore",
    "PermanentError",
    "Permit",
    "PostgresBreakerStore",
    "Rate",
    "RateLimitApi",
    "RateLimitResource",
    "RateLimited",
    "RateLimits",
    "ReauthenticationRequired",
    "SellerSuspended",
    "Site",
    "TradingUser",
    "TransientError",
    "UnknownSiteError",
    "UserToken",
    "call_with_token_refresh",
    "counts_as_failure",
    "endpoints_for",
    "site_by_code",
    "site_by_id",
    "site_for_marketplace",
    "sites_for_marketplace",
]
