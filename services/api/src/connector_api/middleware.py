"""Per-request plumbing as one pure ASGI middleware: request id, the server span (the API's
only server instrumentation: FastAPI's native one is off), the ``http.server.request.duration``
histogram, body size limit, security headers, and one structured access log line (uvicorn's own
is off).

The query string never reaches a span, and reaches the log only redacted: the OAuth callback
carries eBay's authorization ``code`` and our ``state`` there.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.metrics import Histogram
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector_common.redaction import redact_text
from connector_common.telemetry import record_exception_redacted, untraced

# Resolved at each use, so it follows configure_logging even when imported earlier.
log = structlog.stdlib.get_logger("connector_api.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
# OpenTelemetry's recommended boundaries for HTTP durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Polled every few seconds by kubelet and Prometheus: neither traced nor timed nor logged at INFO.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/livez", "/metrics"})
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    # The callback URL holds the authorization code: never send it on as a Referer.
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class _BodyTooLarge(Exception):
    pass


# Served over https (behind the ingress): browsers must never come back over http.
HSTS_HEADER = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


class RequestMiddleware:
    """Wraps every HTTP request of the API."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, hsts: bool = False) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.security_headers = [*SECURITY_HEADERS, *([HSTS_HEADER] if hsts else [])]
        self._histogram: tuple[Any, Histogram] | None = None
        self._tracer: tuple[Any, trace.Tracer] | None = None

    def _tracer_for(self, scope: Scope) -> trace.Tracer:
        """The app's tracer (made once per provider, not per request: issue 11)."""
        provider = _provider(scope)
        if self._tracer is None or self._tracer[0] is not provider:
            self._tracer = (provider, trace.get_tracer("connector_api", tracer_provider=provider))
        return self._tracer[1]

    def _duration(self, scope: Scope) -> Histogram | None:
        """The request duration histogram of the app's meter provider (made once per provider)."""
        provider = _meter_provider(scope)
        if provider is None:
            return None
        if self._histogram is None or self._histogram[0] is not provider:
            meter = provider.get_meter("connector_api")
            self._histogram = (
                provider,
                meter.create_histogram(
                    "http.server.request.duration",
                    unit="s",
                    description="Duration of HTTP server requests.",
                    explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
                ),
            )
        return self._histogram[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        context: dict[str, Any] = {"request_id": request_id}
        scope.setdefault("state", {})["log_context"] = context
        started = time.perf_counter()
        outcome = {"status": 500, "started": False}
        method = scope["method"]
        path = scope["path"]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                outcome["started"] = True
                extra = [(b"x-request-id", request_id.encode()), *self.security_headers]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        tracer = self._tracer_for(scope)
        duration = self._duration(scope)
        # Dependencies bind org_id / account_id for this request; restore what was bound before
        # so nothing leaks into the next request served by the same task.
        outer = structlog.contextvars.get_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        probe = path in PROBE_PATHS
        # Probes every few seconds per pod would be most traces (~100k a day): not traced.
        spanning: AbstractContextManager[trace.Span] = (
            _untraced_probe()
            if probe
            else tracer.start_as_current_span(
                f"{method} {path}", kind=SpanKind.SERVER, context=extract(headers)
            )
        )
        with spanning as span:
            try:
                length = int(headers.get("content-length") or 0)
            except ValueError:
                length = 0
            try:
                if length > self.max_body_bytes:
                    raise _BodyTooLarge
                app_receive: Receive = receive_wrapper
                if "content-length" not in headers and "transfer-encoding" in headers:
                    # A chunked body has no announced size: read it here, within the limit,
                    # so that too much is a 413 before any route sees it (not a parse error).
                    body = await _read_bounded(receive_wrapper)
                    app_receive = _replay(body, receive)
                await self.app(scope, app_receive, send_wrapper)
            except _BodyTooLarge:
                if not outcome["started"]:
                    await _too_large(send_wrapper, self.max_body_bytes)
            except Exception as exc:
                record_exception_redacted(span, exc)
                log.exception("request failed", method=method, path=path)
                if not outcome["started"]:
                    await _internal_error(send_wrapper, request_id)
            finally:
                elapsed = time.perf_counter() - started
                latency_ms = round(elapsed * 1000, 1)
                _finish_span(span, scope, int(outcome["status"]), request_id, context)
                if duration is not None and not probe:
                    duration.record(elapsed, _metric_attributes(scope, int(outcome["status"])))
                _access_log(scope, int(outcome["status"]), latency_ms, context)
                structlog.contextvars.clear_contextvars()
                structlog.contextvars.bind_contextvars(**outer)


@contextmanager
def _untraced_probe() -> Iterator[trace.Span]:
    """No span for a probe, nor for what it runs (its readiness query)."""
    with untraced():
        yield trace.INVALID_SPAN


async def _read_bounded(receive: Receive) -> bytes:
    """The whole request body (``receive`` raises once it passes the limit)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away: the route sees an empty body
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands out ``body`` once, then whatever comes next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _telemetry(scope: Scope) -> Any:
    state = getattr(scope.get("app"), "state", None)
    connector = getattr(state, "connector", None) if state is not None else None
    return connector.telemetry if connector is not None else None


def _provider(scope: Scope) -> Any:
    telemetry = _telemetry(scope)
    return telemetry.tracer_provider if telemetry is not None else None


def _meter_provider(scope: Scope) -> Any:
    telemetry = _telemetry(scope)
    return telemetry.meter_provider if telemetry is not None else None


def _metric_attributes(scope: Scope, status: int) -> dict[str, Any]:
    # Bounded labels only: the route template, never the raw path (ids) or the query.
    attributes: dict[str, Any] = {
        "http.request.method": scope["method"],
        "http.response.status_code": status,
    }
    route = _route(scope)
    if route:
        attributes["http.route"] = route
    return attributes


def _route(scope: Scope) -> str | None:
    route = scope.get("route")
    return getattr(route, "path", None)


def _finish_span(
    span: trace.Span, scope: Scope, status: int, request_id: str, context: dict[str, Any]
) -> None:
    route = _route(scope)
    if route:
        span.update_name(f"{scope['method']} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.request.method", scope["method"])
    span.set_attribute("url.path", scope["path"])
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("connector.request_id", request_id)
    for key in ("org_id", "account_id"):
        if context.get(key):
            span.set_attribute(f"connector.{key}", str(context[key]))
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def _access_log(scope: Scope, status: int, latency_ms: float, context: dict[str, Any]) -> None:
    query = scope.get("query_string", b"").decode("latin-1")
    fields: dict[str, Any] = {
        "method": scope["method"],
        "path": scope["path"],
        "route": _route(scope),
        "status": status,
        "latency_ms": latency_ms,
        "request_id": context.get("request_id"),
    }
    if query:
        fields["query"] = redact_text(query)[:500]
    for key in ("org_id", "account_id"):
        if context.get(key):
            fields[key] = context[key]
    if scope["path"] in PROBE_PATHS:
        log.debug("request", **fields)  # probes every few seconds would drown the rest
    else:
        log.info("request", **fields)


async def _too_large(send: Send, limit: int) -> None:
    body = (
        b'{"error":"too_large","message":"the request body is larger than '
        + str(limit).encode()
        + b' bytes","fields":[]}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _internal_error(send: Send, request_id: str) -> None:
    body = (
        b'{"error":"internal_error","message":"something went wrong on our side","fields":[],'
        b'"request_id":"' + request_id.encode() + b'"}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
