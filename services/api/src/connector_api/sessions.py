"""Admin page sessions, CSRF tokens and flash messages.

The session cookie is a short JWT signed with the API's session secret (not the identity
provider's token itself): HttpOnly, SameSite=Strict, Secure when served over https, and never
longer-lived than the token the person logged in with. CSRF tokens are an HMAC of the session
id, checked on every form POST. Flash messages travel in a short-lived signed cookie.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import jwt

from connector_api.auth import Identity, parse_roles
from connector_api.signing import Signer
from connector_common.events import utcnow

SESSION_COOKIE = "connector_session"
FLASH_COOKIE = "connector_flash"
LOGIN_CSRF_COOKIE = "connector_login_csrf"
SESSION_AUDIENCE = "connector-admin-session"
FlashKind = Literal["success", "error", "info"]


@dataclass(frozen=True)
class AdminSession:
    """A logged-in person on the admin page."""

    session_id: str
    subject: str
    org_external_id: str
    roles: frozenset[str]
    expires_at: datetime


@dataclass(frozen=True)
class Flash:
    kind: FlashKind
    message: str


class SessionManager:
    """Issues and reads admin sessions, CSRF tokens and flash messages."""

    def __init__(self, secret: str, *, ttl_seconds: int, secure: bool) -> None:
        self._key = Signer(secret, "admin-session").mac("key")
        self._csrf = Signer(secret, "csrf")
        self._flash = Signer(secret, "flash")
        self._ttl = timedelta(seconds=ttl_seconds)
        self.secure = secure

    def issue(self, identity: Identity, now: datetime | None = None) -> tuple[str, AdminSession]:
        """A session cookie value for a verified identity."""
        now = now or utcnow()
        expires = min(now + self._ttl, identity.expires_at)
        session = AdminSession(
            session_id=secrets.token_urlsafe(16),
            subject=identity.subject,
            org_external_id=identity.org_external_id,
            roles=identity.roles,
            expires_at=expires,
        )
        claims: dict[str, Any] = {
            "sid": session.session_id,
            "sub": session.subject,
            "org": session.org_external_id,
            "roles": sorted(session.roles),
            "aud": SESSION_AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        return jwt.encode(claims, self._key, algorithm="HS256"), session

    def read(self, cookie: str | None) -> AdminSession | None:
        """The session of a cookie, or None when missing, forged or expired."""
        if not cookie or len(cookie) > 4096:
            return None
        try:
            claims = jwt.decode(
                cookie,
                self._key,
                algorithms=["HS256"],
                audience=SESSION_AUDIENCE,
                options={"require": ["exp", "sub", "sid", "org"]},
            )
        except jwt.PyJWTError:
            return None
        return AdminSession(
            session_id=str(claims["sid"]),
            subject=str(claims["sub"]),
            org_external_id=str(claims["org"]),
            roles=parse_roles(claims.get("roles")),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), utcnow().tzinfo),
        )

    def csrf_token(self, session: AdminSession) -> str:
        """The token every form of this session must carry."""
        return self._csrf.mac(session.session_id)

    def csrf_ok(self, session: AdminSession, token: str | None) -> bool:
        """True when a form carried this session's CSRF token."""
        return bool(token) and self._csrf.verify_mac(session.session_id, token or "")

    def login_csrf(self) -> tuple[str, str]:
        """A (cookie value, form token) pair for the login form, before any session exists."""
        nonce = secrets.token_urlsafe(16)
        return nonce, self._csrf.mac("login:" + nonce)

    def login_csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        """Double-submit check of the login form."""
        if not cookie or not token:
            return False
        return self._csrf.verify_mac("login:" + cookie, token)

    def flash(self, kind: FlashKind, message: str, now: datetime | None = None) -> str:
        """A signed cookie value carrying a message for the next page."""
        expires = (now or utcnow()) + timedelta(minutes=2)
        return self._flash.dumps({"k": kind, "m": message[:500], "e": int(expires.timestamp())})

    def read_flash(self, cookie: str | None, now: datetime | None = None) -> Flash | None:
        """The message of a flash cookie, if genuine and fresh."""
        if not cookie:
            return None
        try:
            value = self._flash.loads(cookie)
        except ValueError:
            return None
        if not isinstance(value, dict) or value.get("k") not in ("success", "error", "info"):
            return None
        if int(value.get("e", 0)) < int((now or utcnow()).timestamp()):
            return None
        return Flash(kind=value["k"], message=str(value.get("m", "")))
