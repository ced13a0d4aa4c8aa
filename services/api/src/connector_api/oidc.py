"""OpenID Connect login for the admin page: authorization code flow with PKCE (S256), state and
nonce, discovery and JWKS from the configured issuer. The ID token must carry the same org and
role claims as the API's bearer tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from connector_api.auth import Identity, parse_roles
from connector_api.errors import Unauthorized, Unavailable
from connector_api.jwks import JwksKeys
from connector_api.settings import JwtSettings, OidcSettings
from connector_api.signing import constant_time_equal

DISCOVERY_CACHE_SECONDS = 3600.0


class OidcError(Exception):
    """The login did not complete; the message is safe to show."""


@dataclass(frozen=True)
class LoginRequest:
    """What the browser must bring back: kept in a signed, short-lived cookie."""

    state: str
    nonce: str
    verifier: str

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    @classmethod
    def new(cls) -> LoginRequest:
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48))


class OidcClient:
    """Talks to the company's identity provider."""

    def __init__(
        self,
        settings: OidcSettings,
        jwt_settings: JwtSettings,
        redirect_uri: str,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._settings = settings
        self._jwt = jwt_settings
        self.redirect_uri = redirect_uri
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(settings.timeout_seconds))
        self._metadata: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._keys: JwksKeys | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._keys is not None:
            await self._keys.aclose()
        await self._http.aclose()

    async def _discover(self) -> dict[str, Any]:
        async with self._lock:
            fresh = time.monotonic() - self._fetched_at < DISCOVERY_CACHE_SECONDS
            if self._metadata is not None and fresh:
                return self._metadata
            issuer = (self._settings.issuer or "").rstrip("/")
            try:
                response = await self._http.get(f"{issuer}/.well-known/openid-configuration")
                response.raise_for_status()
                metadata = response.json()
            except (httpx.HTTPError, ValueError):
                raise OidcError("the identity provider cannot be reached") from None
            if not isinstance(metadata, dict) or metadata.get("issuer", "").rstrip("/") != issuer:
                raise OidcError("the identity provider's discovery document does not match")
            for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(metadata.get(field), str):
                    raise OidcError(f"the identity provider publishes no {field}")
            if self._keys is None or metadata["jwks_uri"] != (self._metadata or {}).get("jwks_uri"):
                self._keys = JwksKeys(
                    metadata["jwks_uri"],
                    cache_seconds=self._jwt.jwks_cache_seconds,
                    min_refresh_seconds=self._jwt.jwks_min_refresh_seconds,
                    timeout_seconds=self._settings.timeout_seconds,
                    http=self._http,
                )
            self._metadata = metadata
            self._fetched_at = time.monotonic()
            return metadata

    async def authorization_url(self, login: LoginRequest) -> str:
        """Where to send the browser to log in."""
        metadata = await self._discover()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._settings.client_id or "",
                "redirect_uri": self.redirect_uri,
                "scope": " ".join(self._settings.scopes),
                "state": login.state,
                "nonce": login.nonce,
                "code_challenge": login.challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = str(metadata["authorization_endpoint"])
        return endpoint + ("&" if "?" in endpoint else "?") + query

    async def complete(self, login: LoginRequest, code: str) -> Identity:
        """Exchange the code and verify the ID token; the identity it carries."""
        metadata = await self._discover()
        secret = self._settings.client_secret
        try:
            response = await self._http.post(
                str(metadata["token_endpoint"]),
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.redirect_uri,
                    "code_verifier": login.verifier,
                },
                auth=(self._settings.client_id or "", secret.get_secret_value() if secret else ""),
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError:
            raise OidcError("the identity provider cannot be reached") from None
        if response.status_code != 200:
            raise OidcError("the identity provider refused the login code")
        try:
            id_token = response.json()["id_token"]
        except (ValueError, KeyError, TypeError):
            raise OidcError("the identity provider sent no ID token") from None
        return await self._verify(str(id_token), login.nonce, str(metadata["issuer"]))

    async def _verify(self, id_token: str, nonce: str, issuer: str) -> Identity:
        assert self._keys is not None
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise OidcError("the ID token is malformed") from None
        algorithm = header.get("alg")
        if algorithm not in self._settings.algorithms:
            raise OidcError("the ID token's algorithm is not accepted")
        try:
            key = await self._keys.key_for(header.get("kid"), str(algorithm))
            claims = jwt.decode(
                id_token,
                key,
                algorithms=self._settings.algorithms,
                audience=self._settings.client_id,
                issuer=issuer,
                leeway=self._jwt.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub", "iat"]},
            )
        except (jwt.PyJWTError, Unauthorized, Unavailable):
            raise OidcError("the ID token does not verify") from None
        if not constant_time_equal(nonce, str(claims.get("nonce", ""))):
            raise OidcError("the ID token was not issued for this login")
        org = claims.get(self._jwt.org_claim)
        if not isinstance(org, str) or not 0 < len(org) <= 200:
            raise OidcError(f"the ID token carries no {self._jwt.org_claim!r} claim")
        return Identity(
            subject=str(claims["sub"])[:200],
            org_external_id=org,
            roles=parse_roles(claims.get(self._jwt.roles_claim)),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
