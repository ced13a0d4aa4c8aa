"""eBay's response bodies: OAuth JSON, REST ``errors[]``, Trading XML (success and failure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from starlette.responses import Response

TRADING_VERSION = "1349"
TRADING_BUILD = "E1349_CORE_APISIGNIN_19146446_R1"

OAUTH_ERRORS: dict[str, str] = {
    "invalid_grant_refresh": (
        "the provided authorization refresh token is invalid or was issued to another client"
    ),
    "invalid_grant": (
        "the provided authorization grant code is invalid or was issued to another client"
    ),
    "invalid_client": "client authentication failed",
    "invalid_scope": (
        "The requested scope is invalid, unknown, malformed, or exceeds the scope granted to "
        "the client"
    ),
    "invalid_request": "request is missing a required parameter or malformed",
    "unsupported_grant_type": "grant type in request is not supported by the authorization server",
}

# (errorId, domain, category, message, longMessage) for the REST errors the sandbox sends.
REST_ERRORS: dict[int, tuple[str, str, str, str]] = {
    1001: (
        "OAuth",
        "REQUEST",
        "Invalid access token",
        "Invalid access token. Check the value of the Authorization HTTP request header.",
    ),
    1002: ("OAuth", "REQUEST", "Missing access token", "Access token is required."),
    1003: (
        "OAuth",
        "REQUEST",
        "Token type in the Authorization header is invalid",
        "Token type in the Authorization header is invalid: use Bearer.",
    ),
    1100: (
        "ACCESS",
        "REQUEST",
        "Access denied",
        "Insufficient permissions to fulfill the request.",
    ),
    2001: (
        "ACCESS",
        "REQUEST",
        "Too many requests.",
        "The request limit has been reached for the resource.",
    ),
    2004: ("ACCESS", "REQUEST", "Invalid request", "The request has errors."),
    10001: (
        "API_GATEWAY",
        "APPLICATION",
        "System error.",
        "There was a problem with an eBay "
        "internal system or process. Contact eBay developer support for assistance.",
    ),
}

# Trading error code -> (ShortMessage, LongMessage, ErrorClassification).
TRADING_ERRORS: dict[str, tuple[str, str, str]] = {
    "930": ("Auth token is required.", "Auth token is required for this call.", "RequestError"),
    "931": (
        "Auth token is invalid.",
        "Validation of the authentication token in API request failed.",
        "RequestError",
    ),
    "932": (
        "Auth token is hard expired.",
        "Auth token is hard expired, User needs to generate a new token for this application.",
        "RequestError",
    ),
    "21916984": ("Invalid IAF token.", "IAF token supplied is invalid.", "RequestError"),
    "21917053": ("Expired IAF token.", "IAF token supplied is expired. ", "RequestError"),
    "21916013": (
        "Token has been revoked by App",
        "Token has been revoked by App.",
        "RequestError",
    ),
    "841": (
        "Requested user is suspended.",
        "The account for user ID specified in this request has been suspended. "
        "Sorry, you may not use this feature of the site at this time.",
        "RequestError",
    ),
    "518": (
        "Call usage limit has been reached.",
        "Your application has exceeded usage limit on this call, please make call to "
        "Developer Analytics API to check your call usage.",
        "RequestError",
    ),
    "10007": (
        "Internal error to the application.",
        "Internal error to the application.",
        "SystemError",
    ),
    "37": ("Input data is invalid.", "Input data for tag <Site> is invalid.", "RequestError"),
    "2": ("Unsupported API call.", "The API call is not supported.", "RequestError"),
    "5": (
        "XML Parse error.",
        "XML Error Text: the request is not a GetUserRequest.",
        "RequestError",
    ),
}

# Which Trading code an unusable access token produces.
TRADING_AUTH_CODES = {
    "missing": "930",
    "expired": "21917053",
    "invalid": "21916984",
    "hard_expired": "932",
    "revoked": "21916013",
    "unknown": "931",
}


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def oauth_error(error: str, status: int = 400, description: str | None = None) -> Response:
    """The token endpoint's RFC 6749 error body."""
    name = "invalid_grant" if error == "invalid_grant_refresh" else error
    text = description or OAUTH_ERRORS.get(error, error)
    return _json({"error": name, "error_description": text}, status)


def authorize_error(description: str = "Input request parameters are invalid.") -> Response:
    """The consent page's own error body (note eBay's different field names)."""
    return _json(
        {"error_id": "invalid_request", "error_description": description, "http_status_code": 400},
        400,
    )


def rest_error(error_id: int, status: int, headers: dict[str, str] | None = None) -> Response:
    """A REST ``{"errors": [...]}`` body."""
    domain, category, message, long_message = REST_ERRORS.get(
        error_id, ("API", "REQUEST", "Error.", "Error.")
    )
    body = {
        "errors": [
            {
                "errorId": error_id,
                "domain": domain,
                "category": category,
                "message": message,
                "longMessage": long_message,
            }
        ]
    }
    return _json(body, status, headers)


def json_ok(body: Any, status: int = 200) -> Response:
    """A compact JSON answer."""
    return _json(body, status)


def timestamp(moment: datetime | None = None) -> str:
    """eBay's UTC timestamp format: ``2017-11-03T15:31:05.024Z``."""
    value = moment or datetime.now(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _envelope(call: str, ack: str, inner: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<{call}Response xmlns="urn:ebay:apis:eBLBaseComponents">'
        f"<Timestamp>{timestamp()}</Timestamp><Ack>{ack}</Ack>{inner}"
        f"<Version>{TRADING_VERSION}</Version><Build>{TRADING_BUILD}</Build>"
        f"</{call}Response>"
    )


def trading_failure(code: str, call: str = "GetUser") -> Response:
    """HTTP 200 with ``Ack=Failure`` and one error, as eBay answers a failed Trading call."""
    short, long_message, classification = TRADING_ERRORS.get(
        code, ("Error.", "Error.", "RequestError")
    )
    inner = (
        f"<Errors><ShortMessage>{escape(short)}</ShortMessage>"
        f"<LongMessage>{escape(long_message)}</LongMessage><ErrorCode>{code}</ErrorCode>"
        f"<SeverityCode>Error</SeverityCode>"
        f"<ErrorClassification>{classification}</ErrorClassification></Errors>"
    )
    return Response(_envelope(call, "Failure", inner), 200, media_type="text/xml")


def trading_xml(call: str, inner: str, ack: str = "Success") -> Response:
    """A successful Trading answer."""
    return Response(_envelope(call, ack, inner), 200, media_type="text/xml")
