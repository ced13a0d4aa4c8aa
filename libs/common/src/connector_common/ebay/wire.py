"""Reading eBay's answers: token JSON, REST ``errors[]``, Trading XML, and what each failure means.

Errors are classified by status and eBay error codes, never by message text (Trading messages
are localized per site).
"""

from __future__ import annotations

import json
import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from connector_common.ebay.errors import (
    AccessTokenRejected,
    EbayError,
    InvalidGrant,
    PermanentError,
    RateLimited,
    SellerSuspended,
    TransientError,
)
from connector_common.ebay.models import CallMeta

TRADING_NS = "{urn:ebay:apis:eBLBaseComponents}"
# Trading codes that mean "this token is no good": refresh, or consent again.
TRADING_REAUTH_CODES = frozenset({"930", "931", "932", "21916984", "21917053", "21916013"})
TRADING_RATE_LIMIT_CODES = frozenset({"518"})
TRADING_SUSPENDED_CODES = frozenset({"841"})
REST_TOKEN_ERROR_IDS = frozenset({"1001", "1002", "1003"})
REST_RATE_LIMIT_IDS = frozenset({"2001"})
OAUTH_PERMANENT = frozenset(
    {
        "invalid_client",
        "invalid_scope",
        "invalid_request",
        "unauthorized_client",
        "unsupported_grant_type",
        "access_denied",
    }
)
_HEADER_PREFIXES = ("x-ebay-c-", "x-ratelimit-", "ratelimit-")
_HEADER_NAMES = frozenset({"rlogid", "retry-after", "x-ebay-request-id"})
_NEVER = ("token", "authorization", "cookie", "secret")


class HttpAnswer(Protocol):
    """An HTTP answer as the parsers read it (ours, or an ``HttpAnswer`` in tests)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive ``get``

    @property
    def content(self) -> bytes: ...


def ebay_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """The response headers worth keeping: eBay ids and rate limits, never anything secret."""
    kept: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        lower = name.lower()
        if any(word in lower for word in _NEVER):
            continue
        if lower in _HEADER_NAMES or lower.startswith(_HEADER_PREFIXES):
            kept[lower] = value[:256]
    return kept


def remaining_from_headers(headers: dict[str, str]) -> int | None:
    """``X-RateLimit-Remaining`` / ``RateLimit-Remaining`` when eBay sends one."""
    for name in ("x-ratelimit-remaining", "ratelimit-remaining"):
        value = headers.get(name)
        if value is not None:
            try:
                return int(value.split(",")[0].strip())
            except ValueError:
                return None
    return None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or garbled."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (now if now is not None else time.time())
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)


def _json(response: HttpAnswer) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _text(value: Any, limit: int = 300) -> str:
    return str(value)[:limit] if value is not None else ""


def status_error(response: HttpAnswer, meta: CallMeta, what: str) -> EbayError:
    """A failure known only by its HTTP status."""
    status = response.status_code
    if status == 429:
        return RateLimited(
            f"{what}: HTTP 429",
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
            meta=meta,
            error_code="429",
        )
    if status >= 500 or status < 400:
        return TransientError(f"{what}: HTTP {status}", meta=meta, error_code=str(status))
    return PermanentError(f"{what}: HTTP {status}", meta=meta, error_code=str(status))


def oauth_error(response: HttpAnswer, meta: CallMeta) -> EbayError:
    """Classify a failed token endpoint answer (RFC 6749 ``error`` or eBay's ``errors[]``)."""
    body = _json(response)
    if isinstance(body, dict) and "errors" in body:
        return rest_error(response, meta, "eBay OAuth")
    error = None
    description = ""
    if isinstance(body, dict):
        error = body.get("error") or body.get("error_id")
        description = _text(body.get("error_description"))
    if response.status_code == 429:
        return status_error(response, meta, "eBay OAuth")
    if error == "invalid_grant":
        return InvalidGrant(f"eBay OAuth invalid_grant: {description}", meta=meta, error_code=error)
    if isinstance(error, str) and error in OAUTH_PERMANENT:
        return PermanentError(f"eBay OAuth {error}: {description}", meta=meta, error_code=error)
    if response.status_code >= 500:
        return status_error(response, meta, "eBay OAuth")
    if isinstance(error, str) and error:
        return PermanentError(
            f"eBay OAuth {_text(error, 60)}: {description}", meta=meta, error_code=_text(error, 60)
        )
    return status_error(response, meta, "eBay OAuth")


def rest_error(response: HttpAnswer, meta: CallMeta, what: str) -> EbayError:
    """Classify a failed REST answer by status and ``errors[0].errorId``."""
    body = _json(response)
    error_id: str | None = None
    message = ""
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0]
        if isinstance(first, dict):
            error_id = _text(first.get("errorId"), 20) or None
            message = _text(first.get("longMessage") or first.get("message"))
    status = response.status_code
    text = f"{what}: HTTP {status}" + (f" error {error_id}: {message}" if error_id else "")
    if status == 429 or error_id in REST_RATE_LIMIT_IDS:
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return RateLimited(text, retry_after=retry_after, meta=meta, error_code=error_id or "429")
    if status == 401 or error_id in REST_TOKEN_ERROR_IDS:
        return AccessTokenRejected(text, meta=meta, error_code=error_id or "401")
    if status >= 500:
        return TransientError(text, meta=meta, error_code=error_id or str(status))
    return PermanentError(text, meta=meta, error_code=error_id or str(status))


def _parse_xml(content: bytes) -> ET.Element:
    # eBay is the only source of this XML. Python's expat (>= 2.4.1) refuses entity expansion
    # attacks and ElementTree never fetches external entities, so the stdlib parser is safe here.
    return ET.fromstring(content)  # noqa: S314


def trading_root(response: HttpAnswer, meta: CallMeta) -> ET.Element:
    """The Trading response element, or the error its Ack/Errors (or HTTP status) mean."""
    if response.status_code != 200:
        if response.status_code == 401:
            raise AccessTokenRejected("eBay Trading: HTTP 401", meta=meta, error_code="401")
        raise status_error(response, meta, "eBay Trading")
    try:
        root = _parse_xml(response.content)
    except ET.ParseError:
        raise TransientError(
            "eBay Trading answered with unreadable XML", meta=meta, error_code="bad_xml"
        ) from None
    ack = find_text(root, "Ack")
    if ack in ("Failure", "PartialFailure"):
        raise trading_error(root, meta)
    return root


def trading_error(root: ET.Element, meta: CallMeta) -> EbayError:
    """The most meaningful of a Trading answer's errors (re-auth first, then limits)."""
    errors: list[tuple[str, str, str]] = []
    for element in root.iter(f"{TRADING_NS}Errors"):
        if find_text(element, "SeverityCode") == "Warning":
            continue
        errors.append(
            (
                find_text(element, "ErrorCode") or "",
                find_text(element, "LongMessage") or find_text(element, "ShortMessage") or "",
                find_text(element, "ErrorClassification") or "",
            )
        )
    codes = {code for code, _m, _c in errors}
    first_code, first_message, _ = errors[0] if errors else ("", "Ack=Failure", "")

    def pick(wanted: frozenset[str]) -> tuple[str, str]:
        return next(((c, m) for c, m, _k in errors if c in wanted), (first_code, first_message))

    if codes & TRADING_REAUTH_CODES:
        code, message = pick(TRADING_REAUTH_CODES)
        return AccessTokenRejected(
            f"eBay Trading error {code}: {message}", meta=meta, error_code=code
        )
    if codes & TRADING_RATE_LIMIT_CODES:
        code, message = pick(TRADING_RATE_LIMIT_CODES)
        return RateLimited(f"eBay Trading error {code}: {message}", meta=meta, error_code=code)
    if codes & TRADING_SUSPENDED_CODES:
        code, message = pick(TRADING_SUSPENDED_CODES)
        return SellerSuspended(f"eBay Trading error {code}: {message}", meta=meta, error_code=code)
    text = f"eBay Trading error {first_code}: {first_message}"
    if any(kind == "SystemError" for _c, _m, kind in errors):
        return TransientError(text, meta=meta, error_code=first_code or None)
    return PermanentError(text, meta=meta, error_code=first_code or None)


def find_text(element: ET.Element, name: str) -> str | None:
    """Text of the first child ``name`` in eBay's namespace (stripped), or None."""
    child = element.find(f"{TRADING_NS}{name}")
    if child is None or child.text is None:
        return None
    return child.text.strip()


def parse_timestamp(value: str | None) -> datetime | None:
    """eBay's ISO-8601 UTC timestamps (``2017-11-01T20:21:09.000Z``)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_bool(value: str | None) -> bool | None:
    """Trading booleans are ``true``/``false``."""
    if value is None:
        return None
    return value.lower() == "true"


def json_body(response: HttpAnswer, meta: CallMeta, what: str) -> dict[str, Any]:
    """A 2xx JSON object body, or a transient error if eBay sent something unreadable."""
    body = _json(response)
    if not isinstance(body, dict):
        raise TransientError(
            f"{what} answered with unreadable JSON", meta=meta, error_code="bad_json"
        )
    return body
