"""HMAC signing with one secret and a derived key per purpose (cursors, CSRF, flash messages).

A value signed for one purpose does not verify for another, so a list cursor can never be
replayed as a CSRF token or a flash message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from connector_api.errors import InvalidInput


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def constant_time_equal(expected: str, given: str) -> bool:
    """``hmac.compare_digest`` for any text: False (not TypeError) when ``given`` is not ASCII."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


class Signer:
    """Signs and verifies short values for one purpose."""

    def __init__(self, secret: str, purpose: str) -> None:
        self._key = hmac.new(
            secret.encode(), b"connector-api:" + purpose.encode(), hashlib.sha256
        ).digest()

    def mac(self, data: str) -> str:
        """The signature of ``data`` (URL-safe)."""
        return _b64(hmac.new(self._key, data.encode(), hashlib.sha256).digest())

    def verify_mac(self, data: str, signature: str) -> bool:
        """Constant-time check of a signature made by :meth:`mac`."""
        # Bytes, not str: compare_digest raises TypeError on a non-ASCII str, and signatures
        # arrive from forms, cookies and query strings (a bad one is refused, never a 500).
        return constant_time_equal(self.mac(data), signature)

    def dumps(self, value: Any) -> str:
        """JSON-encode and sign ``value``."""
        body = _b64(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{self.mac(body)}"

    def loads(self, token: str) -> Any:
        """The value of a token made by :meth:`dumps`; raises ValueError when tampered with."""
        body, _, signature = token.partition(".")
        if not body or not signature or not self.verify_mac(body, signature):
            raise ValueError("bad signature")
        try:
            return json.loads(_unb64(body))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise ValueError("bad payload") from None


class CursorCodec:
    """Opaque, signed pagination cursors bound to the query they were made for."""

    def __init__(self, secret: str) -> None:
        self._signer = Signer(secret, "cursor")

    def encode(self, query: str, position: list[Any]) -> str:
        """A cursor for the page after ``position`` of ``query``."""
        return self._signer.dumps({"q": query, "p": position})

    def decode(self, query: str, cursor: str) -> list[Any]:
        """The position a cursor points after; 422 when forged or made for another query."""
        if len(cursor) > 1000:
            raise InvalidInput("the cursor is not valid", field="cursor")
        try:
            value = self._signer.loads(cursor)
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
