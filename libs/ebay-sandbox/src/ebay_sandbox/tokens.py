"""Identifiers shaped like eBay's: OAuth tokens and codes, EIAS tokens, request ids, rlogids."""

from __future__ import annotations

import base64
import hashlib
import secrets
import string

# Prefixes as seen on real eBay values. `r^1` marks refresh tokens and codes, `r^0` access tokens;
# `p^3` is a user token, `p^1` an application token.
_ACCESS_PREFIX = "v^1.1#i^1#p^3#r^0#I^3#f^0#t^"
_APP_PREFIX = "v^1.1#i^1#p^1#r^0#I^3#f^0#t^"
_REFRESH_PREFIX = "v^1.1#i^1#p^3#I^3#r^1#f^0#t^"
_CODE_PREFIX = "v^1.1#i^1#f^0#I^3#r^1#p^3#t^"

_ALNUM = string.ascii_letters + string.digits


def _tail(size: int) -> str:
    # Standard base64 (with + / =), like eBay's tails: tests then cover URL and form encoding.
    return base64.b64encode(secrets.token_bytes(size)).decode("ascii")


def access_token() -> str:
    """A user access token (real ones are ~2 KB; this keeps the shape at a fraction of it)."""
    return _ACCESS_PREFIX + _tail(480)


def application_token() -> str:
    """An application (client credentials) token."""
    return _APP_PREFIX + _tail(360)


def refresh_token() -> str:
    """A refresh token."""
    return _REFRESH_PREFIX + _tail(96)


def authorization_code() -> str:
    """An authorization code (at most 1024 characters on eBay)."""
    return _CODE_PREFIX + _tail(150)


def eias_token() -> str:
    """A stable EIAS user token (``nY+sHZ2P...==``)."""
    return "nY+sHZ2PrBmdj6wVnY+sEZ2PrA2dj6" + _tail(30)


def user_id() -> str:
    """An immutable Identity API user id (11 characters, like ``ma8vp1jySJC``)."""
    return "".join(secrets.choice(_ALNUM) for _ in range(11))


def stable_user_id(username: str) -> str:
    """A user id derived from the username: the demo sellers keep theirs across restarts."""
    digest = int.from_bytes(hashlib.sha256(b"sandbox-user:" + username.encode()).digest(), "big")
    chars = []
    for _ in range(11):
        digest, index = divmod(digest, len(_ALNUM))
        chars.append(_ALNUM[index])
    return "".join(chars)


def stable_eias_token(username: str) -> str:
    """An EIAS token derived from the username (demo sellers)."""
    tail = base64.b64encode(hashlib.sha256(b"sandbox-eias:" + username.encode()).digest()[:30])
    return "nY+sHZ2PrBmdj6wVnY+sEZ2PrA2dj6" + tail.decode("ascii")


def request_id() -> str:
    """An ``X-EBAY-C-REQUEST-ID`` value (``ri=...,rci=...``)."""
    return "ri=" + secrets.token_urlsafe(9) + ",rci=" + secrets.token_urlsafe(12)


def rlogid() -> str:
    """An ``rlogid`` trace id (URL-encoded, as eBay sends it)."""
    return "t6n%60uk%60jt%3Fvjdwldbkbtub%3E" + secrets.token_hex(12) + "-0x" + secrets.token_hex(2)
