"""Bearer JWT validation (RFC 8725) and the principal every org-scoped request acts as.

:meth:`TokenVerifier.verify` is the single entry point. It checks, in this order, everything
that needs no key: the token's shape, its header (``alg`` one of the pinned algorithms, never
``none``; no ``crit`` extensions) and its claims (``exp``, ``nbf`` and ``iat`` as NumericDates
within range and time, ``iss``, ``aud``, ``sub``, a canonical ``org_id``). Only then does it ask
for a key (:mod:`connector_api.jwks`: the identity provider's JWKS, or in development the
shared HS256 secret) and verify the signature, so a stale, foreign or malformed token never
makes us call the identity provider.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from connector_api.errors import Forbidden, Unauthorized
from connector_api.jwks import JwksKeys, KeySource, SharedSecretKeys
from connector_api.settings import JwtSettings

ROLE_ADMIN = "admin"
ROLE_VIEWER = "viewer"
KNOWN_ROLES = frozenset({ROLE_ADMIN, ROLE_VIEWER})
MAX_TOKEN_BYTES = 8192
# NumericDates beyond datetime's range (year 9999) cannot be a real expiry.
MAX_NUMERIC_DATE = 253_402_300_799
# What an organisation id may be, once case-folded (see :func:`canonical_org_id`).
ORG_ID_MAX = 200
_ORG_ID = re.compile(r"^[a-z0-9._:@/+=-]{1,200}$")


class InvalidOrgId(ValueError):
    """An organisation id that is not in (and cannot be folded into) the canonical form."""


def canonical_org_id(raw: object) -> str:
    """The canonical form of an organisation id, or :class:`InvalidOrgId`.

    An org id is 1-200 ASCII letters, digits and ``. _ : @ / + = -``; letters are folded to
    lower case (``DEMO`` and ``demo`` are one organisation). Anything else is refused rather
    than normalised: whitespace anywhere (``"demo "``), control and format characters, and every
    non-ASCII character, so full-width (U+FF44...) and look-alike letters (Cyrillic U+0435)
    can never name, or pass for, another organisation.
    """
    if not isinstance(raw, str) or not raw:
        raise InvalidOrgId("must be a non-empty string")
    if not raw.isascii():
        raise InvalidOrgId("must be ASCII letters, digits and . _ : @ / + = - only")
    folded = raw.lower()
    if not _ORG_ID.match(folded):
        raise InvalidOrgId(
            f"must be 1-{ORG_ID_MAX} ASCII letters, digits and . _ : @ / + = - "
            "(no spaces or control characters)"
        )
    return folded


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


class TokenVerifier:
    """Checks bearer tokens against pinned algorithms, issuer, audience and keys."""

    def __init__(self, settings: JwtSettings, keys: KeySource, clock: Any = time.time) -> None:
        self._settings = settings
        self._keys = keys
        self._algorithms = settings.pinned_algorithms
        self._clock = clock
        # Tokens verified lately (by SHA-256, never the token itself): identity, the moment the
        # entry ends, and the token's exp (an entry never outlives the token).
        self._verified: OrderedDict[bytes, tuple[Identity, float, float]] = OrderedDict()
        self._verified_seconds = settings.verified_cache_seconds
        self._verified_max = settings.verified_cache_entries

    @property
    def keys(self) -> KeySource:
        """Where the keys come from (the JWKS source keeps fetch statistics)."""
        return self._keys

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
                max_wait_seconds=settings.jwks_max_wait_seconds,
                backoff_max_seconds=settings.jwks_backoff_max_seconds,
            )
        elif settings.dev_secret is not None:
            keys = SharedSecretKeys(settings.dev_secret.get_secret_value())
        else:
            raise ValueError("no JWT key source configured")
        return cls(settings, keys)

    async def aclose(self) -> None:
        await self._keys.aclose()

    async def verify(self, token: str) -> Identity:
        """The identity a valid token carries; raises :class:`Unauthorized` otherwise.

        A token verified less than ``verified_cache_seconds`` ago is not verified again (a
        client sends the same token with every request): its identity is reused until then,
        and never once the token has expired.
        """
        if self._verified_seconds <= 0:
            return await self._verify(token)
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock()
        cached = self._verified.get(digest)
        if cached is not None:
            identity, until, expires = cached
            if now < until and expires > now - self._settings.leeway_seconds:
                return identity
            del self._verified[digest]
        identity, expires = await self._verify_with_expiry(token)
        self._verified[digest] = (identity, now + self._verified_seconds, expires)
        if len(self._verified) > self._verified_max:
            self._verified.popitem(last=False)
        return identity

    async def _verify(self, token: str) -> Identity:
        return (await self._verify_with_expiry(token))[0]

    async def _verify_with_expiry(self, token: str) -> tuple[Identity, float]:
        header, claims = _unverified(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise Unauthorized("the token's signing algorithm is not accepted")
        if "crit" in header:
            raise Unauthorized("the token names critical header extensions we do not support")
        identity = self._check_claims(claims)  # everything that needs no key, before any fetch
        kid = header.get("kid")
        key = await self._keys.key_for(kid if isinstance(kid, str) else None, algorithm)
        self._decode(token, key)
        return identity, float(claims["exp"])

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
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except jwt.ExpiredSignatureError:  # only if it expired while we fetched keys
            raise Unauthorized("the token has expired") from None
        except (jwt.PyJWTError, TypeError, ValueError, OverflowError):
            raise Unauthorized("the token is invalid") from None

    def _check_claims(self, claims: Mapping[str, Any]) -> Identity:
        now = self._clock()
        leeway = self._settings.leeway_seconds
        expires = numeric_date(claims, "exp")
        if expires is None:
            raise Unauthorized("the token lacks the 'exp' claim")
        if expires <= now - leeway:
            raise Unauthorized("the token has expired")
        not_before = numeric_date(claims, "nbf")
        if not_before is not None and not_before > now + leeway:
            raise Unauthorized("the token is not valid yet")
        issued = numeric_date(claims, "iat")
        if issued is not None and issued > now + leeway:
            raise Unauthorized("the token was issued in the future")
        for name in ("iss", "aud", "sub"):
            if name not in claims:
                raise Unauthorized(f"the token lacks the {name!r} claim")
        if claims["iss"] != self._settings.issuer:
            raise Unauthorized("the token comes from an issuer this API does not trust")
        audience = claims["aud"]
        audiences = audience if isinstance(audience, list) else [audience]
        if self._settings.audience not in [a for a in audiences if isinstance(a, str)]:
            raise Unauthorized("the token is not meant for this API (audience)")
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= 200:
            raise Unauthorized("the token's 'sub' claim must be a string of 1-200 characters")
        name = self._settings.org_claim
        try:
            org = canonical_org_id(claims.get(name))
        except InvalidOrgId as exc:
            raise Unauthorized(f"the token's {name!r} claim {exc}") from None
        roles = parse_roles(claims.get(self._settings.roles_claim))
        return Identity(subject, org, roles, datetime.fromtimestamp(int(expires), UTC))


def numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2), or None when absent; 401 for any other shape.

    A number of seconds: not a string (``"1700000000"``), not a boolean, not NaN or infinite,
    not negative, not past the year 9999 (``10**20`` would overflow every date type).
    """
    if name not in claims:
        return None
    value = claims[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_NUMERIC_DATE
    ):
        raise Unauthorized(f"the token's {name!r} claim must be a date in seconds since 1970")
    return float(value)


def _segment(text: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw, parse_constant=_no_constant)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise Unauthorized("the bearer token is malformed") from None
    if not isinstance(value, dict):
        raise Unauthorized("the bearer token is malformed")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python accepts them, JSON does not


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, not yet verified."""
    if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise Unauthorized("the bearer token is malformed")
    header, payload, signature = token.split(".")
    if not header or not payload or not signature:
        raise Unauthorized("the bearer token is malformed")
    return _segment(header), _segment(payload)


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
