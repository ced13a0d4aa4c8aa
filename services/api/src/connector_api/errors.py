"""Errors the API answers with; each maps to one HTTP status and a stable code."""

from __future__ import annotations


class ApiError(Exception):
    """An error a client should see; the message is safe to show (no secrets, no input echo)."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class Unauthorized(ApiError):
    """No valid bearer token (RFC 6750): always carries ``WWW-Authenticate``."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str, *, error: str | None = "invalid_token") -> None:
        # Without any credentials RFC 6750 says not to include an error code.
        challenge = 'Bearer realm="connector"'
        if error:
            description = message.replace('"', "'")
            challenge += f', error="{error}", error_description="{description}"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})
        self.error = error


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            headers={
                "WWW-Authenticate": 'Bearer realm="connector", error="insufficient_scope", '
                f'error_description="{message}"'
            },
        )


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class InvalidInput(ApiError):
    status_code = 422
    code = "invalid"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UpstreamError(ApiError):
    """eBay said no, or could not be reached."""

    status_code = 502
    code = "ebay_error"


class Unavailable(ApiError):
    status_code = 503
    code = "unavailable"


class PreconditionFailed(ApiError):
    """An eBay notification whose signature is missing, malformed, wrong or by an unknown key
    (eBay's SDKs answer 412 too); nothing was changed."""

    status_code = 412
    code = "signature_invalid"


class TooLarge(ApiError):
    status_code = 413
    code = "too_large"


class TooManyRequests(ApiError):
    """Over a rate or a daily budget; ``Retry-After`` says when to come back."""

    status_code = 429
    code = "rate_limited"


def account_not_found() -> NotFound:
    """The one answer for a missing account and another org's account (no existence leak)."""
    return NotFound("no such eBay account")
