"""Everything the sandbox remembers: apps, sellers, consents, tokens, usage, the call log.

One lock guards all of it. Handlers run on one event loop and never await while holding the lock,
so the lock is only contended by control calls made from other threads (tests); it is cheap.

With a state file (``SandboxConfig.state_file``), every change to apps, sellers, codes, grants,
access tokens and usage counters is also marked for :mod:`ebay_sandbox.store`, which writes it
behind: a restarted sandbox knows the same sellers and honours the same tokens. The call log,
faults and runtime settings (``/_sandbox/settings``) stay in memory: they are test tools, and the
command line sets the settings again at start-up.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any

from ebay_sandbox import tokens
from ebay_sandbox.models import (
    ACCESS_TOKEN_LIFETIME,
    API_SCOPE,
    APP_SCOPES,
    CALL_LOG_LIMIT,
    CODE_LIFETIME,
    DEMO_SELLERS,
    IDENTITY_SCOPE,
    REFRESH_TOKEN_LIFETIME,
    USER_SCOPES,
    AccessGrant,
    AppRegistration,
    CallRecord,
    Code,
    Grant,
    SandboxConfig,
    SandboxError,
    Seller,
)
from ebay_sandbox.sites import site_for
from ebay_sandbox.store import StateFile

# Re-exported: callers import the sandbox's vocabulary from here too.
__all__ = [
    "ACCESS_TOKEN_LIFETIME",
    "API_SCOPE",
    "APP_SCOPES",
    "CODE_LIFETIME",
    "IDENTITY_SCOPE",
    "REFRESH_TOKEN_LIFETIME",
    "USER_SCOPES",
    "AccessGrant",
    "AppRegistration",
    "CallRecord",
    "Code",
    "Grant",
    "SandboxConfig",
    "SandboxError",
    "SandboxState",
    "Seller",
]


class SandboxState:
    """The sandbox's memory, guarded by one lock."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.apps: dict[str, AppRegistration] = {}
        self.sellers: dict[str, Seller] = {}
        self.usernames: dict[str, str] = {}
        self.grants: dict[str, Grant] = {}  # by refresh token
        self.access: dict[str, AccessGrant] = {}  # by access token
        self.codes: dict[str, Code] = {}
        self.calls: deque[CallRecord] = deque(maxlen=CALL_LOG_LIMIT)
        self.usage: dict[tuple[str, str, str | None], int] = {}
        self.access_token_lifetime = config.access_token_lifetime
        self.refresh_token_lifetime = config.refresh_token_lifetime
        self.rotate_refresh_tokens = config.rotate_refresh_tokens
        self._issued_since_purge = 0
        # Bumped by reset: a request that arrived before a reset is not logged after it.
        self.generation = 0
        self.file = StateFile(config.state_file) if config.state_file else None
        records = self.file.load() if self.file else {}
        if records:
            self._restore(records)
        else:
            self.reset()
        if self.file:
            self.file.start(self.lock)

    def close(self) -> None:
        """Write what is not written yet and close the state file (if any)."""
        if self.file:
            self.file.close()

    def save(self, kind: str, key: str, obj: Any) -> None:
        """Mark ``obj`` (anything with a ``record()`` method) changed, for the state file.

        Call it after every change of something that must survive a restart; a no-op without a
        state file. ``kind`` names the collection (``seller``, ``grant``...), ``key`` the item.
        """
        if self.file:
            self.file.mark(kind, key, obj, _record)

    def _restore(self, records: dict[str, dict[str, Any]]) -> None:
        """The state a previous run left in the state file, then the configured start-up."""
        with self.lock:
            self.apps = {
                k: AppRegistration.from_record(v) for k, v in records.get("app", {}).items()
            }
            self.sellers = {k: Seller.from_record(v) for k, v in records.get("seller", {}).items()}
            self.usernames = {s.username.lower(): s.user_id for s in self.sellers.values()}
            by_id = {k: Grant.from_record(v) for k, v in records.get("grant", {}).items()}
            self.grants = {g.refresh_token: g for g in by_id.values()}
            self.access = {
                k: AccessGrant.from_record(v, by_id) for k, v in records.get("access", {}).items()
            }
            self.codes = {k: Code.from_record(v) for k, v in records.get("code", {}).items()}
            self.usage = {
                _usage_key(json.loads(k)): int(v) for k, v in records.get("usage", {}).items()
            }
            self._purge_expired()  # what expired long ago is forgotten, on disk too
        # The command line's apps win over the stored ones (a changed secret or accept URL).
        for app in self.config.apps:
            self.register_app(app)
        if self.config.demo_sellers:
            self._create_demo_sellers()

    def _create_demo_sellers(self) -> None:
        for username, site_id, account_type, store in DEMO_SELLERS:
            # A demo seller renamed in an earlier run keeps its user id: not created again.
            if tokens.stable_user_id(username) not in self.sellers:
                self.create_seller(
                    username, site_id, account_type=account_type, store_owner=store, stable=True
                )

    def reset(self) -> None:
        """Back to the start-up state: configured apps, demo sellers, nothing else."""
        with self.lock:
            self.generation += 1
            if self.file:
                self.file.clear()
            self.apps = {app.client_id: app for app in self.config.apps}
            for app in self.apps.values():
                self.save("app", app.client_id, app)
            self.sellers.clear()
            self.usernames.clear()
            self.grants.clear()
            self.access.clear()
            self.codes.clear()
            self.calls.clear()
            self.usage.clear()
            self.access_token_lifetime = self.config.access_token_lifetime
            self.refresh_token_lifetime = self.config.refresh_token_lifetime
            self.rotate_refresh_tokens = self.config.rotate_refresh_tokens
        if self.config.demo_sellers:
            self._create_demo_sellers()

    # --- sellers and apps -------------------------------------------------------------------

    def register_app(self, app: AppRegistration) -> None:
        """Add or replace an app registration."""
        with self.lock:
            self.apps[app.client_id] = app
            self.save("app", app.client_id, app)

    def app_for_ru_name(self, ru_name: str) -> AppRegistration | None:
        """The app a RuName belongs to."""
        return next((a for a in self.apps.values() if a.ru_name == ru_name), None)

    def create_seller(
        self,
        username: str,
        site: str | int,
        *,
        account_type: str = "INDIVIDUAL",
        store_owner: bool = False,
        email: str | None = None,
        stable: bool = False,
    ) -> Seller:
        """Create a seller registered on a site (id, Trading code or marketplace id).

        ``stable`` derives the user id and EIAS token from the username, so a restarted sandbox
        gives its demo sellers the same identity (a reconnect, not a new account).
        """
        found = site_for(site)
        if found is None:
            raise SandboxError(f"unknown site {site!r}")
        if not username or len(username) > 64:
            raise SandboxError("username must be 1-64 characters")
        if account_type not in ("INDIVIDUAL", "BUSINESS"):
            raise SandboxError("account_type must be INDIVIDUAL or BUSINESS")
        seller = Seller(
            user_id=tokens.stable_user_id(username) if stable else tokens.user_id(),
            username=username,
            site=found,
            eias_token=tokens.stable_eias_token(username) if stable else tokens.eias_token(),
            email=email or f"{username}@example.com",
            account_type=account_type,
            store_owner=store_owner,
        )
        with self.lock:
            if username.lower() in self.usernames:
                raise SandboxError(f"seller {username!r} exists")
            self.sellers[seller.user_id] = seller
            self.usernames[username.lower()] = seller.user_id
            self.save("seller", seller.user_id, seller)
        return seller

    def seller(self, username: str) -> Seller:
        """A seller by username (case-insensitive) or user id."""
        user_id = self.usernames.get(username.lower(), username)
        found = self.sellers.get(user_id)
        if found is None:
            raise SandboxError(f"no seller {username!r}")
        return found

    def rename_seller(self, username: str, new_username: str) -> Seller:
        """Change a seller's username (eBay allows it; the user id stays)."""
        with self.lock:
            seller = self.seller(username)
            if new_username.lower() in self.usernames:
                raise SandboxError(f"seller {new_username!r} exists")
            del self.usernames[seller.username.lower()]
            seller.username = new_username
            self.usernames[new_username.lower()] = seller.user_id
            self.save("seller", seller.user_id, seller)
        return seller

    def suspend_seller(self, seller: Seller, suspended: bool) -> Seller:
        """Suspend (or reinstate) a seller."""
        with self.lock:
            seller.suspended = suspended
            self.save("seller", seller.user_id, seller)
        return seller

    # --- consent and tokens -----------------------------------------------------------------

    def issue_code(self, seller: Seller, client_id: str, scopes: frozenset[str]) -> str:
        """A fresh authorization code for a seller's consent."""
        code = tokens.authorization_code()
        with self.lock:
            self.codes[code] = record = Code(
                seller.user_id, client_id, scopes, time.time() + self.config.code_lifetime
            )
            self.save("code", code, record)
        return code

    def issue_access(
        self, client_id: str, scopes: frozenset[str], grant: Grant | None
    ) -> tuple[str, AccessGrant]:
        """A new access token (user token with a grant, else application token)."""
        token = tokens.access_token() if grant else tokens.application_token()
        record = AccessGrant(client_id, scopes, time.time() + self.access_token_lifetime, grant)
        with self.lock:
            self.access[token] = record
            self.save("access", token, record)
            self._issued_since_purge += 1
            if self._issued_since_purge >= 10_000:
                self._purge_expired()
        return token, record

    def new_grant(self, seller_id: str, client_id: str, scopes: frozenset[str]) -> Grant:
        """Consent turned into a refresh token."""
        grant = Grant(
            seller_id,
            client_id,
            scopes,
            tokens.refresh_token(),
            time.time() + self.refresh_token_lifetime,
        )
        with self.lock:
            self.grants[grant.refresh_token] = grant
            self.save("grant", grant.grant_id, grant)
        return grant

    def rotate(self, grant: Grant) -> Grant:
        """Replace a grant's refresh token (only when rotation is switched on)."""
        with self.lock:
            self.grants.pop(grant.refresh_token, None)
            grant.refresh_token = tokens.refresh_token()
            grant.refresh_expires_at = time.time() + self.refresh_token_lifetime
            self.grants[grant.refresh_token] = grant
            self.save("grant", grant.grant_id, grant)
        return grant

    def revoke(self, seller: Seller, client_id: str | None = None) -> int:
        """Withdraw a seller's consent (for one app or all); returns how many grants ended."""
        count = 0
        with self.lock:
            for grant in self.grants.values():
                if grant.seller_id == seller.user_id and client_id in (None, grant.client_id):
                    if not grant.revoked:
                        count += 1
                    grant.revoked = True
                    self.save("grant", grant.grant_id, grant)
        return count

    def invalidate_access(
        self, *, seller: Seller | None = None, token: str | None = None, reason: str = "expired"
    ) -> int:
        """Make access tokens unusable (by seller, or one token); returns how many."""
        count = 0
        with self.lock:
            if token is not None:
                record = self.access.get(token)
                if record is not None:
                    record.invalid_reason = reason
                    self.save("access", token, record)
                    count = 1
            elif seller is not None:
                for key, record in self.access.items():
                    if record.grant is not None and record.grant.seller_id == seller.user_id:
                        record.invalid_reason = reason
                        self.save("access", key, record)
                        count += 1
        return count

    def _purge_expired(self) -> None:
        # Called with the lock held. An hour of grace keeps "expired" answers for recent tokens.
        horizon = time.time() - 3600
        old_tokens = [t for t, r in self.access.items() if r.expires_at < horizon]
        for token in old_tokens:
            del self.access[token]
        old_codes = [c for c, r in self.codes.items() if r.expires_at < horizon]
        for code in old_codes:
            del self.codes[code]
        if self.file:
            self.file.forget("access", old_tokens)
            self.file.forget("code", old_codes)
        self._issued_since_purge = 0

    # --- usage and the call log -------------------------------------------------------------

    def count_usage(self, client_id: str | None, api: str, seller_id: str | None) -> int:
        """Count a call against today's quota; returns the calls made today."""
        key = (client_id or "", api, seller_id)
        with self.lock:
            used = self.usage.get(key, 0) + 1
            self.usage[key] = used
            if self.file:
                self.file.mark("usage", json.dumps(key), used, _same)
        return used

    def log_call(self, record: CallRecord, generation: int) -> None:
        """Append to the call log, unless the sandbox was reset since the call arrived."""
        if generation == self.generation:
            self.calls.append(record)  # deque appends are atomic

    def find_calls(
        self,
        *,
        seller: str | None = None,
        route: str | None = None,
        since: float | None = None,
        client_id: str | None = None,
    ) -> list[CallRecord]:
        """The call log, filtered (seller by username or user id)."""
        names: set[str] | None = None
        if seller is not None:
            names = {seller}
            try:
                found = self.seller(seller)
                names |= {found.username, found.user_id}
            except SandboxError:
                pass
        return [
            c
            for c in list(self.calls)
            if (names is None or c.seller in names)
            and (route is None or c.route == route)
            and (since is None or c.at >= since)
            and (client_id is None or c.client_id == client_id)
        ]


def _record(obj: Any) -> Any:
    """The state file's form of a sandbox object (each model knows its own)."""
    return obj.record()


def _same(value: Any) -> Any:
    return value


def _usage_key(raw: list[Any]) -> tuple[str, str, str | None]:
    return (str(raw[0]), str(raw[1]), None if raw[2] is None else str(raw[2]))
