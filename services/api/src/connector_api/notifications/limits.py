"""Limits of the public notification endpoint: a request rate, and a body size read in chunks
(independent of any limit the API middleware applies to every route)."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.requests import Request


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; not thread-safe (one event loop)."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self) -> float | None:
        """Take one token: None when granted, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / self._rate


class BodyTooLarge(Exception):
    """The request body is larger than allowed."""


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing at once (Content-Length) or as soon as ``limit`` bytes are passed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
