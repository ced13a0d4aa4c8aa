"""Retry delays: exponential with jitter, never sooner than eBay asked."""

from __future__ import annotations

import random


def retry_delay(attempt: int, base: float, cap: float, *, at_least: float | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1``; ``at_least`` is eBay's Retry-After."""
    ceiling = min(cap, base * 2 ** max(0, min(attempt, 30) - 1))
    # "Equal jitter": spreads retries of many accounts without ever retrying at once.
    delay: float = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - not crypto
    if at_least is not None:
        delay = max(delay, at_least)
    return delay
