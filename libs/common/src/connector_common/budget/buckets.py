"""What eBay counts calls against: one bucket per API, and one per OAuth grant.

eBay limits calls per application per day, per API (Trading 5,000, ...) and, on the token
endpoint, per grant type (``refresh_token`` 50,000, ...). A call of the eBay client is named by
``(api, operation)`` (:class:`connector_common.ebay.instrumentation.CallSpec`); this maps it to
the budget it spends.
"""

from __future__ import annotations

TRADING = "trading"
IDENTITY = "identity"
ANALYTICS = "analytics"
NOTIFICATION = "notification"
REFRESH_GRANT = "oauth.refresh_token"
APP_GRANT = "oauth.client_credentials"
CODE_GRANT = "oauth.authorization_code"

BUCKETS: tuple[str, ...] = (
    TRADING,
    IDENTITY,
    ANALYTICS,
    NOTIFICATION,
    REFRESH_GRANT,
    APP_GRANT,
    CODE_GRANT,
)

# The client's OAuth operations and the grant each one uses.
_GRANTS = {
    "refresh_token": REFRESH_GRANT,
    "client_credentials": APP_GRANT,
    "exchange_code": CODE_GRANT,
}

# Developer Analytics (apiContext, apiName), lower-cased, -> bucket. Trading is one pool
# whatever its name (``api_context=tradingapi``).
_ANALYTICS = {
    ("commerce", "identity"): IDENTITY,
    ("commerce", "notification"): NOTIFICATION,
    ("developer", "analytics"): ANALYTICS,
}


def bucket_for(api: str, operation: str) -> str:
    """The budget a call spends: its API, or for the token endpoint its grant."""
    if api == "oauth":
        return _GRANTS.get(operation, f"oauth.{operation}")
    return api


def bucket_for_analytics(api_context: str, api_name: str) -> str | None:
    """The bucket of a Developer Analytics ``rateLimits[]`` entry, or None if we never call it."""
    context = api_context.lower()
    if context == "tradingapi":
        return TRADING
    return _ANALYTICS.get((context, api_name.lower()))
