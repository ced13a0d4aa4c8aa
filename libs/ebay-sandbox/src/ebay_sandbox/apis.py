"""eBay APIs a seller token is used on: Trading ``GetUser``, Identity ``getUser``, Analytics."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from starlette.responses import Response

from ebay_sandbox import responses
from ebay_sandbox.calls import DAILY_LIMITS, Call
from ebay_sandbox.state import API_SCOPE, IDENTITY_SCOPE, Seller

if TYPE_CHECKING:
    from ebay_sandbox.app import Sandbox

PACIFIC = ZoneInfo("America/Los_Angeles")
API_CONTEXTS = frozenset({"buy", "sell", "commerce", "developer", "tradingapi"})
# usage bucket -> (apiContext, apiName, apiVersion, resource name)
ANALYTICS_APIS = {
    "trading": ("tradingapi", "TradingAPI", "v1", "TradingAPI"),
    "identity": ("commerce", "Identity", "v1", "commerce.identity.user"),
    "analytics": ("developer", "Analytics", "v1_beta", "developer.analytics.rate_limit"),
    "notification": ("commerce", "Notification", "v1", "commerce.notification.public_key"),
}


def next_pacific_midnight(now: datetime | None = None) -> datetime:
    """eBay's daily quotas reset at midnight US Pacific time."""
    local = (now or datetime.now(UTC)).astimezone(PACIFIC)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), PACIFIC)
    return midnight.astimezone(UTC)


class ApiRoutes:
    """Trading, Identity and Analytics of one sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.state = sandbox.state

    # --- identification ------------------------------------------------------------------------

    def _lookup(self, call: Call, token: str) -> None:
        record = self.state.access.get(token)
        call.access = record
        if record is None:
            return
        call.client_id = record.client_id
        if record.grant is not None:
            call.seller = self.state.sellers.get(record.grant.seller_id)

    async def identify_iaf(self, call: Call) -> None:
        """Trading takes the raw OAuth token in ``X-EBAY-API-IAF-TOKEN``."""
        token = call.request.headers.get("x-ebay-api-iaf-token")
        if token:
            self._lookup(call, token)

    async def identify_bearer(self, call: Call) -> None:
        """REST APIs take ``Authorization: Bearer <token>``."""
        scheme, _, token = call.request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            self._lookup(call, token.strip())

    def _bearer_problem(self, call: Call, *, user: bool, scope: str) -> Response | None:
        header = call.request.headers.get("authorization")
        if not header:
            call.outcome = "1002"
            return responses.rest_error(1002, 401)
        if not header.lower().startswith("bearer "):
            call.outcome = "1003"
            return responses.rest_error(1003, 401)
        record = call.access
        if record is None or record.problem(time.time()) is not None:
            call.outcome = "1001"
            return responses.rest_error(1001, 401)
        if (record.grant is not None) != user or scope not in record.scopes:
            call.outcome = "1100"
            return responses.rest_error(1100, 403)
        return None

    # --- Trading GetUser -----------------------------------------------------------------------

    async def trading(self, call: Call) -> Response:
        """``POST /ws/api.dll``: only GetUser; failures are HTTP 200 with ``Ack=Failure``."""
        headers = call.request.headers
        if headers.get("x-ebay-api-call-name") != "GetUser":
            call.outcome = "2"
            return responses.trading_failure("2", headers.get("x-ebay-api-call-name") or "")
        site = headers.get("x-ebay-api-siteid", "")
        if not site.isdigit() or not headers.get("x-ebay-api-compatibility-level", "").isdigit():
            call.outcome = "37"
            return responses.trading_failure("37")
        token = headers.get("x-ebay-api-iaf-token")
        record = call.access
        problem = None
        if not token:
            problem = "930"
        elif record is None or record.grant is None:
            problem = "931" if record is None else "21916984"
        else:
            reason = record.problem(time.time())
            if reason is not None:
                problem = responses.TRADING_AUTH_CODES[reason]
        if problem is not None:
            call.outcome = problem
            return responses.trading_failure(problem)
        body = await call.request.body()
        if b"GetUserRequest" not in body:
            call.outcome = "5"
            return responses.trading_failure("5")
        seller = call.seller
        if seller is None:  # the grant's seller was deleted; eBay would not know the token
            call.outcome = "931"
            return responses.trading_failure("931")
        if seller.suspended:
            call.outcome = "841"
            return responses.trading_failure("841")
        call.outcome = "ok"
        return responses.trading_xml("GetUser", _user_xml(seller))

    # --- Identity getUser ----------------------------------------------------------------------

    async def identity(self, call: Call) -> Response:
        """``GET /commerce/identity/v1/user/``."""
        problem = self._bearer_problem(call, user=True, scope=IDENTITY_SCOPE)
        if problem is not None:
            return problem
        seller = call.seller
        if seller is None:
            call.outcome = "1001"
            return responses.rest_error(1001, 401)
        call.outcome = "ok"
        return responses.json_ok(_identity_json(seller))

    # --- Analytics -----------------------------------------------------------------------------

    async def app_rate_limit(self, call: Call) -> Response:
        """``GET /developer/analytics/v1_beta/rate_limit/`` (application token)."""
        problem = self._bearer_problem(call, user=False, scope=API_SCOPE)
        return problem or self._rate_limits(call, seller_id=None)

    async def user_rate_limit(self, call: Call) -> Response:
        """``GET /developer/analytics/v1_beta/user_rate_limit/`` (user token)."""
        problem = self._bearer_problem(call, user=True, scope=API_SCOPE)
        if problem is not None:
            return problem
        return self._rate_limits(call, seller_id=call.seller.user_id if call.seller else None)

    def _rate_limits(self, call: Call, seller_id: str | None) -> Response:
        context = call.request.query_params.get("api_context")
        name = call.request.query_params.get("api_name")
        if context is not None and context not in API_CONTEXTS:
            call.outcome = "2004"
            return responses.rest_error(2004, 400)
        reset = responses.timestamp(next_pacific_midnight())
        entries: list[dict[str, Any]] = []
        for bucket, (api_context, api_name, version, resource) in ANALYTICS_APIS.items():
            if context not in (None, api_context) or name not in (None, api_name):
                continue
            used = self._usage(call.client_id, bucket, seller_id)
            limit = DAILY_LIMITS[bucket]
            rate = {
                "count": used,
                "limit": limit,
                "remaining": max(limit - used, 0),
                "reset": reset,
                "timeWindow": 86400,
            }
            entries.append(
                {
                    "apiContext": api_context,
                    "apiName": api_name,
                    "apiVersion": version,
                    "resources": [{"name": resource, "rates": [rate]}],
                }
            )
        if not entries:
            call.outcome = "no_content"
            return Response(status_code=204)
        call.outcome = "ok"
        return responses.json_ok({"rateLimits": entries})

    def _usage(self, client_id: str | None, bucket: str, seller_id: str | None) -> int:
        with self.state.lock:
            return sum(
                count
                for (cid, api, sid), count in self.state.usage.items()
                if cid == (client_id or "")
                and api == bucket
                and (seller_id is None or sid == seller_id)
            )


def _user_xml(seller: Seller) -> str:
    registered = responses.timestamp(seller.registration_date)
    business = "Commercial" if seller.account_type == "BUSINESS" else "Private"
    return (
        f"<User><AboutMePage>false</AboutMePage><EIASToken>{escape(seller.eias_token)}</EIASToken>"
        f"<Email>{escape(seller.email)}</Email><FeedbackScore>42</FeedbackScore>"
        "<UniqueNegativeFeedbackCount>0</UniqueNegativeFeedbackCount>"
        "<UniquePositiveFeedbackCount>42</UniquePositiveFeedbackCount>"
        "<PositiveFeedbackPercent>100.0</PositiveFeedbackPercent>"
        "<FeedbackPrivate>false</FeedbackPrivate><IDVerified>true</IDVerified>"
        "<eBayGoodStanding>true</eBayGoodStanding><NewUser>false</NewUser>"
        f"<RegistrationAddress><Name>{escape(seller.username)}</Name>"
        f"<Country>{seller.site.country}</Country></RegistrationAddress>"
        f"<RegistrationDate>{registered}</RegistrationDate>"
        f"<Site>{seller.site.code}</Site><Status>Confirmed</Status>"
        f"<UserID>{escape(seller.username)}</UserID><UserIDChanged>false</UserIDChanged>"
        "<VATStatus>NoVATTax</VATStatus>"
        "<SellerInfo><AllowPaymentEdit>true</AllowPaymentEdit><CheckoutEnabled>true</CheckoutEnabled>"
        "<GoodStanding>true</GoodStanding><LiveAuctionAuthorized>false</LiveAuctionAuthorized>"
        "<MerchandizingPref>OptIn</MerchandizingPref><QualifiesForB2BVAT>false</QualifiesForB2BVAT>"
        f"<StoreOwner>{'true' if seller.store_owner else 'false'}</StoreOwner>"
        f"<SellerBusinessType>{business}</SellerBusinessType>"
        "<SafePaymentExempt>false</SafePaymentExempt></SellerInfo>"
        "<BusinessRole>FullMarketPlaceParticipant</BusinessRole></User>"
    )


def _identity_json(seller: Seller) -> dict[str, Any]:
    body: dict[str, Any] = {
        "userId": seller.user_id,
        "username": seller.username,
        "accountType": seller.account_type,
        "registrationMarketplaceId": seller.site.marketplace_id,
        "status": "ACCOUNTONHOLD" if seller.suspended else "CONFIRMED",
    }
    address = {"city": "Springfield", "country": seller.site.country, "postalCode": "12345"}
    if seller.account_type == "BUSINESS":
        body["businessAccount"] = {
            "name": seller.username,
            "email": seller.email,
            "address": address,
        }
    else:
        body["individualAccount"] = {
            "firstName": "Demo",
            "lastName": seller.username,
            "email": seller.email,
            "registrationAddress": address,
        }
    return body
