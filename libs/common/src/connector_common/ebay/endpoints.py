"""Every eBay URL the client calls, from one table per environment."""

from __future__ import annotations

from dataclasses import dataclass

from connector_common.settings import EbaySettings

# (auth host: consent page, api host: OAuth token + Trading + Analytics, apiz host: Identity)
HOSTS: dict[str, tuple[str, str, str]] = {
    "production": ("https://auth.ebay.com", "https://api.ebay.com", "https://apiz.ebay.com"),
    "sandbox": (
        "https://auth.sandbox.ebay.com",
        "https://api.sandbox.ebay.com",
        "https://apiz.sandbox.ebay.com",
    ),
}


@dataclass(frozen=True)
class Endpoints:
    """Absolute URLs of the eBay operations we use."""

    authorize: str
    token: str
    trading: str
    identity_user: str
    app_rate_limit: str
    user_rate_limit: str
    notification_public_key: str  # + {kid}

    @classmethod
    def from_hosts(cls, auth: str, api: str, apiz: str) -> Endpoints:
        """Paths are the same everywhere; only hosts differ."""
        return cls(
            authorize=f"{auth}/oauth2/authorize",
            token=f"{api}/identity/v1/oauth2/token",
            trading=f"{api}/ws/api.dll",
            # Identity lives on the apiz host, with a trailing slash.
            identity_user=f"{apiz}/commerce/identity/v1/user/",
            app_rate_limit=f"{api}/developer/analytics/v1_beta/rate_limit/",
            user_rate_limit=f"{api}/developer/analytics/v1_beta/user_rate_limit/",
            notification_public_key=f"{api}/commerce/notification/v1/public_key/",
        )


def endpoints_for(settings: EbaySettings) -> Endpoints:
    """The URLs for the configured environment; ``local`` sends everything to the sandbox."""
    if settings.environment == "local":
        base = settings.local_base_url.rstrip("/")
        return Endpoints.from_hosts(base, base, base)
    return Endpoints.from_hosts(*HOSTS[settings.environment])
