"""Pacing per eBay API, shared by every call a process makes.

eBay's rate limits are per app and API (the token endpoint's ``refresh_token`` grant: 50,000 a
day), and a 429 answer may carry ``Retry-After``. Most 429s a busy refresher sees concern the
call at hand: that call's account waits exactly what eBay asked (its message is redelivered
then), and every other call goes on. When most recent answers of an API are 429s, or a 429
says no calls are left (``X-RateLimit-Remaining: 0``), the API itself is exhausted: then no call
to it leaves this process until the wait eBay asked for is over, instead of thousands of calls
each collecting its own 429.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from connector_common.logs import get_logger

log = get_logger(__name__)

WINDOW_SECONDS = 2.0  # how far back "most recent answers" reaches
MIN_ANSWERS = 20  # fewer answers than this say nothing about the API as a whole
EXHAUSTED_SHARE = 0.8  # this share of 429s among them: the API is exhausted
DEFAULT_PAUSE_SECONDS = 1.0  # when eBay said nothing about how long
MAX_PAUSE_SECONDS = 300.0


@dataclass
class _Api:
    answers: deque[tuple[float, bool]] = field(default_factory=deque)  # (when, rate limited)
    limited: int = 0
    paused_until: float = 0.0


class ApiPacer:
    """Holds calls to an API while eBay says the API (not just one account) is exhausted."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._apis: dict[str, _Api] = {}

    def pause_left(self, api: str) -> float:
        """Seconds until calls to ``api`` may go out again (0: now)."""
        state = self._apis.get(api)
        return max(0.0, state.paused_until - self._clock()) if state else 0.0

    async def wait(self, api: str) -> None:
        """Until calls to ``api`` may go out."""
        # A pause may be extended while waiting: look again after each sleep.
        while (left := self.pause_left(api)) > 0:  # noqa: ASYNC110 - a time, not an event
            await asyncio.sleep(left)

    def observe(
        self, api: str, *, rate_limited: bool, retry_after: float | None, remaining: int | None
    ) -> None:
        """Record one answer of ``api``."""
        now = self._clock()
        state = self._apis.setdefault(api, _Api())
        state.answers.append((now, rate_limited))
        state.limited += rate_limited
        while state.answers and state.answers[0][0] < now - WINDOW_SECONDS:
            _, was_limited = state.answers.popleft()
            state.limited -= was_limited
        if not rate_limited:
            return
        exhausted = remaining == 0 or (
            len(state.answers) >= MIN_ANSWERS
            and state.limited >= EXHAUSTED_SHARE * len(state.answers)
        )
        if not exhausted:
            return
        pause = min(retry_after or DEFAULT_PAUSE_SECONDS, MAX_PAUSE_SECONDS)
        if now + pause > state.paused_until:
            if state.paused_until <= now:
                log.warning(
                    "eBay API exhausted; pausing its calls",
                    api=api,
                    pause_s=round(pause, 1),
                    rate_limited=state.limited,
                    answers=len(state.answers),
                    remaining=remaining,
                )
            state.paused_until = now + pause
