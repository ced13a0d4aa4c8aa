"""Settings of the API: the common ones plus the ``api`` group (``CONNECTOR_API__...``).

JWT validation follows RFC 8725: the accepted algorithms come from here, never from a token.
Keys come from a JWKS URL (production: the company's identity provider) or, only with
``CONNECTOR_ENV=development``, from a shared HS256 secret that ``connector token mint`` uses.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from connector_common.settings import CommonSettings, Environment, SettingsError, is_placeholder

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEV_ALGORITHM = "HS256"
DEV_ISSUER = "connector-dev"
DEV_AUDIENCE = "connector-api"
DELETION_PATH = "/ebay/notifications/account-deletion"


class JwtSettings(BaseModel):
    """How bearer tokens are checked (``CONNECTOR_API__JWT__...``)."""

    issuer: str = DEV_ISSUER
    audience: str = DEV_AUDIENCE
    # Pinned algorithms. Empty means: RS256 with a JWKS URL, HS256 with the dev secret.
    algorithms: Annotated[list[str], NoDecode] = Field(default_factory=list)
    jwks_url: str | None = None
    dev_secret: SecretStr | None = None
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    # Keys are re-read this often, and at most this often when a token names an unknown kid.
    jwks_cache_seconds: float = Field(default=600.0, gt=0)
    jwks_min_refresh_seconds: float = Field(default=30.0, ge=0)
    jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    # A request waits at most this long for a JWKS fetch in flight (then 503; the fetch goes on).
    jwks_max_wait_seconds: float = Field(default=2.0, gt=0, le=30)
    # After a failed fetch, no new one for 1 s, doubling up to this.
    jwks_backoff_max_seconds: float = Field(default=60.0, ge=1, le=3600)
    org_claim: str = "org_id"
    roles_claim: str = "roles"
    # A token verified this recently is trusted again without checking its signature (never
    # past its exp): clients send one token with many requests. 0 verifies every request.
    verified_cache_seconds: float = Field(default=30.0, ge=0, le=300)
    verified_cache_entries: int = Field(default=10_000, ge=1)

    @field_validator("algorithms", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [a for a in value.replace(",", " ").split() if a]
        return value

    @field_validator("dev_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (an HS256 key needs 256 bits)")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        for algorithm in self.algorithms:
            if algorithm.lower() == "none":
                raise ValueError("'none' is never an accepted JWT algorithm")
            if algorithm not in ASYMMETRIC_ALGORITHMS and algorithm != DEV_ALGORITHM:
                raise ValueError(f"unsupported JWT algorithm {algorithm!r}")
        symmetric = [a for a in self.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if self.jwks_url and symmetric:
            raise ValueError("a JWKS URL serves public keys: pin asymmetric algorithms only")
        if not self.jwks_url and self.algorithms and self.algorithms != [DEV_ALGORITHM]:
            raise ValueError("without a JWKS URL only the development HS256 secret is possible")
        return self

    @property
    def pinned_algorithms(self) -> list[str]:
        """The algorithms a token may use."""
        if self.algorithms:
            return list(self.algorithms)
        return ["RS256"] if self.jwks_url else [DEV_ALGORITHM]


class OidcSettings(BaseModel):
    """Optional OpenID Connect login for the admin page (``CONNECTOR_API__OIDC__...``)."""

    issuer: str | None = None  # discovery at {issuer}/.well-known/openid-configuration
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["openid", "profile"])
    algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["RS256"])
    timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("scopes", "algorithms", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [s for s in value.replace(",", " ").split() if s]
        return value

    @property
    def enabled(self) -> bool:
        """True when a person can log in through the identity provider."""
        return bool(self.issuer and self.client_id)


class RateLimitSettings(BaseModel):
    """Requests per minute (``CONNECTOR_API__RATE_LIMITS__...``); see docs/api.md."""

    enabled: bool = True
    # Per replica (in memory): with N replicas a client can reach N times these.
    per_address_per_minute: int = Field(default=1200, ge=1)
    per_org_per_minute: int = Field(default=1200, ge=1)
    # Shared by every replica (PostgreSQL): the routes an attacker would hammer.
    login_per_address_per_minute: int = Field(default=10, ge=1)
    connect_per_org_per_minute: int = Field(default=30, ge=1)
    callback_per_address_per_minute: int = Field(default=30, ge=1)


class SheddingSettings(BaseModel):
    """Load shedding (``CONNECTOR_API__SHEDDING__...``): past these bounds a replica answers 503
    with ``Retry-After`` at once instead of queueing (the probes are never shed)."""

    enabled: bool = True
    # Requests running at once; unset: the database pool's size (CONNECTOR_DATABASE__POOL_SIZE),
    # so that under load requests wait here, bounded, rather than opening and closing overflow
    # connections (a new PostgreSQL connection costs more CPU than a whole page of accounts).
    max_concurrent: int | None = Field(default=None, ge=1, le=10_000)
    # Requests waiting for a slot, each at most max_wait_seconds (a burst of a few hundred
    # waits; a sustained overload is answered 503 within max_wait_seconds).
    max_queued: int = Field(default=200, ge=0, le=100_000)
    max_wait_seconds: float = Field(default=1.0, gt=0, le=60)
    retry_after_seconds: int = Field(default=1, ge=1, le=3600)


class ApiGroup(BaseModel):
    """``CONNECTOR_API__*``."""

    public_url: str = "http://127.0.0.1:8000"
    jwt: JwtSettings = JwtSettings()
    oidc: OidcSettings = OidcSettings()
    # Signs admin sessions, CSRF tokens, flash messages and list cursors. Several replicas
    # must share it. Development generates one per process when it is missing.
    session_secret: SecretStr | None = None
    session_ttl_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)
    # An admin session unused this long ends (each page or action counts as use).
    session_idle_seconds: int = Field(default=30 * 60, ge=60, le=7 * 24 * 3600)
    oauth_state_ttl_seconds: int = Field(default=600, ge=60, le=3600)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Development convenience only: declare the JetStream streams at start-up. In production
    # `connector nats provision` declares them and the API's NATS user may only publish.
    declare_streams: bool = False
    # How often an open admin console asks for fresh counts and rows (one small page of queries).
    console_refresh_seconds: int = Field(default=10, ge=1, le=3600)
    rate_limits: RateLimitSettings = RateLimitSettings()
    shedding: SheddingSettings = SheddingSettings()
    # Audit entries older than this are deleted by a daily purge (0: keep them forever).
    audit_retention_days: int = Field(default=365, ge=0, le=36_500)
    # How often each replica checks whether today's purge is still to be done.
    maintenance_check_seconds: float = Field(default=600.0, ge=1)

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def secure_cookies(self) -> bool:
        """Cookies get the Secure flag when the API is served over https."""
        return self.public_url.startswith("https://")


class ApiSettings(CommonSettings):
    """What `connector api` reads."""

    service_name: str = "connector-api"
    api: ApiGroup = ApiGroup()

    @model_validator(mode="after")
    def _development_keys(self) -> Self:
        jwt = self.api.jwt
        if self.env is Environment.DEVELOPMENT and not jwt.jwks_url and jwt.dev_secret is None:
            raise SettingsError(
                "CONNECTOR_API__JWT__JWKS_URL or CONNECTOR_API__JWT__DEV_SECRET must be set"
            )
        return self

    def secret_problems(self) -> list[str]:
        """The common problems plus the API's (checked outside development; names only)."""
        problems = super().secret_problems()
        jwt = self.api.jwt
        if jwt.dev_secret is not None:
            problems.append(
                "CONNECTOR_API__JWT__DEV_SECRET is only accepted with CONNECTOR_ENV=development"
            )
        if not jwt.jwks_url:
            problems.append("CONNECTOR_API__JWT__JWKS_URL is missing")
        if jwt.issuer == DEV_ISSUER:
            problems.append(
                "CONNECTOR_API__JWT__ISSUER must name your identity provider "
                "(it is still the development default)"
            )
        if not self.api.secure_cookies:
            # Browsers reach the admin page and the OAuth callback here: over http the session
            # cookie would travel without Secure, in the clear.
            problems.append("CONNECTOR_API__PUBLIC_URL must be an https:// URL")
        secret = self.api.session_secret
        if secret is None or is_placeholder(secret.get_secret_value()):
            problems.append("CONNECTOR_API__SESSION_SECRET is missing or a placeholder")
        elif len(secret.get_secret_value()) < 32:
            problems.append("CONNECTOR_API__SESSION_SECRET must be at least 32 characters")
        problems.extend(self._deletion_problems())
        oidc = self.api.oidc
        if oidc.enabled and (
            oidc.client_secret is None or is_placeholder(oidc.client_secret.get_secret_value())
        ):
            problems.append("CONNECTOR_API__OIDC__CLIENT_SECRET is missing or a placeholder")
        return problems

    @property
    def deletion_endpoint_url(self) -> str:
        """The account-deletion endpoint as registered with eBay (the challenge hashes it byte
        for byte): CONNECTOR_EBAY__DELETION__ENDPOINT_URL, else the public URL + the path."""
        configured = self.ebay.deletion.endpoint_url
        return configured if configured else f"{self.api.public_url}{DELETION_PATH}"

    def _deletion_problems(self) -> list[str]:
        """eBay's rules for the account-deletion endpoint (outside development)."""
        problems = []
        deletion = self.ebay.deletion
        if deletion.verification_token is None and self.ebay.environment == "production":
            # eBay refuses production keys to an app that stores eBay data without it.
            problems.append(
                "CONNECTOR_EBAY__DELETION__VERIFICATION_TOKEN is missing (eBay production "
                "requires the account-deletion endpoint)"
            )
        if deletion.verification_token is not None or deletion.endpoint_url is not None:
            problems.extend(
                f"CONNECTOR_EBAY__DELETION__ENDPOINT_URL {problem}"
                for problem in endpoint_problems(self.deletion_endpoint_url)
            )
        return problems


def endpoint_problems(url: str) -> list[str]:
    """Why eBay would refuse this notification endpoint: not https, or a local address."""
    parts = urlsplit(url)
    problems = []
    if parts.scheme != "https":
        problems.append("must be an https:// URL")
    host = (parts.hostname or "").lower()
    local = host in ("", "localhost") or host.endswith(".localhost")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        local = local or not address.is_global
    if local:
        problems.append("must not name localhost or an internal IP address")
    return problems
