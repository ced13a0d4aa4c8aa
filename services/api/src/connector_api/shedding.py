"""Load shedding: a replica runs at most ``max_concurrent`` requests at once and lets at most
``max_queued`` more wait (each at most ``max_wait_seconds``); anything beyond is answered at
once with 503 and ``Retry-After``, instead of queueing for seconds behind the database pool and
the event loop. A client (or the ingress) retries elsewhere or later; the replica keeps its
latency for the requests it accepted.

The probes (``/healthz``, ``/readyz``) and ``/metrics`` are never shed, so Kubernetes still
sees a loaded replica alive and ready (it is: it is serving what it can).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque

from starlette.types import ASGIApp, Receive, Scope, Send

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class LoadShedder:
    """A concurrency limit with a bounded, time-limited queue (first come, first served)."""

    def __init__(self, max_concurrent: int, max_queued: int, max_wait_seconds: float) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.max_wait_seconds = max_wait_seconds
        self.running = 0
        self.shed = 0  # requests answered 503 since start
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self) -> bool:
        """True when the request may run (call :meth:`release` after it); False: shed it."""
        if self.running < self.max_concurrent and not self._waiters:
            self.running += 1
            return True
        if self.queued >= self.max_queued:
            self.shed += 1
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.max_wait_seconds):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return True  # the slot was handed over just as the wait ended: it is ours
            self._forget(waiter)
            self.shed += 1
            return False
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, but the client went away: pass it on
            else:
                self._forget(waiter)
            raise
        return True

    def release(self) -> None:
        """End a request: hand its slot to the first waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # ``running`` stays: the slot changes hands
                return
        self.running -= 1

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)


class LoadSheddingMiddleware:
    """Sheds HTTP requests past the :class:`LoadShedder`'s bounds with 503 + Retry-After."""

    def __init__(self, app: ASGIApp, *, shedder: LoadShedder, retry_after_seconds: int) -> None:
        self.app = app
        self.shedder = shedder
        self.retry_after = str(retry_after_seconds).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if not await self.shedder.acquire():
            await self._overloaded(scope, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.shedder.release()

    async def _overloaded(self, scope: Scope, send: Send) -> None:
        context = scope.get("state", {}).get("log_context", {})
        body = {
            "error": "unavailable",
            "message": "the API is overloaded right now; retry after Retry-After seconds",
            "fields": [],
            "request_id": context.get("request_id"),
        }
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", self.retry_after),
                ],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})
