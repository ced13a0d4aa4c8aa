"""eBay failures by meaning, not by message text.

``kind`` is a stable string for logs, metrics and events. Messages come from eBay's own error
fields, passed through the redactor, and never contain a token.
"""

from __future__ import annotations

from datetime import datetime

from connector_common.ebay.models import CallMeta
from connector_common.redaction import redact_text


class EbayError(Exception):
    """Base of every eBay client error."""

    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        meta: CallMeta | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(redact_text(message))
        self.meta = meta
        self.error_code = error_code

    @property
    def message(self) -> str:
        """The redacted message."""
        return str(self.args[0]) if self.args else ""

    @property
    def http_status(self) -> int | None:
        """The HTTP status of the failing call, if there was an answer."""
        return self.meta.http_status if self.meta else None


class ReauthenticationRequired(EbayError):
    """The seller must consent again (or the access token must be refreshed)."""

    kind = "reauthentication_required"


class AccessTokenRejected(ReauthenticationRequired):
    """An API call refused the access token: refresh it (once) and retry."""

    kind = "access_token_rejected"


class InvalidGrant(ReauthenticationRequired):
    """The token endpoint said ``invalid_grant``: refresh token revoked/expired or bad code."""

    kind = "invalid_grant"


class RateLimited(EbayError):
    """eBay refused the call for quota reasons (HTTP 429, Trading 518)."""

    kind = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        meta: CallMeta | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message, meta=meta, error_code=error_code)
        self.retry_after = retry_after  # seconds eBay asked us to wait, if it said


class TransientError(EbayError):
    """Worth retrying later: 5xx, timeouts, connection errors, dropped connections."""

    kind = "transient"


class PermanentError(EbayError):
    """Retrying the same request will not help: other 4xx, invalid_client/scope/request."""

    kind = "permanent"


class SellerSuspended(PermanentError):
    """eBay says the seller is suspended (Trading 841)."""

    kind = "seller_suspended"


class CircuitOpen(EbayError):
    """Calls for this account are paused until ``open_until`` after repeated failures."""

    kind = "circuit_open"

    def __init__(self, key: str, open_until: datetime) -> None:
        super().__init__(f"circuit open for {key} until {open_until.isoformat()}")
        self.key = key
        self.open_until = open_until
