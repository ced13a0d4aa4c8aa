"""Rate limits: per client address and per organisation, 429 with ``Retry-After``.

Two kinds, chosen per rule by what it protects:

- **per replica, in memory** (GCRA, a smoothed token bucket): the broad limits on every request
  (per address, before authentication; per organisation, after it). No round trip, so the
  list route stays cheap. With N replicas behind a balancer an address or org can reach up to
  N times the limit: set the limit to (what one client may do) / N. See docs/api.md.
- **shared by every replica, in PostgreSQL** (a fixed window per key in the UNLOGGED table
  ``rate_limit_counters``: one ``INSERT ... ON CONFLICT DO UPDATE`` per request, no WAL): the
  tight limits on logging in, starting a consent and eBay's callback, where an attacker would
  simply spread guesses over the replicas, and where the route's own work (a token check, a
  database write, a call to eBay) costs far more than the counter. PostgreSQL rather than
  NATS KV: every one of these routes needs PostgreSQL anyway, a counter update is one
  statement, and a NATS outage must not lock people out.

Other routes apply a rule with ``Depends(rate_limit("name", by="address"))``; the address is the
ASGI client address, which uvicorn takes from ``X-Forwarded-For`` only when the proxy is listed
in ``FORWARDED_ALLOW_IPS``.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from sqlalchemy import text
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from connector_api.errors import ApiError
from connector_api.settings import RateLimitSettings
from connector_common.db.engine import SessionFactory, unit_of_work

PERIOD_SECONDS = 60.0
MAX_KEYS = 100_000  # per-replica memory bound: least recently seen keys are forgotten first
Scope = Literal["replica", "shared"]


class RateLimited(ApiError):
    """429: wait ``Retry-After`` seconds."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, what: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"too many {what}; retry in {seconds} s", headers={"Retry-After": str(seconds)}
        )


@dataclass(frozen=True)
class Rule:
    name: str
    limit: int  # per minute
    scope: Scope
    what: str  # for the message: "requests from this address"


class LocalLimiter:
    """GCRA per key, in this process: ``limit`` per minute with a burst of the same size."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: OrderedDict[str, float] = OrderedDict()

    def hit(self, key: str, limit: int) -> float:
        """0 when allowed (and counted), else the seconds to wait."""
        now = self._clock()
        interval = PERIOD_SECONDS / limit
        tat = max(self._tat.get(key, now), now)
        if tat + interval - now > PERIOD_SECONDS:
            return tat + interval - now - PERIOD_SECONDS
        self._tat[key] = tat + interval
        self._tat.move_to_end(key)
        while len(self._tat) > MAX_KEYS:
            self._tat.popitem(last=False)
        return 0.0


class SharedLimiter:
    """A fixed window per key in PostgreSQL, shared by every replica."""

    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def hit(self, key: str, limit: int) -> float:
        """0 when allowed (and counted), else the seconds to wait."""
        async with unit_of_work(self._sessions) as session:
            hits, wait = (
                await session.execute(
                    text(
                        """
                        INSERT INTO rate_limit_counters AS c (bucket, window_end, hits)
                        VALUES (:bucket, now() + make_interval(secs => :period), 1)
                        ON CONFLICT (bucket) DO UPDATE SET
                            hits = CASE WHEN c.window_end > now() THEN c.hits + 1 ELSE 1 END,
                            window_end = CASE WHEN c.window_end > now() THEN c.window_end
                                              ELSE EXCLUDED.window_end END
                        RETURNING hits, extract(epoch FROM window_end - now())
                        """
                    ),
                    {"bucket": key[:300], "period": PERIOD_SECONDS},
                )
            ).one()
        return 0.0 if hits <= limit else max(float(wait), 0.0)


class RateLimits:
    """The rules of this API and the limiters that keep them."""

    def __init__(
        self,
        settings: RateLimitSettings,
        sessions: SessionFactory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = settings.enabled
        self.local = LocalLimiter(clock)
        self.shared = SharedLimiter(sessions)
        self.rules: dict[str, Rule] = {}
        for rule in (
            Rule(
                "address", settings.per_address_per_minute, "replica", "requests from this address"
            ),
            Rule("org", settings.per_org_per_minute, "replica", "requests for this organisation"),
            Rule("login", settings.login_per_address_per_minute, "shared", "login attempts"),
            Rule(
                "connect",
                settings.connect_per_org_per_minute,
                "shared",
                "consents started for this organisation",
            ),
            Rule(
                "callback",
                settings.callback_per_address_per_minute,
                "shared",
                "eBay callbacks from this address",
            ),
        ):
            self.register(rule)

    def register(self, rule: Rule) -> None:
        """Add (or replace) a rule, e.g. for a route of another module."""
        self.rules[rule.name] = rule

    async def check(self, rule_name: str, key: str) -> None:
        """Count one request against a rule; :class:`RateLimited` when over it."""
        if not self.enabled:
            return
        rule = self.rules[rule_name]
        bucket = f"{rule.name}:{key}"
        if rule.scope == "replica":
            wait = self.local.hit(bucket, rule.limit)
        else:
            wait = await self.shared.hit(bucket, rule.limit)
        if wait > 0:
            raise RateLimited(rule.what, wait)


# Probes, scrapes and static files; eBay's account-deletion notifications have a limit of their
# own (services/deletion.py), sized for eBay's few sending addresses.
UNLIMITED_PATHS = ("/healthz", "/readyz", "/metrics", "/static/", "/ebay/notifications/")


class RateLimitMiddleware:
    """The per-address limit on every request (probes and static files excepted), before any
    route, authentication or body parsing runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        state = getattr(scope.get("app"), "state", None)
        limits: RateLimits | None = getattr(getattr(state, "connector", None), "limits", None)
        if scope["type"] != "http" or limits is None or scope["path"].startswith(UNLIMITED_PATHS):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        try:
            await limits.check("address", str(client[0]) if client else "unknown")
        except RateLimited as exc:
            await _too_many(scope, send, exc)
            return
        await self.app(scope, receive, send)


async def _too_many(scope: ASGIScope, send: Send, exc: RateLimited) -> None:
    context = scope.get("state", {}).get("log_context", {})
    body = {
        "error": exc.code,
        "message": exc.message,
        "fields": [],
        "request_id": context.get("request_id"),
    }
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", exc.headers["Retry-After"].encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def client_address(request: Request) -> str:
    """The client's address as uvicorn saw it (proxies trusted via FORWARDED_ALLOW_IPS)."""
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


def rate_limit(
    rule_name: str, by: Literal["address"] = "address"
) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency applying a rule to the client's address."""

    async def dependency(request: Request) -> None:
        limits: RateLimits = request.app.state.connector.limits
        await limits.check(rule_name, client_address(request))

    return dependency
