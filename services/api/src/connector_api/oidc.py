"""OpenID Connect login for the admin page, on Authlib's OpenID Connect client.

Authlib does the protocol: discovery, the authorization URL with ``state``, ``nonce`` and PKCE
(S256), the code exchange (client authentication as the provider's discovery document allows),
and the ID token checks (signature against the provider's JWKS, ``iss``, ``aud``, ``exp``,
``iat``, ``nonce``, ``azp``, ``at_hash``). We add what is ours: the discovery document must name
the configured issuer, only the pinned algorithms are accepted (not whatever the provider
advertises), and the ID token must carry a canonical ``org_id`` and the ``roles`` claim, like
the API's bearer tokens. What the browser must bring back (state, nonce, PKCE verifier) travels
in a signed, short-lived cookie: no server-side login state.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from joserfc.errors import JoseError

with warnings.catch_warnings():
    # Authlib 1.9 prefers the "httpx2" package and warns when it falls back to httpx, which is
    # what the whole project uses (and what Authlib tests against); nothing to act on.
    import authlib.deprecate  # noqa: F401 (installs an "always" filter of its own first)

    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App

from connector_api.auth import Identity, InvalidOrgId, canonical_org_id, parse_roles
from connector_api.settings import JwtSettings, OidcSettings

DISCOVERY_CACHE_SECONDS = 3600.0
OIDC_LOGIN_SECONDS = 600  # a login at the identity provider must come back within this
# What a login may fail with inside Authlib, httpx and joserfc (never shown as such).
_PROTOCOL_ERRORS = (OAuthError, JoseError, httpx.HTTPError, KeyError, TypeError, ValueError)


class OidcError(Exception):
    """The login did not complete; the message is safe to show."""


@dataclass(frozen=True)
class LoginRequest:
    """What the browser must bring back: kept in a signed, short-lived cookie."""

    state: str
    nonce: str
    verifier: str


class OidcClient:
    """Talks to the company's identity provider through Authlib."""

    def __init__(
        self, settings: OidcSettings, jwt_settings: JwtSettings, redirect_uri: str
    ) -> None:
        self._settings = settings
        self._jwt = jwt_settings
        self.redirect_uri = redirect_uri
        self._issuer = (settings.issuer or "").rstrip("/")
        secret = settings.client_secret
        registry = OAuth()
        app = registry.register(
            name="company",
            client_id=settings.client_id,
            client_secret=secret.get_secret_value() if secret else None,
            server_metadata_url=f"{self._issuer}/.well-known/openid-configuration",
            client_kwargs={
                "scope": " ".join(settings.scopes),
                "code_challenge_method": "S256",
                "timeout": settings.timeout_seconds,
            },
        )
        assert isinstance(app, StarletteOAuth2App)
        self._app = app
        self._loaded_at = 0.0

    async def aclose(self) -> None:
        return None  # Authlib opens an httpx client per call and closes it

    async def _metadata(self) -> dict[str, Any]:
        app = self._app
        if time.monotonic() - self._loaded_at > DISCOVERY_CACHE_SECONDS:
            app.server_metadata.clear()  # re-read discovery (and the JWKS) now and then
        try:
            metadata: dict[str, Any] = await app.load_server_metadata()
        except _PROTOCOL_ERRORS:
            app.server_metadata.clear()
            raise OidcError("the identity provider cannot be reached") from None
        if "_checked" in metadata:
            return metadata
        if str(metadata.get("issuer", "")).rstrip("/") != self._issuer:
            app.server_metadata.clear()
            raise OidcError("the identity provider's discovery document does not match")
        for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(metadata.get(field), str):
                app.server_metadata.clear()
                raise OidcError(f"the identity provider publishes no {field}")
        # Our pinned algorithms, not whatever the provider advertises.
        metadata["id_token_signing_alg_values_supported"] = list(self._settings.algorithms)
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        method = "client_secret_basic" if "client_secret_basic" in methods else "client_secret_post"
        app.client_kwargs["token_endpoint_auth_method"] = method
        metadata["_checked"] = True
        self._loaded_at = time.monotonic()
        return metadata

    async def authorization_url(self) -> tuple[str, LoginRequest]:
        """Where to send the browser to log in, and what it must bring back."""
        await self._metadata()
        try:
            created = await self._app.create_authorization_url(self.redirect_uri)
        except _PROTOCOL_ERRORS:
            raise OidcError("the identity provider cannot be reached") from None
        login = LoginRequest(created["state"], created["nonce"], created["code_verifier"])
        return str(created["url"]), login

    async def complete(self, login: LoginRequest, code: str) -> Identity:
        """Exchange the code and verify the ID token; the identity it carries."""
        await self._metadata()
        try:
            token = await self._app.fetch_access_token(
                redirect_uri=self.redirect_uri, code=code, code_verifier=login.verifier
            )
        except (OAuthError, httpx.HTTPStatusError):
            raise OidcError("the identity provider refused the login code") from None
        except _PROTOCOL_ERRORS:
            raise OidcError("the identity provider cannot be reached") from None
        if not isinstance(token, dict) or not isinstance(token.get("id_token"), str):
            raise OidcError("the identity provider sent no ID token")
        try:
            claims = await self._app.parse_id_token(
                token, nonce=login.nonce, leeway=self._jwt.leeway_seconds
            )
        except _PROTOCOL_ERRORS:
            raise OidcError("the ID token does not verify") from None
        if claims is None:
            raise OidcError("the identity provider sent no ID token")
        return self._identity(dict(claims))

    def _identity(self, claims: dict[str, Any]) -> Identity:
        name = self._jwt.org_claim
        try:
            org = canonical_org_id(claims.get(name))
        except InvalidOrgId as exc:
            raise OidcError(f"the ID token's {name!r} claim {exc}") from None
        subject = claims.get("sub")
        expires = claims.get("exp")
        if not isinstance(subject, str) or not 0 < len(subject) <= 200:
            raise OidcError("the ID token's 'sub' claim must be a string of 1-200 characters")
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise OidcError("the ID token's 'exp' claim is not a date")
        return Identity(
            subject=subject,
            org_external_id=org,
            roles=parse_roles(claims.get(self._jwt.roles_claim)),
            expires_at=datetime.fromtimestamp(min(int(expires), 253_402_300_799), UTC),
        )
