"""Bearer JWT validation (RFC 8725) and the principal every org-scoped request acts as.

The accepted algorithms come from settings only; ``alg`` in a token header merely has to be one
of them (``none`` never is). ``exp``, ``iss``, ``aud`` and ``sub`` are required and checked.
Keys: a JWKS document fetched with httpx and cached, re-read (rate-limited) when a token names
a key id we do not know; or, in development only, the shared HS256 secret.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import jwt
import structlog

from connector_api.errors import Forbidden, Unauthorized, Unavailable
from connector_api.settings import JwtSettings

# Resolved at each use, so it follows configure_logging even when imported earlier.
log = structlog.stdlib.get_logger(__name__)

ROLE_ADMIN = "admin"
ROLE_VIEWER = "viewer"
KNOWN_ROLES = frozenset({ROLE_ADMIN, ROLE_VIEWER})
MAX_TOKEN_BYTES = 8192
# Algorithm family (first two letters) -> the JWK key type it needs.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


@dataclass(frozen=True)
class Identity:
    """What a verified token says about the caller."""

    subject: str
    org_external_id: str
    roles: frozenset[str]
    expires_at: datetime


@dataclass(frozen=True)
class Principal:
    """Who is asking, in which organisation: the only source of org scoping."""

    org_id: uuid.UUID  # internal organisations.id
    org_external_id: str
    subject: str
    roles: frozenset[str]

    @property
    def can_write(self) -> bool:
        """Admins may change things; viewers only read."""
        return ROLE_ADMIN in self.roles

    def require_admin(self) -> None:
        """Raise 403 unless the caller may change things."""
        if not self.can_write:
            raise Forbidden("this needs the admin role; a viewer may only read")


class KeySource(Protocol):
    async def key_for(self, kid: str | None, algorithm: str) -> Any: ...

    async def aclose(self) -> None: ...


class SharedSecretKeys:
    """The development HS256 secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    async def key_for(self, kid: str | None, algorithm: str) -> Any:
        return self._secret

    async def aclose(self) -> None:
        return None


class JwksKeys:
    """Public keys from a JWKS URL, cached; an unknown ``kid`` triggers a rate-limited re-read."""

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float,
        min_refresh_seconds: float,
        timeout_seconds: float,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = url
        self._cache_seconds = cache_seconds
        self._min_refresh_seconds = min_refresh_seconds
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_seconds))
        self._owns_http = http is None
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None, algorithm: str) -> Any:
        now = time.monotonic()
        stale = self._fetched_at is None or now - self._fetched_at > self._cache_seconds
        unknown = self._pick(kid) is None
        if stale or (unknown and self._may_refresh(now)):
            await self._refresh(force=unknown)
        jwk = self._pick(kid)
        if jwk is None:
            raise Unauthorized("the token is signed with an unknown key")
        declared = jwk._jwk_data.get("alg")  # a key that names its algorithm allows only that
        if (declared and declared != algorithm) or _KEY_TYPES.get(algorithm[:2]) != jwk.key_type:
            raise Unauthorized("the token's algorithm does not match its key")
        return jwk.key

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        # A token without kid is only unambiguous when the set holds exactly one key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def _may_refresh(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= self._min_refresh_seconds

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = time.monotonic()
            fresh = self._fetched_at is not None and now - self._fetched_at <= self._cache_seconds
            if fresh and not force:
                return  # another request refreshed while we waited
            if force and not self._may_refresh(now):
                return
            try:
                response = await self._http.get(self._url, headers={"Accept": "application/json"})
                response.raise_for_status()
                keys = _parse_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("jwks fetch failed", url=self._url, error=type(exc).__name__)
                if not self._keys:
                    # Not the caller's fault: 503, so clients retry instead of dropping a token.
                    raise Unavailable("the identity provider's keys cannot be fetched") from None
                self._fetched_at = now  # keep serving the keys we have; try again later
                return
            self._keys = keys
            self._fetched_at = now

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()


def _parse_jwks(document: object) -> dict[str | None, jwt.PyJWK]:
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in _KEY_TYPES.values():
            continue  # never a symmetric ("oct") key from a public document
        try:
            jwk = jwt.PyJWK(dict(entry))
        except jwt.PyJWTError:
            continue  # a key type we cannot use (or a malformed one) must not hide the others
        keys[jwk.key_id] = jwk
    return keys


class TokenVerifier:
    """Checks bearer tokens against pinned algorithms, issuer, audience and keys."""

    def __init__(self, settings: JwtSettings, keys: KeySource) -> None:
        self._settings = settings
        self._keys = keys
        self._algorithms = settings.pinned_algorithms

    @classmethod
    def from_settings(cls, settings: JwtSettings) -> TokenVerifier:
        """JWKS when a URL is configured, else the development secret."""
        keys: KeySource
        if settings.jwks_url:
            keys = JwksKeys(
                settings.jwks_url,
                cache_seconds=settings.jwks_cache_seconds,
                min_refresh_seconds=settings.jwks_min_refresh_seconds,
                timeout_seconds=settings.jwks_timeout_seconds,
            )
        elif settings.dev_secret is not None:
            keys = SharedSecretKeys(settings.dev_secret.get_secret_value())
        else:
            raise ValueError("no JWT key source configured")
        return cls(settings, keys)

    async def aclose(self) -> None:
        await self._keys.aclose()

    async def verify(self, token: str) -> Identity:
        """The identity a valid token carries; raises :class:`Unauthorized` otherwise."""
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise Unauthorized("the bearer token is malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token is malformed") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise Unauthorized("the token's signing algorithm is not accepted")
        kid = header.get("kid")
        key = await self._keys.key_for(kid if isinstance(kid, str) else None, algorithm)
        claims = self._decode(token, key)
        return self._identity(claims)

    def _decode(self, token: str, key: Any) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token is not meant for this API (audience)") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("the token comes from an issuer this API does not trust") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("the token is not valid yet") from None
        except (jwt.PyJWTError, TypeError, ValueError):
            raise Unauthorized("the token is invalid") from None

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 0 < len(subject) <= 200:
            raise Unauthorized("the token's 'sub' claim must be a string of 1-200 characters")
        org = claims.get(self._settings.org_claim)
        if not isinstance(org, str) or not 0 < len(org) <= 200 or not org.isprintable():
            raise Unauthorized(f"the token lacks a valid {self._settings.org_claim!r} claim")
        roles = parse_roles(claims.get(self._settings.roles_claim))
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
        return Identity(subject, org, roles, expires_at)


def parse_roles(raw: object) -> frozenset[str]:
    """Roles from a list or a space-separated string; unknown roles are ignored."""
    if isinstance(raw, str):
        values: list[object] = list(raw.split())
    elif isinstance(raw, list):
        values = list(raw)
    else:
        values = []
    return frozenset(v for v in values if isinstance(v, str) and v in KNOWN_ROLES)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header; raises 401 when absent or malformed."""
    if not authorization:
        raise Unauthorized("a bearer token is required", error=None)
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized(
            "the Authorization header must be 'Bearer <token>'", error="invalid_request"
        )
    return value.strip()


def require_role(identity: Identity) -> None:
    """A valid token must grant at least one of our roles."""
    if not identity.roles:
        raise Forbidden("the token grants no connector role (admin or viewer)")
