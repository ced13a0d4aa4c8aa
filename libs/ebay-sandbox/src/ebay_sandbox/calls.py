"""The wrapper every eBay-facing route runs in: identify the caller, apply faults, log the call.

Routes are plain ASGI callables (not Starlette request/response functions) because two faults need
the raw connection: ``drop`` sends a response head and closes the socket, ``timeout`` holds the
request until the client hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ebay_sandbox import responses, tokens
from ebay_sandbox.faults import Fault
from ebay_sandbox.state import AccessGrant, CallRecord, Seller

if TYPE_CHECKING:
    from ebay_sandbox.app import Sandbox

DAILY_LIMITS = {
    "trading": 5000,
    "identity": 5000,
    "analytics": 5000,
    "notification": 10_000,
    "oauth": 50_000,
}


class DroppedConnection(Exception):
    """Raised after a response head to make the server close the connection mid-response."""


class _QuietDrops(logging.Filter):
    """Keep the server's error log free of the drops we cause on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DroppedConnection)


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


@dataclass
class Call:
    """What a route learned about one request, for faults and the call log."""

    route: str
    request: Request
    style: str  # "oauth", "rest", "trading", "page": how faults render
    api: str  # usage bucket for rate-limit headers
    seller: Seller | None = None
    client_id: str | None = None
    access: AccessGrant | None = None
    form: dict[str, str] = field(default_factory=dict)
    outcome: str = "ok"
    request_id: str = field(default_factory=tokens.request_id)
    generation: int = 0

    def seller_names(self) -> tuple[str, ...]:
        """Names a fault or log filter may use for this call's seller."""
        if self.seller is None:
            return ()
        return (self.seller.username, self.seller.user_id)


Identify = Callable[[Call], Awaitable[None]]
Handle = Callable[[Call], Awaitable[Response]]


class EbayRoute:
    """An ASGI endpoint for one eBay operation."""

    def __init__(
        self,
        sandbox: Sandbox,
        route: str,
        style: str,
        api: str,
        identify: Identify,
        handle: Handle,
    ) -> None:
        self.sandbox = sandbox
        self.route = route
        self.style = style
        self.api = api
        self.identify = identify
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.time()
        started = time.perf_counter()
        call = Call(self.route, Request(scope, receive), self.style, self.api)
        call.generation = self.sandbox.state.generation
        await self.identify(call)
        fault = self.sandbox.faults.pick(self.route, call.seller_names(), call.client_id)
        response: Response | None = None
        if fault is not None:
            if fault.kind == "drop":
                call.outcome = "fault_drop"
                self._log(call, arrived, started, 0)
                await send({"type": "http.response.start", "status": 200, "headers": []})
                raise DroppedConnection
            if fault.kind == "timeout":
                call.outcome = "fault_timeout"
                if await _held_until_disconnect(receive, fault.seconds):
                    self._log(call, arrived, started, 0)
                    return
            else:
                response = await self._fault_response(fault, call)
        if response is None:
            response = await self.handle(call)
        self._decorate(response, call)
        self._log(call, arrived, started, response.status_code)
        await response(scope, receive, send)

    async def _fault_response(self, fault: Fault, call: Call) -> Response | None:
        if fault.kind == "latency":
            await asyncio.sleep(fault.latency_ms / 1000)
            return None
        call.outcome = f"fault_{fault.kind}"
        if fault.kind == "rate_limit":
            if self.style == "trading":
                call.outcome = "fault_518"
                return responses.trading_failure("518")
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _retry_after_value(fault.retry_after)
            return responses.rest_error(2001, 429, headers)
        if fault.kind == "error":
            return responses.rest_error(10001, fault.status or 500)
        # ebay_error
        code = fault.error_code or "10007"
        call.outcome = f"fault_{code}"
        if self.style == "trading":
            return responses.trading_failure(code)
        if self.style == "oauth":
            return responses.oauth_error(code, fault.status or 400)
        return responses.rest_error(int(code) if code.isdigit() else 2004, fault.status or 400)

    def _decorate(self, response: Response, call: Call) -> None:
        headers = response.headers
        headers["rlogid"] = tokens.rlogid()
        headers["X-EBAY-C-REQUEST-ID"] = call.request_id
        if self.sandbox.config.rate_limit_headers and self.style in ("rest", "trading"):
            seller_id = call.seller.user_id if call.seller else None
            used = self.sandbox.state.count_usage(call.client_id, self.api, seller_id)
            limit = DAILY_LIMITS.get(self.api, 5000)
            headers["X-RateLimit-Limit"] = str(limit)
            headers["X-RateLimit-Remaining"] = str(max(limit - used, 0))

    def _log(self, call: Call, arrived: float, started: float, status: int) -> None:
        self.sandbox.state.log_call(
            CallRecord(
                at=arrived,
                route=self.route,
                method=call.request.method,
                status=status,
                outcome=call.outcome,
                seller=call.seller.username if call.seller else None,
                client_id=call.client_id,
                request_id=call.request_id,
                duration_ms=(time.perf_counter() - started) * 1000,
            ),
            call.generation,
        )


def _retry_after_value(seconds: float) -> str:
    # HTTP allows whole seconds only; round up so a client honouring it is never early.
    whole = int(seconds)
    return str(whole if whole == seconds else whole + 1)


async def _held_until_disconnect(receive: Receive, seconds: float) -> bool:
    """Wait until the client disconnects (True) or ``seconds`` pass (False)."""

    async def disconnected() -> None:
        while True:
            message: Any = await receive()
            if message["type"] == "http.disconnect":
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(disconnected(), timeout=seconds)
        return True
    return False
