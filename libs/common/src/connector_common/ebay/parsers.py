"""Turning eBay's answers into typed results (errors are raised by :mod:`wire`)."""

from __future__ import annotations

from typing import Any

from connector_common.ebay.errors import TransientError
from connector_common.ebay.models import (
    CallMeta,
    IdentityUser,
    NotificationPublicKey,
    Rate,
    RateLimitApi,
    RateLimitResource,
    RateLimits,
    TradingUser,
)
from connector_common.ebay.sites import UnknownSiteError, site_by_code
from connector_common.ebay.wire import (
    TRADING_NS,
    HttpAnswer,
    find_text,
    json_body,
    parse_bool,
    parse_timestamp,
    rest_error,
    trading_root,
)


def parse_trading_user(response: HttpAnswer, meta: CallMeta) -> TradingUser:
    root = trading_root(response, meta)
    user = root.find(f"{TRADING_NS}User")
    user_id = find_text(user, "UserID") if user is not None else None
    if user is None or not user_id:
        raise TransientError(
            "eBay GetUser answer has no User/UserID", meta=meta, error_code="bad_xml"
        )
    seller_info = user.find(f"{TRADING_NS}SellerInfo")
    site_code = find_text(user, "Site")
    try:
        site = site_by_code(site_code) if site_code else None
    except UnknownSiteError:
        site = None  # a site newer than our table: keep the code, do not fail the call
    return TradingUser(
        user_id=user_id,
        eias_token=find_text(user, "EIASToken"),
        site_code=site_code,
        site=site,
        status=find_text(user, "Status"),
        registration_date=parse_timestamp(find_text(user, "RegistrationDate")),
        email=find_text(user, "Email"),
        seller_good_standing=(
            parse_bool(find_text(seller_info, "GoodStanding")) if seller_info is not None else None
        ),
        store_owner=(
            parse_bool(find_text(seller_info, "StoreOwner")) if seller_info is not None else None
        ),
        meta=meta,
    )


def parse_identity(response: HttpAnswer, meta: CallMeta) -> IdentityUser:
    if response.status_code != 200:
        raise rest_error(response, meta, "eBay Identity")
    body = json_body(response, meta, "eBay Identity")
    user_id = body.get("userId")
    if not isinstance(user_id, str) or not user_id:
        raise TransientError("eBay Identity answer has no userId", meta=meta, error_code="bad_json")

    def text(name: str) -> str | None:
        value = body.get(name)
        return str(value) if value is not None else None

    return IdentityUser(
        user_id=user_id,
        username=text("username"),
        account_type=text("accountType"),
        registration_marketplace_id=text("registrationMarketplaceId"),
        status=text("status"),
        meta=meta,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_rate_limits(response: HttpAnswer, meta: CallMeta) -> RateLimits:
    if response.status_code == 204:
        return RateLimits((), meta)
    if response.status_code != 200:
        raise rest_error(response, meta, "eBay Analytics")
    body = json_body(response, meta, "eBay Analytics")
    apis: list[RateLimitApi] = []
    for entry in body.get("rateLimits") or []:
        if not isinstance(entry, dict):
            continue
        resources = tuple(
            RateLimitResource(
                name=str(resource.get("name", "")),
                rates=tuple(
                    Rate(
                        count=_int(rate.get("count")),
                        limit=_int(rate.get("limit")),
                        remaining=_int(rate.get("remaining")),
                        reset=parse_timestamp(rate.get("reset")),
                        time_window_seconds=_int(rate.get("timeWindow")),
                    )
                    for rate in resource.get("rates") or []
                    if isinstance(rate, dict)
                ),
            )
            for resource in entry.get("resources") or []
            if isinstance(resource, dict)
        )
        apis.append(
            RateLimitApi(
                api_context=str(entry.get("apiContext", "")),
                api_name=str(entry.get("apiName", "")),
                api_version=entry.get("apiVersion"),
                resources=resources,
            )
        )
    return RateLimits(tuple(apis), meta)


PEM_BEGIN = "-----BEGIN PUBLIC KEY-----"
PEM_END = "-----END PUBLIC KEY-----"


def parse_public_key(response: HttpAnswer, meta: CallMeta) -> NotificationPublicKey:
    """Notification API ``getPublicKey``: ``{"key": "-----BEGIN PUBLIC KEY-----MFkw...",
    "algorithm": "ECDSA", "digest": "SHA1"}``; an unknown kid is 404 (errorId 195001)."""
    if response.status_code != 200:
        raise rest_error(response, meta, "eBay Notification getPublicKey")
    body = json_body(response, meta, "eBay Notification getPublicKey")
    key = body.get("key")
    if not isinstance(key, str) or PEM_BEGIN not in key or PEM_END not in key:
        raise TransientError(
            "eBay Notification getPublicKey: the answer holds no PEM key",
            meta=meta,
            error_code="bad_json",
        )
    return NotificationPublicKey(
        pem=key,
        algorithm=str(body.get("algorithm", "")),
        digest=str(body.get("digest", "")),
        meta=meta,
    )


def pem_lines(key: str) -> str:
    """eBay's one-line PEM with the line breaks a PEM parser needs."""
    body = key.replace(PEM_BEGIN, "").replace(PEM_END, "").strip()
    body = "".join(body.split())
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([PEM_BEGIN, *lines, PEM_END]) + "\n"
