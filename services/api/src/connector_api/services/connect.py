"""Connecting an eBay seller: consent URL, single-use state, code exchange, create or reconnect.

The flow runs in three steps so that no database transaction stays open while eBay answers:
claim the state (its own transaction: a state is used once, whatever happens next), read the
seller from eBay (no database), then store the account and tokens (one transaction: on any
failure nothing is created).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from connector_api import repository as repo
from connector_api.errors import Conflict, account_not_found
from connector_api.schemas import ConnectRequest, ConnectStarted
from connector_api.services.accounts import health_command, name_taken
from connector_api.services.context import RequestContext
from connector_common.crypto import TokenCipher
from connector_common.db.models import EbayAccount, EbayToken, OAuthState, UsernameChange
from connector_common.ebay import (
    EbayClient,
    EbayError,
    IdentityUser,
    InvalidGrant,
    Site,
    TradingUser,
    UnknownSiteError,
    UserToken,
    site_by_code,
    site_for_marketplace,
)
from connector_common.events import AccountConnected, AccountReconnected, AccountUsernameChanged
from connector_common.outbox import enqueue_command, enqueue_event

# Resolved at each use, so it follows configure_logging even when imported earlier.
log = structlog.stdlib.get_logger(__name__)
STATE_BYTES = 32
MAX_STATE_CHARS = 128
MAX_CODE_CHARS = 2048  # eBay documents at most 1024; leave room, but bound it


class ConnectFailed(Exception):
    """The consent cannot complete; ``message`` is shown to the person (no code, no state)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Seller:
    """Who consented, as eBay describes them."""

    ebay_user_id: str  # Identity userId: immutable, our identity of the seller
    username: str | None
    eias_token: str | None
    site: Site


@dataclass(frozen=True)
class ConnectResult:
    kind: Literal["connected", "reconnected"]
    account_id: uuid.UUID
    house_name: str
    is_active: bool

    @property
    def message(self) -> str:
        """What the person is told."""
        if self.kind == "connected":
            return f"Connected {self.house_name!r}."
        note = "" if self.is_active else " It is deactivated: reactivate it to use it."
        return f"Reconnected {self.house_name!r} with new tokens.{note}"


def hash_state(state: str) -> bytes:
    """What the database stores of a state (never the state itself)."""
    return hashlib.sha256(state.encode()).digest()


async def _new_state(
    session: AsyncSession,
    ctx: RequestContext,
    ebay: EbayClient,
    house_name: str,
    purpose: str,
    ttl_seconds: int,
    account_id: uuid.UUID | None,
    browser_hash: bytes | None,
) -> ConnectStarted:
    state = secrets.token_urlsafe(STATE_BYTES)
    expires_at = ctx.now + timedelta(seconds=ttl_seconds)
    repo.add_state(
        session,
        state_hash=hash_state(state),
        org_id=ctx.principal.org_id,
        actor=ctx.actor,
        house_name=house_name,
        purpose=purpose,
        expires_at=expires_at,
        account_id=account_id,
        browser_hash=browser_hash,
    )
    repo.add_audit(
        session,
        org_id=ctx.principal.org_id,
        actor=ctx.actor,
        action="connect.started" if account_id is None else "reconnect.started",
        account_id=account_id,
        house_name=house_name,
        request_id=ctx.request_id,
    )
    await repo.purge_old_states(session, ctx.now)
    await session.flush()
    return ConnectStarted(consent_url=ebay.consent_url(state), expires_at=expires_at)


async def start_connect(
    session: AsyncSession,
    ctx: RequestContext,
    ebay: EbayClient,
    request: ConnectRequest,
    ttl_seconds: int,
    browser_hash: bytes | None = None,
) -> ConnectStarted:
    """eBay's consent URL for a new account; 409 at once when the house name is taken.

    ``browser_hash`` binds the consent to the browser that started it (the admin page);
    without it (the REST API) whoever holds the URL may complete it: the caller binds it.
    """
    ctx.principal.require_admin()
    if await repo.active_house_name_owner(session, ctx.principal.org_id, request.house_name):
        raise name_taken(request.house_name)
    return await _new_state(
        session, ctx, ebay, request.house_name, request.purpose, ttl_seconds, None, browser_hash
    )


async def start_reconnect(
    session: AsyncSession,
    ctx: RequestContext,
    ebay: EbayClient,
    account_id: uuid.UUID,
    ttl_seconds: int,
    browser_hash: bytes | None = None,
) -> ConnectStarted:
    """eBay's consent URL to give an existing account new tokens (same account id)."""
    ctx.principal.require_admin()
    found = await repo.get_account(session, ctx.principal.org_id, account_id)
    if found is None:
        raise account_not_found()
    account, _token = found
    if account.deleted_by_ebay_at is not None:
        raise Conflict(
            "the seller deleted their eBay account: this account is only a record and cannot be "
            "reconnected; connect the seller's new eBay account as a new account"
        )
    return await _new_state(
        session,
        ctx,
        ebay,
        account.house_name,
        account.purpose,
        ttl_seconds,
        account.id,
        browser_hash,
    )


def hash_browser(nonce: str | None) -> bytes | None:
    """What the database stores of a browser's consent nonce (None without a usable one)."""
    if not nonce or len(nonce) > MAX_STATE_CHARS:
        return None
    return hashlib.sha256(b"browser:" + nonce.encode("utf-8", "surrogatepass")).digest()


def check_callback(state: str | None, code: str | None, error: str | None) -> None:
    """Refuse a callback that is not well formed, before its state is touched (a link without
    ``code`` must not use up the consent)."""
    if not state or len(state) > MAX_STATE_CHARS:
        raise ConnectFailed(
            "invalid_request", "This consent link is incomplete: nothing was connected."
        )
    if error:
        return
    if not code or len(code) > MAX_CODE_CHARS:
        raise ConnectFailed(
            "invalid_request", "eBay sent no authorization code: nothing was connected."
        )


async def claim_state(
    session: AsyncSession,
    state: str | None,
    now: datetime,
    browser_hash: bytes | None = None,
) -> OAuthState:
    """Use a state once; says why when it is missing, unknown, expired, already used or
    bound to another browser (in which case it stays usable by the right one)."""
    if not state or len(state) > MAX_STATE_CHARS:
        raise ConnectFailed(
            "invalid_request", "This consent link is incomplete: nothing was connected."
        )
    digest = hash_state(state)
    pending = await repo.consume_state(session, digest, now, browser_hash)
    if pending is not None:
        return pending
    known = await repo.find_state(session, digest)
    if known is None:
        raise ConnectFailed("state_unknown", "This consent link is unknown: nothing was connected.")
    if known.used_at is None and known.expires_at > now and known.browser_hash is not None:
        raise ConnectFailed(
            "other_browser",
            "This consent was started in another browser: nothing was connected. Finish it in "
            "the browser where you started it, or start again from the admin page here.",
        )
    if known.used_at is not None:
        raise ConnectFailed(
            "state_used",
            "This consent link was already used: nothing more was connected. "
            "Start again from the admin page if needed.",
        )
    raise ConnectFailed(
        "state_expired",
        "This consent link has expired: nothing was connected. Start again from the admin page.",
    )


def _site(trading: TradingUser, identity: IdentityUser) -> Site:
    if trading.site is not None:
        return trading.site
    try:
        if trading.site_code:
            return site_by_code(trading.site_code)
    except UnknownSiteError:
        pass
    if identity.registration_marketplace_id:
        try:
            return site_for_marketplace(identity.registration_marketplace_id)
        except UnknownSiteError:
            pass
    raise ConnectFailed(
        "unknown_site",
        "eBay reports a registration site this connector does not know: nothing was connected.",
    )


async def read_seller(ebay: EbayClient, code: str | None) -> tuple[UserToken, Seller]:
    """Exchange the code and read who the seller is and where they are registered."""
    if not code or len(code) > MAX_CODE_CHARS:
        raise ConnectFailed(
            "invalid_request", "eBay sent no authorization code: nothing was connected."
        )
    try:
        token = await ebay.exchange_code(code)
        access = token.access_token.get_secret_value()
        trading, identity = await asyncio.gather(ebay.get_user(access), ebay.identity_user(access))
    except InvalidGrant:
        raise ConnectFailed(
            "invalid_grant",
            "eBay did not accept the authorization code (expired or already used): "
            "nothing was connected.",
        ) from None
    except EbayError as exc:
        log.warning("connect: eBay call failed", error_kind=exc.kind, http_status=exc.http_status)
        raise ConnectFailed(
            "ebay_error",
            f"eBay answered with an error ({exc.kind}): nothing was connected. Try again.",
        ) from None
    if token.refresh_token is None:
        raise ConnectFailed(
            "ebay_error", "eBay sent no refresh token: nothing was connected. Try again."
        )
    seller = Seller(
        ebay_user_id=identity.user_id,
        username=identity.username or trading.user_id,
        eias_token=trading.eias_token,
        site=_site(trading, identity),
    )
    return token, seller


def _write_tokens(
    row: EbayToken, cipher: TokenCipher, token: UserToken, scopes: list[str], now: datetime
) -> None:
    refresh = token.refresh_token
    assert refresh is not None  # read_seller refuses a grant without one
    row.access_token_ct = cipher.encrypt(
        token.access_token.get_secret_value(), row.account_id, "access_token"
    )
    row.refresh_token_ct = cipher.encrypt(
        refresh.get_secret_value(), row.account_id, "refresh_token"
    )
    row.key_id = cipher.primary_key_id
    row.access_expires_at = token.access_expires_at
    row.refresh_expires_at = token.refresh_expires_at
    row.scopes = list(token.scopes or scopes)
    row.last_refreshed_at = now


async def store_connection(
    session: AsyncSession,
    cipher: TokenCipher,
    pending: OAuthState,
    token: UserToken,
    seller: Seller,
    *,
    scopes: list[str],
    namespace: str,
    request_id: str | None,
    now: datetime,
) -> ConnectResult:
    """Create the account, or reconnect the org's account of the same eBay user."""
    existing = await repo.find_by_ebay_user(session, pending.org_id, seller.ebay_user_id)
    if pending.account_id is not None and (existing is None or existing.id != pending.account_id):
        # A reconnect must be completed by the seller the account belongs to.
        raise ConnectFailed(
            "different_seller",
            f"The eBay seller who consented is not the one {pending.house_name!r} belongs to: "
            "nothing was changed. Reconnect again, signed in to eBay as that account's seller.",
        )
    if existing is None:
        if await repo.active_house_name_owner(session, pending.org_id, pending.house_name):
            raise Conflict(
                f"House name {pending.house_name!r} is now used by another active account: "
                "nothing was connected."
            )
        account = EbayAccount(
            id=uuid.uuid4(),
            org_id=pending.org_id,
            house_name=pending.house_name,
            purpose=pending.purpose,
            is_active=True,
            connected_at=now,
        )
        session.add(account)
        row = EbayToken(account_id=account.id, version=1, lease_epoch=0, refresh_enabled=True)
        session.add(row)
        kind: Literal["connected", "reconnected"] = "connected"
    else:
        account = existing
        kind = "reconnected"
        found = await repo.token_of(session, account.id)
        if found is None:
            row = EbayToken(account_id=account.id, version=1, lease_epoch=0)
            session.add(row)
        else:
            row = found
            # The contract with the token refresher: new material, new version, new lease epoch
            # (a refresher holding the old epoch can no longer write), failures forgotten.
            row.version = row.version + 1
            row.lease_epoch = row.lease_epoch + 1
        row.lease_owner = None
        row.lease_until = None
        row.reconnect_required_at = None
        row.refresh_enabled = account.is_active
        row.consecutive_failures = 0
        row.last_refresh_error = None
        row.retry_at = None
        account.connected_at = now
        _username_history(session, account, seller, namespace, now)
    account.ebay_user_id = seller.ebay_user_id
    account.username = seller.username
    account.eias_token = seller.eias_token
    account.marketplace_id = seller.site.marketplace_id
    account.site_id = seller.site.site_id
    account.site_code = seller.site.code
    _write_tokens(row, cipher, token, scopes, now)
    _announce(session, account, pending, kind, namespace, request_id, now)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"House name {pending.house_name!r} or this eBay seller was connected at the same "
            "time by another request: nothing was connected."
        ) from exc
    return ConnectResult(kind, account.id, account.house_name, account.is_active)


def _username_history(
    session: AsyncSession, account: EbayAccount, seller: Seller, namespace: str, now: datetime
) -> None:
    """A reconnect that finds the seller under a new username keeps the old one in history."""
    old, new = account.username, seller.username
    if old is None or new is None or old == new:
        return
    session.add(
        UsernameChange(
            account_id=account.id,
            old_username=old,
            new_username=new,
            changed_at=now,
            source="reconnect",
        )
    )
    enqueue_event(
        session,
        AccountUsernameChanged(
            org_id=account.org_id,
            account_id=account.id,
            house_name=account.house_name,
            old_username=old,
            new_username=new,
            source="reconnect",
        ),
        namespace,
    )


def _announce(
    session: AsyncSession,
    account: EbayAccount,
    pending: OAuthState,
    kind: Literal["connected", "reconnected"],
    namespace: str,
    request_id: str | None,
    now: datetime,
) -> None:
    event_cls = AccountConnected if kind == "connected" else AccountReconnected
    event = event_cls(
        org_id=account.org_id,
        account_id=account.id,
        house_name=account.house_name,
        actor=pending.actor,
        purpose=account.purpose,
        ebay_user_id=account.ebay_user_id,
        username=account.username,
        marketplace_id=account.marketplace_id,
        site_id=account.site_id,
    )
    enqueue_event(session, event, namespace)
    if account.is_active:
        # A new connection is checked at once; the contract: next check "now", request queued.
        account.next_health_check_at = now
        account.health_requested_at = now
        enqueue_command(session, health_command(account, kind, now), namespace)
    repo.add_audit(
        session,
        org_id=account.org_id,
        actor=pending.actor,
        action=f"account.{kind}",
        account_id=account.id,
        house_name=account.house_name,
        request_id=request_id,
        # No seller data here: an audit entry outlives the account's deletion.
        details={"marketplace_id": account.marketplace_id, "site_id": account.site_id},
    )
