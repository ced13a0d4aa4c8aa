"""Admin page sessions (server-side, revocable), CSRF tokens and flash messages.

The session cookie holds a random id (256 bits, signed so that junk is refused without a
database round trip); PostgreSQL keeps only its SHA-256 with the person, the org, the roles, an
absolute expiry (never later than the token the person logged in with) and the time it was last
used. A session ends when it expires, when it was idle longer than the idle timeout, at logout,
or when its person logs out everywhere: a copied cookie is worth nothing after any of these.

CSRF tokens are an HMAC of the session id, checked on every form POST; the login form uses a
double-submit token. Flash messages travel in a short-lived signed cookie.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select, update

from connector_api import repository as repo
from connector_api.auth import Identity, parse_roles
from connector_api.signing import Mac, Sealed
from connector_common.db.engine import SessionFactory, unit_of_work
from connector_common.db.models import AdminSessionRecord, Organisation
from connector_common.events import utcnow

SESSION_COOKIE = "connector_session"
FLASH_COOKIE = "connector_flash"
LOGIN_CSRF_COOKIE = "connector_login_csrf"
# A random nonce of the browser that starts an eBay consent on the admin page; the consent's
# state is bound to its hash, so only this browser can complete it.
CONSENT_COOKIE = "connector_consent"
FlashKind = Literal["success", "error", "info"]
FLASH_SECONDS = 120
MAX_COOKIE_CHARS = 200


@dataclass(frozen=True)
class AdminSession:
    """A logged-in person on the admin page."""

    session_id: str
    org_id: uuid.UUID
    org_external_id: str
    subject: str
    roles: frozenset[str]
    expires_at: datetime


@dataclass(frozen=True)
class Flash:
    kind: FlashKind
    message: str


def _hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


class SessionManager:
    """Issues, reads and revokes admin sessions; CSRF tokens and flash messages."""

    def __init__(
        self,
        secret: str,
        sessions: SessionFactory,
        *,
        ttl_seconds: int,
        idle_seconds: int,
        secure: bool,
    ) -> None:
        self._db = sessions
        self._cookie = Mac(secret, "admin-session")
        self._csrf = Mac(secret, "csrf")
        self._flash = Sealed(secret, "flash", max_age_seconds=FLASH_SECONDS)
        self._ttl = timedelta(seconds=ttl_seconds)
        self._idle = timedelta(seconds=idle_seconds)
        self.secure = secure

    async def issue(
        self,
        identity: Identity,
        org_id: uuid.UUID,
        *,
        method: str = "token",
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> tuple[str, AdminSession]:
        """Start a session for a verified identity (audited); the cookie value and session."""
        now = now or utcnow()
        session_id = secrets.token_urlsafe(32)
        session = AdminSession(
            session_id=session_id,
            org_id=org_id,
            org_external_id=identity.org_external_id,
            subject=identity.subject,
            roles=identity.roles,
            expires_at=min(now + self._ttl, identity.expires_at),
        )
        async with unit_of_work(self._db) as db:
            db.add(
                AdminSessionRecord(
                    id_hash=_hash(session_id),
                    org_id=org_id,
                    subject=session.subject,
                    roles=sorted(session.roles),
                    expires_at=session.expires_at,
                )
            )
            repo.add_audit(
                db,
                org_id=org_id,
                actor=session.subject,
                action="session.started",
                account_id=None,
                house_name=None,
                request_id=request_id,
                details={"method": method},
            )
        return f"{session_id}.{self._cookie.mac(session_id)}", session

    def _session_id(self, cookie: str | None) -> str | None:
        if not cookie or len(cookie) > MAX_COOKIE_CHARS:
            return None
        session_id, _, signature = cookie.rpartition(".")
        if not session_id or not self._cookie.verify(session_id, signature):
            return None
        return session_id

    async def read(self, cookie: str | None) -> AdminSession | None:
        """The live session of a cookie (and it is marked as used now), or None when missing,
        forged, expired, idle too long or revoked."""
        session_id = self._session_id(cookie)
        if session_id is None:
            return None
        record = AdminSessionRecord
        async with unit_of_work(self._db) as db:
            row = (
                await db.execute(
                    update(record)
                    .where(
                        record.id_hash == _hash(session_id),
                        record.revoked_at.is_(None),
                        record.expires_at > func.now(),
                        record.last_seen_at > func.now() - self._idle,
                    )
                    .values(last_seen_at=func.now())
                    .returning(record.org_id, record.subject, record.roles, record.expires_at)
                )
            ).one_or_none()
            if row is None:
                return None
            external = await db.scalar(
                select(Organisation.external_id).where(Organisation.id == row.org_id)
            )
        return AdminSession(
            session_id=session_id,
            org_id=row.org_id,
            org_external_id=str(external),
            subject=row.subject,
            roles=parse_roles(list(row.roles)),
            expires_at=row.expires_at,
        )

    async def revoke(self, session: AdminSession, request_id: str | None = None) -> None:
        """End one session (logout; audited)."""
        record = AdminSessionRecord
        async with unit_of_work(self._db) as db:
            await db.execute(
                update(record)
                .where(record.id_hash == _hash(session.session_id), record.revoked_at.is_(None))
                .values(revoked_at=func.now())
            )
            repo.add_audit(
                db,
                org_id=session.org_id,
                actor=session.subject,
                action="session.ended",
                account_id=None,
                house_name=None,
                request_id=request_id,
            )

    async def revoke_all(
        self, org_id: uuid.UUID, subject: str, request_id: str | None = None
    ) -> int:
        """End every live session of a person in an org ("log out everywhere"; audited);
        returns how many were ended."""
        record = AdminSessionRecord
        async with unit_of_work(self._db) as db:
            result = await db.execute(
                update(record)
                .where(
                    record.org_id == org_id,
                    record.subject == subject,
                    record.revoked_at.is_(None),
                    record.expires_at > func.now(),
                )
                .values(revoked_at=func.now())
            )
            ended = int(result.rowcount or 0)  # type: ignore[attr-defined]
            repo.add_audit(
                db,
                org_id=org_id,
                actor=subject,
                action="session.ended_everywhere",
                account_id=None,
                house_name=None,
                request_id=request_id,
                details={"sessions": ended},
            )
        return ended

    def csrf_token(self, session: AdminSession) -> str:
        """The token every form of this session must carry."""
        return self._csrf.mac(session.session_id)

    def csrf_ok(self, session: AdminSession, token: str | None) -> bool:
        """True when a form carried this session's CSRF token."""
        return bool(token) and self._csrf.verify(session.session_id, token or "")

    def login_csrf(self) -> tuple[str, str]:
        """A (cookie value, form token) pair for the login form, before any session exists."""
        nonce = secrets.token_urlsafe(16)
        return nonce, self._csrf.mac("login:" + nonce)

    def login_csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        """Double-submit check of the login form."""
        if not cookie or not token:
            return False
        return self._csrf.verify("login:" + cookie, token)

    def flash(self, kind: FlashKind, message: str) -> str:
        """A signed cookie value carrying a message for the next page (2 minutes)."""
        return self._flash.dumps({"k": kind, "m": message[:500]})

    def read_flash(self, cookie: str | None) -> Flash | None:
        """The message of a flash cookie, if genuine and fresh."""
        if not cookie:
            return None
        try:
            value = self._flash.loads(cookie)
        except ValueError:
            return None
        if not isinstance(value, dict) or value.get("k") not in ("success", "error", "info"):
            return None
        return Flash(kind=value["k"], message=str(value.get("m", "")))
