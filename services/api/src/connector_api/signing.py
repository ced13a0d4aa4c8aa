"""Signed values (cursors, CSRF tokens, flash messages, the OIDC login cookie) with itsdangerous.

One secret, a salt per purpose: a value signed for one purpose does not verify for another, so a
list cursor can never be replayed as a CSRF token or a flash message. HMAC-SHA256 with an
HMAC-derived key per salt (itsdangerous' defaults are SHA-1 and a concatenation).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from itsdangerous import BadData, Signer, URLSafeSerializer, URLSafeTimedSerializer

from connector_api.errors import InvalidInput

_SIGNER_KWARGS: dict[str, Any] = {"digest_method": hashlib.sha256, "key_derivation": "hmac"}


def constant_time_equal(expected: str, given: str) -> bool:
    """``hmac.compare_digest`` for any text: False (not TypeError) when ``given`` is not ASCII."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def _salt(purpose: str) -> str:
    return f"connector-api:{purpose}"


class Mac:
    """Signatures of short strings for one purpose (CSRF tokens bound to a session)."""

    def __init__(self, secret: str, purpose: str) -> None:
        self._signer = Signer(secret, salt=_salt(purpose), **_SIGNER_KWARGS)

    def mac(self, data: str) -> str:
        """The signature of ``data`` (URL-safe)."""
        return self._signer.get_signature(data).decode()

    def verify(self, data: str, signature: str) -> bool:
        """Constant-time check of a signature made by :meth:`mac`; any junk is simply False."""
        try:
            return self._signer.verify_signature(data, signature.encode("utf-8", "surrogatepass"))
        except (BadData, ValueError, UnicodeError):
            return False


class Sealed:
    """JSON values, signed (and optionally time-limited) for one purpose."""

    def __init__(self, secret: str, purpose: str, *, max_age_seconds: int | None = None) -> None:
        self._max_age = max_age_seconds
        kwargs: dict[str, Any] = {"salt": _salt(purpose), "signer_kwargs": _SIGNER_KWARGS}
        self._serializer: URLSafeSerializer | URLSafeTimedSerializer = (
            URLSafeTimedSerializer(secret, **kwargs)
            if max_age_seconds is not None
            else URLSafeSerializer(secret, **kwargs)
        )

    def dumps(self, value: Any) -> str:
        """Sign ``value`` (JSON); the result is URL- and cookie-safe."""
        return str(self._serializer.dumps(value))

    def loads(self, token: str) -> Any:
        """The value of a token made by :meth:`dumps`; ValueError when forged or too old."""
        try:
            if isinstance(self._serializer, URLSafeTimedSerializer):
                return self._serializer.loads(token, max_age=self._max_age)
            return self._serializer.loads(token)
        except (BadData, UnicodeError):
            raise ValueError("bad or expired signature") from None


class CursorCodec:
    """Opaque, signed pagination cursors bound to the query they were made for."""

    def __init__(self, secret: str) -> None:
        self._sealed = Sealed(secret, "cursor")

    def encode(self, query: str, position: list[Any]) -> str:
        """A cursor for the page after ``position`` of ``query``."""
        return self._sealed.dumps({"q": query, "p": position})

    def decode(self, query: str, cursor: str) -> list[Any]:
        """The position a cursor points after; 422 when forged or made for another query."""
        if len(cursor) > 1000:
            raise InvalidInput("the cursor is not valid", field="cursor")
        try:
            value = self._sealed.loads(cursor)
        except ValueError:
            raise InvalidInput("the cursor is not valid", field="cursor") from None
        if not isinstance(value, dict) or value.get("q") != query:
            raise InvalidInput(
                "the cursor belongs to another query (filters or sort changed)", field="cursor"
            )
        position = value.get("p")
        if not isinstance(position, list):
            raise InvalidInput("the cursor is not valid", field="cursor")
        return position
