"""eBay's notification public keys, cached per kid: bounded, single-flight, throttled.

- A key eBay gave is kept ``ttl`` seconds (eBay recommends about an hour), at most ``max_keys``
  of them (least recently used go first).
- Concurrent requests naming the same unknown kid share one ``getPublicKey`` call.
- A kid eBay does not know is remembered as unknown for ``negative_ttl`` seconds.
- Fetches of kids not in the cache are throttled (``fetches_per_minute``): a flood of
  notifications with made-up kids costs at most that many eBay calls per minute; beyond it the
  answer is "unavailable" (503: eBay retries a real notification later), never a fetch.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from connector_api.notifications.limits import TokenBucket
from connector_api.notifications.signature import load_public_key
from connector_common.ebay.errors import EbayError
from connector_common.ebay.models import NotificationPublicKey

UNKNOWN_KID_ERRORS = frozenset({"195001"})


class UnknownKey(Exception):
    """eBay does not know this kid: the signature cannot be eBay's."""


class KeyUnavailable(Exception):
    """The key could not be had now (eBay unreachable, or too many new kids): try later."""


@dataclass(frozen=True)
class _Cached:
    key: ec.EllipticCurvePublicKey
    expires: float


Fetch = Callable[[str], Awaitable[NotificationPublicKey]]


class PublicKeyCache:
    """Public keys by kid (one per API process)."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        ttl: float = 3600.0,
        negative_ttl: float = 300.0,
        max_keys: int = 64,
        fetches_per_minute: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_keys = max_keys
        self._clock = clock
        self._keys: OrderedDict[str, _Cached] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._pending: dict[str, asyncio.Task[ec.EllipticCurvePublicKey]] = {}
        self._fetches = TokenBucket(
            rate=fetches_per_minute / 60.0, burst=fetches_per_minute, clock=clock
        )
        self.fetch_count = 0  # getPublicKey calls made (tests, metrics)

    async def get(self, kid: str) -> ec.EllipticCurvePublicKey:
        """The key for ``kid``; raises :class:`UnknownKey` or :class:`KeyUnavailable`."""
        now = self._clock()
        cached = self._keys.get(kid)
        if cached is not None and cached.expires > now:
            self._keys.move_to_end(kid)
            return cached.key
        unknown_until = self._unknown.get(kid)
        if unknown_until is not None and unknown_until > now:
            raise UnknownKey(kid)
        task = self._pending.get(kid)
        if task is None:
            if self._fetches.take() is not None:
                raise KeyUnavailable("too many unknown key ids: not asking eBay now")
            task = asyncio.create_task(self._load(kid), name="ebay-public-key")
            self._pending[kid] = task
            task.add_done_callback(lambda _done: self._pending.pop(kid, None))
        # shield: a caller that goes away does not cancel the fetch the others wait for.
        return await asyncio.shield(task)

    async def _load(self, kid: str) -> ec.EllipticCurvePublicKey:
        self.fetch_count += 1
        try:
            answer = await self._fetch(kid)
        except EbayError as exc:
            if exc.error_code in UNKNOWN_KID_ERRORS or exc.http_status == 404:
                self._remember_unknown(kid)
                raise UnknownKey(kid) from None
            raise KeyUnavailable(f"eBay getPublicKey failed ({exc.kind})") from None
        if answer.algorithm.upper() != "ECDSA":
            raise KeyUnavailable("eBay's key is not an ECDSA key")
        try:
            key = load_public_key(answer.pem)
        except ValueError:
            raise KeyUnavailable("eBay's key cannot be read") from None
        self._keys[kid] = _Cached(key, self._clock() + self._ttl)
        self._keys.move_to_end(kid)
        while len(self._keys) > self._max_keys:
            self._keys.popitem(last=False)
        self._unknown.pop(kid, None)
        return key

    def _remember_unknown(self, kid: str) -> None:
        self._unknown[kid] = self._clock() + self._negative_ttl
        self._unknown.move_to_end(kid)
        while len(self._unknown) > self._max_keys * 16:
            self._unknown.popitem(last=False)
