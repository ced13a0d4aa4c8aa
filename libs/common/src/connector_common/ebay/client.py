"""The eBay client: OAuth (consent URL, code exchange, refresh, app token) and seller calls.

One instance per process (it owns one HTTP session with connection reuse); every call
has explicit timeouts, typed results and typed errors (:mod:`connector_common.ebay.errors`).
Works unchanged against eBay production, eBay's sandbox, or our local sandbox.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from pydantic import SecretStr

from connector_common.ebay.breaker import UNREAD, BreakerSnapshot, CircuitBreaker
from connector_common.ebay.endpoints import Endpoints, endpoints_for
from connector_common.ebay.errors import TransientError
from connector_common.ebay.http import HttpSession
from connector_common.ebay.instrumentation import CallSpec, EbayInstruments
from connector_common.ebay.models import (
    AppToken,
    CallMeta,
    IdentityUser,
    NotificationPublicKey,
    RateLimits,
    TradingUser,
    UserToken,
)
from connector_common.ebay.parsers import (
    parse_identity,
    parse_public_key,
    parse_rate_limits,
    parse_trading_user,
)
from connector_common.ebay.refresh_retry import call_with_token_refresh
from connector_common.ebay.sites import site_by_id
from connector_common.ebay.transport import EbayTransport, retry_unsent
from connector_common.ebay.wire import (
    HttpAnswer,
    json_body,
    oauth_error,
)
from connector_common.redaction import register_secret
from connector_common.settings import EbaySettings

APP_SCOPE = "https://api.ebay.com/oauth/api_scope"
FORM = "application/x-www-form-urlencoded"
GET_USER_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<GetUserRequest xmlns="urn:ebay:apis:eBLBaseComponents">'
    b"<ErrorLanguage>en_US</ErrorLanguage><WarningLevel>High</WarningLevel>"
    b"<DetailLevel>ReturnAll</DetailLevel></GetUserRequest>"
)
# Refresh the cached application token this long before eBay says it expires (at most).
APP_TOKEN_MARGIN_SECONDS = 300.0


def _issued_at(meta: CallMeta) -> datetime:
    # Count lifetimes from when the request left, so a slow answer never extends them.
    return datetime.now(UTC) - timedelta(milliseconds=meta.latency_ms)


def _seconds(body: dict[str, Any], name: str, meta: CallMeta) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise TransientError(
            f"eBay OAuth answer lacks a valid {name}", meta=meta, error_code="bad_json"
        )
    return int(value)


class EbayClient:
    """Talks to eBay for one app (client id/secret, RuName) in one environment."""

    def __init__(
        self,
        settings: EbaySettings,
        *,
        http: HttpSession | None = None,
        breaker: CircuitBreaker | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 8.0,
        on_call: Callable[[str, str], None] | None = None,
        rate_limit_wait: float | None = None,
    ) -> None:
        self.settings = settings
        self.endpoints: Endpoints = endpoints_for(settings)
        self._owns_http = http is None
        self._http = http or HttpSession(max_connections=200)
        self.instruments = EbayInstruments(tracer_provider, meter_provider)
        self._transport = EbayTransport(
            settings,
            self._http,
            self.instruments,
            breaker,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            on_call=on_call,  # counts every call for the daily budget
            rate_limit_wait=rate_limit_wait,
        )
        secret = settings.client_secret.get_secret_value()
        register_secret(secret)
        pair = f"{settings.client_id}:{secret}".encode()
        self._basic = "Basic " + base64.b64encode(pair).decode("ascii")
        self._app_token: AppToken | None = None
        self._app_token_renew_at = datetime.min.replace(tzinfo=UTC)
        self._app_token_lock = asyncio.Lock()

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The circuit breaker guarding per-account calls, if any."""
        return self._transport.breaker

    async def aclose(self) -> None:
        """Close the HTTP client if this instance created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> EbayClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- OAuth ---------------------------------------------------------------------------------

    def consent_url(
        self,
        state: str,
        *,
        scopes: Sequence[str] | None = None,
        prompt: str | None = "login",
        locale: str | None = None,
    ) -> str:
        """Where to send the seller to consent; ``redirect_uri`` is the RuName, not a URL."""
        params = {
            "client_id": self.settings.client_id,
            "redirect_uri": self.settings.ru_name,
            "response_type": "code",
            "scope": " ".join(scopes if scopes is not None else self.settings.scopes),
            "state": state,
        }
        if prompt:
            params["prompt"] = prompt
        if locale:
            params["locale"] = locale
        # quote (not quote_plus): spaces between scopes become %20, as eBay documents.
        return f"{self.endpoints.authorize}?{urlencode(params, quote_via=quote)}"

    def _token_headers(self) -> dict[str, str]:
        return {"Authorization": self._basic, "Content-Type": FORM, "Accept": "application/json"}

    def _user_token(self, scopes: Sequence[str]) -> Callable[[HttpAnswer, CallMeta], UserToken]:
        def parse(response: HttpAnswer, meta: CallMeta) -> UserToken:
            if response.status_code != 200:
                raise oauth_error(response, meta)
            body = json_body(response, meta, "eBay OAuth")
            access = body.get("access_token")
            if not isinstance(access, str) or not access:
                raise TransientError("eBay OAuth answer lacks access_token", meta=meta)
            issued = _issued_at(meta)
            refresh = body.get("refresh_token")
            refresh_in = body.get("refresh_token_expires_in")
            has_refresh = isinstance(refresh, str) and bool(refresh)
            return UserToken(
                access_token=SecretStr(access),
                access_expires_at=issued + timedelta(seconds=_seconds(body, "expires_in", meta)),
                refresh_token=SecretStr(str(refresh)) if has_refresh else None,
                refresh_expires_at=(
                    issued + timedelta(seconds=_seconds(body, "refresh_token_expires_in", meta))
                    if has_refresh and refresh_in is not None
                    else None
                ),
                token_type=str(body.get("token_type", "User Access Token")),
                meta=meta,
                scopes=tuple(scopes),
            )

        return parse

    async def exchange_code(self, code: str) -> UserToken:
        """Trade a consent's authorization code (already URL-decoded once) for tokens.

        Codes are single use: only failures before the request left are retried.
        """
        body = urlencode(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.settings.ru_name,
            }
        ).encode()
        spec = CallSpec("oauth", "exchange_code", "POST", self.endpoints.token)
        parse = self._user_token(self.settings.scopes)
        result: UserToken = await self._transport.call(
            spec, parse, headers=self._token_headers(), content=body, retry=retry_unsent
        )
        return result

    async def refresh_access_token(
        self,
        refresh_token: str,
        scopes: Sequence[str],
        *,
        account_key: str | None = None,
        breaker_state: BreakerSnapshot | object | None = UNREAD,
    ) -> UserToken:
        """A new access token; ``refresh_token`` in the result is None unless eBay sent one.

        ``breaker_state``: the account's circuit breaker as the caller already read it (the
        token store reads it with the lease), so the breaker need not read it again."""
        body = urlencode(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "scope": " ".join(scopes),
            }
        ).encode()
        spec = CallSpec("oauth", "refresh_token", "POST", self.endpoints.token, account_key)
        result: UserToken = await self._transport.call(
            spec,
            self._user_token(scopes),
            headers=self._token_headers(),
            content=body,
            breaker_state=breaker_state,
        )
        return result

    async def application_token(self) -> AppToken:
        """The client-credentials token, cached until shortly before it expires."""
        async with self._app_token_lock:
            if self._app_token is not None and datetime.now(UTC) < self._app_token_renew_at:
                return self._app_token
            token = await self._fetch_application_token()
            lifetime = (token.expires_at - datetime.now(UTC)).total_seconds()
            margin = min(APP_TOKEN_MARGIN_SECONDS, max(lifetime, 0) / 10)
            self._app_token = token
            self._app_token_renew_at = token.expires_at - timedelta(seconds=margin)
            return token

    async def _fetch_application_token(self) -> AppToken:
        scopes = (APP_SCOPE,)
        body = urlencode({"grant_type": "client_credentials", "scope": " ".join(scopes)}).encode()

        def parse(response: HttpAnswer, meta: CallMeta) -> AppToken:
            if response.status_code != 200:
                raise oauth_error(response, meta)
            data = json_body(response, meta, "eBay OAuth")
            access = data.get("access_token")
            if not isinstance(access, str) or not access:
                raise TransientError("eBay OAuth answer lacks access_token", meta=meta)
            expires = _issued_at(meta) + timedelta(seconds=_seconds(data, "expires_in", meta))
            token_type = str(data.get("token_type", "Application Access Token"))
            return AppToken(SecretStr(access), expires, token_type, scopes, meta)

        spec = CallSpec("oauth", "client_credentials", "POST", self.endpoints.token)
        result: AppToken = await self._transport.call(
            spec, parse, headers=self._token_headers(), content=body
        )
        return result

    async def _renewed_app_token(self) -> str:
        async with self._app_token_lock:
            self._app_token = None
        return (await self.application_token()).access_token.get_secret_value()

    # --- seller calls ------------------------------------------------------------------------

    async def get_user(
        self, access_token: str, *, site_id: int = 0, account_key: str | None = None
    ) -> TradingUser:
        """Trading ``GetUser`` for the token's own seller (the site only localizes messages)."""
        site = site_by_id(site_id)
        headers = {
            "X-EBAY-API-COMPATIBILITY-LEVEL": str(self.settings.compatibility_level),
            "X-EBAY-API-CALL-NAME": "GetUser",
            "X-EBAY-API-SITEID": str(site.site_id),
            "X-EBAY-API-IAF-TOKEN": access_token,
            "Content-Type": "text/xml",
        }
        spec = CallSpec(
            "trading",
            "GetUser",
            "POST",
            self.endpoints.trading,
            account_key,
            site.marketplace_id,
            site.site_id,
        )
        result: TradingUser = await self._transport.call(
            spec, parse_trading_user, headers=headers, content=GET_USER_BODY
        )
        return result

    async def identity_user(
        self,
        access_token: str,
        *,
        account_key: str | None = None,
        marketplace_id: str | None = None,
    ) -> IdentityUser:
        """Commerce Identity ``getUser`` (needs the ``commerce.identity.readonly`` scope)."""
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        if marketplace_id:
            headers["X-EBAY-C-MARKETPLACE-ID"] = marketplace_id
        spec = CallSpec(
            "identity", "getUser", "GET", self.endpoints.identity_user, account_key, marketplace_id
        )
        result: IdentityUser = await self._transport.call(spec, parse_identity, headers=headers)
        return result

    async def user_rate_limits(
        self,
        access_token: str,
        *,
        api_context: str | None = None,
        account_key: str | None = None,
    ) -> RateLimits:
        """Developer Analytics ``getUserRateLimits`` for the token's seller."""
        return await self._rate_limits(
            self.endpoints.user_rate_limit,
            "getUserRateLimits",
            access_token,
            api_context,
            account_key,
        )

    async def app_rate_limits(
        self, *, api_context: str | None = None, record: bool = True
    ) -> RateLimits:
        """Developer Analytics ``getRateLimits`` for our app (uses the application token).

        ``record=False``: the quotas are not set on this client's ``ebay.rate_limit.*`` gauges
        (a caller that stores them for another process to report)."""
        token = (await self.application_token()).access_token.get_secret_value()

        async def call(access_token: str) -> RateLimits:
            return await self._rate_limits(
                self.endpoints.app_rate_limit,
                "getRateLimits",
                access_token,
                api_context,
                None,
                record=record,
            )

        return await call_with_token_refresh(call, token, self._renewed_app_token)

    async def _rate_limits(
        self,
        url: str,
        operation: str,
        access_token: str,
        api_context: str | None,
        account_key: str | None,
        *,
        record: bool = True,
    ) -> RateLimits:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        params = {"api_context": api_context} if api_context else None
        spec = CallSpec("analytics", operation, "GET", url, account_key)
        result: RateLimits = await self._transport.call(
            spec, parse_rate_limits, headers=headers, params=params
        )
        if record:
            self.instruments.record_rate_limits(result)
        return result

    async def notification_public_key(self, kid: str) -> NotificationPublicKey:
        """Notification API ``getPublicKey``: the key eBay signs notifications with (app token).

        An unknown ``kid`` raises :class:`PermanentError` (eBay: 404, errorId 195001).
        """
        token = (await self.application_token()).access_token.get_secret_value()
        url = f"{self.endpoints.notification_public_key}{quote(kid, safe='')}"

        async def call(access_token: str) -> NotificationPublicKey:
            headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
            spec = CallSpec("notification", "getPublicKey", "GET", url)
            result: NotificationPublicKey = await self._transport.call(
                spec, parse_public_key, headers=headers
            )
            return result

        return await call_with_token_refresh(call, token, self._renewed_app_token)
