"""Injected failures: what a route does instead of (or before) answering normally.

A fault applies to one route (or ``*``), optionally to one seller, to a share of the calls, for a
number of calls and/or a duration. Kinds:

- ``latency``: wait ``latency_ms`` then answer normally;
- ``rate_limit``: REST/OAuth answer HTTP 429 (errorId 2001) with ``Retry-After: retry_after``;
  Trading answers HTTP 200 ``Ack=Failure`` with error 518;
- ``error``: answer HTTP ``status`` (500 or 503 by default 500) with eBay's error body;
- ``ebay_error``: an eBay error code: Trading ``Ack=Failure`` with ``error_code`` in HTTP 200,
  REST ``errors[].errorId`` with ``status`` (default 400), OAuth ``{"error": error_code}``;
- ``timeout``: hold the request for ``seconds`` (default 60) or until the client gives up;
- ``drop``: send the response head, then close the connection without a body.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ebay_sandbox.state import SandboxError

KINDS = frozenset({"latency", "rate_limit", "error", "ebay_error", "timeout", "drop"})
ROUTES = frozenset(
    {
        "*",
        "authorize",
        "token",
        "trading",
        "identity",
        "rate_limit",
        "user_rate_limit",
        "public_key",  # Notification API getPublicKey (ebay_sandbox.notifications)
    }
)


@dataclass
class Fault:
    """One injected failure rule."""

    route: str
    kind: str
    seller: str | None = None
    probability: float = 1.0
    remaining: int | None = None  # calls left, None = unlimited
    until: float | None = None  # epoch seconds, None = no end
    latency_ms: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    error_code: str | None = None
    seconds: float = 60.0
    client_id: str | None = None
    fault_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    hits: int = 0

    def public(self) -> dict[str, Any]:
        """The control API's view."""
        return {
            "id": self.fault_id,
            "route": self.route,
            "kind": self.kind,
            "seller": self.seller,
            "client_id": self.client_id,
            "probability": self.probability,
            "remaining": self.remaining,
            "until": self.until,
            "latency_ms": self.latency_ms,
            "status": self.status,
            "retry_after": self.retry_after,
            "error_code": self.error_code,
            "seconds": self.seconds,
            "hits": self.hits,
        }


def fault_from_json(body: dict[str, Any]) -> Fault:
    """Validate a control API fault request."""
    route = str(body.get("route", "*"))
    kind = str(body.get("kind", ""))
    if route not in ROUTES:
        raise SandboxError(f"route must be one of {sorted(ROUTES)}")
    if kind not in KINDS:
        raise SandboxError(f"kind must be one of {sorted(KINDS)}")
    try:
        probability = float(body.get("probability", 1.0))
        count = body.get("count")
        duration = body.get("duration")
        fault = Fault(
            route=route,
            kind=kind,
            seller=body.get("seller"),
            client_id=body.get("client_id"),
            probability=probability,
            remaining=int(count) if count is not None else None,
            until=time.time() + float(duration) if duration is not None else None,
            latency_ms=float(body.get("latency_ms", 0.0)),
            status=int(body["status"]) if body.get("status") is not None else None,
            retry_after=float(body["retry_after"]) if body.get("retry_after") is not None else None,
            error_code=str(body["error_code"]) if body.get("error_code") is not None else None,
            seconds=float(body.get("seconds", 60.0)),
        )
    except (TypeError, ValueError) as exc:
        raise SandboxError(f"bad fault: {exc}") from None
    if not 0.0 <= fault.probability <= 1.0:
        raise SandboxError("probability must be between 0 and 1")
    if fault.remaining is not None and fault.remaining < 1:
        raise SandboxError("count must be at least 1")
    if kind == "ebay_error" and not fault.error_code:
        raise SandboxError("an ebay_error fault needs error_code")
    if kind == "error" and fault.status is not None and not 400 <= fault.status <= 599:
        raise SandboxError("status must be an HTTP error status")
    return fault


class FaultBook:
    """The active faults; ``pick`` finds (and uses up) the one that applies to a call."""

    def __init__(self, seed: int | None = None) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)  # noqa: S311 - chaos, not cryptography

    def add(self, fault: Fault) -> Fault:
        """Activate a fault."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self, route: str | None = None) -> int:
        """Remove faults (all, or one route's); returns how many."""
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if route is not None and f.route != route]
            return before - len(self._faults)

    def list(self) -> list[Fault]:
        """The active faults."""
        now = time.time()
        with self._lock:
            self._faults = [f for f in self._faults if f.until is None or f.until > now]
            return list(self._faults)

    def pick(self, route: str, sellers: tuple[str, ...], client_id: str | None) -> Fault | None:
        """The first fault that fires for this call, counted against its budget."""
        if not self._faults:  # the common case: no lock, no work
            return None
        now = time.time()
        with self._lock:
            for fault in self._faults:
                if fault.route not in ("*", route):
                    continue
                if fault.seller is not None and fault.seller not in sellers:
                    continue
                if fault.client_id is not None and fault.client_id != client_id:
                    continue
                if fault.until is not None and fault.until <= now:
                    continue
                if fault.probability < 1.0 and self._random.random() >= fault.probability:
                    continue
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None
