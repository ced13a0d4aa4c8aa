"""Kubernetes probes for the pipeline processes: ``/livez`` measures loop progress, ``/readyz``
checks PostgreSQL and NATS; ``/metrics`` serves the process's metrics to Prometheus.

Liveness never looks at NATS or PostgreSQL (an outage would restart every pod at once); it fails
only when the process's own loop stopped moving: no fetch cycle (an empty fetch counts) for longer
than three fetch timeouts while nothing is in work, or a message in work for longer than the
handler timeout. That catches the silently dead pull consumers of nats.py#504 and a wedged
handler, which a "connected" check would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connector_common.logs import get_logger
from connector_common.telemetry import untraced

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]  # raises when not ready
MetricsSource = Callable[[], bytes | None]  # Prometheus text, None when /metrics is off
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NotReady(Exception):
    """A readiness check's answer in our own words (shown by ``/readyz``, so never a driver's
    message, which may carry a URL with credentials)."""


@dataclass
class Progress:
    """What a worker loop reports, so liveness can tell a slow loop from a dead one."""

    stall_after: float  # seconds without a completed cycle that mean "stuck"
    handler_timeout: float  # a message in work longer than this means "stuck"
    clock: Callable[[], float] = time.monotonic
    last_cycle: float = field(default=0.0)
    cycles: int = 0
    _in_work: dict[int, float] = field(default_factory=dict)
    _next_token: int = 0

    def __post_init__(self) -> None:
        self.last_cycle = self.clock()

    def cycle(self) -> None:
        """A loop iteration finished (a fetch returned, a tick ran), whatever it found."""
        self.last_cycle = self.clock()
        self.cycles += 1

    def started(self) -> int:
        """A message went into work; returns a token for :meth:`finished`."""
        self._next_token += 1
        self._in_work[self._next_token] = self.clock()
        return self._next_token

    def finished(self, token: int) -> None:
        """The message was settled (acked, naked, rejected)."""
        self._in_work.pop(token, None)
        self.cycle()

    @property
    def in_work(self) -> int:
        return len(self._in_work)

    def alive(self) -> tuple[bool, dict[str, Any]]:
        """Whether the loop is moving, and why not."""
        now = self.clock()
        idle = now - self.last_cycle
        oldest = now - min(self._in_work.values()) if self._in_work else 0.0
        detail: dict[str, Any] = {
            "seconds_since_cycle": round(idle, 1),
            "in_work": len(self._in_work),
            "oldest_in_work_seconds": round(oldest, 1),
            "cycles": self.cycles,
        }
        if self._in_work:
            # A batch in work blocks the next fetch; it is progress while no message overstays.
            return oldest <= self.handler_timeout + self.stall_after, detail
        return idle <= self.stall_after, detail


class ProbeServer:
    """A minimal HTTP/1.1 server for ``/livez``, ``/readyz`` and ``/metrics`` (GET only, no
    keep-alive)."""

    def __init__(
        self,
        progress: Progress,
        readiness: Mapping[str, ReadinessCheck],
        *,
        host: str = "0.0.0.0",  # noqa: S104 - kubelet probes reach the pod IP
        port: int = 8080,
        check_timeout: float = 2.0,
        metrics: MetricsSource | None = None,
    ) -> None:
        self._progress = progress
        self._metrics = metrics
        self._readiness = readiness
        self._host = host
        self._port = port
        self._check_timeout = check_timeout
        self._server: asyncio.Server | None = None
        self.stopping = False  # once set, /readyz says no: take the pod out of rotation

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        assert self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("probes listening", probe_port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with untraced():  # a probe every few seconds: no trace (nor its readiness queries)
            await self._answer(reader, writer)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            # Drain the headers; nothing in them matters here.
            while (line := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b""):
                del line
            parts = request.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            content_type = "application/json"
            scrape = path == "/metrics" and method in ("GET", "HEAD")
            text = self._metrics_text() if scrape else None
            if text is not None:
                status, payload, content_type = 200, text, METRICS_CONTENT_TYPE
            else:
                status, body = await self._route(method, path)
                payload = json.dumps(body).encode()
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(
                status, "Service Unavailable"
            )
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + (payload if method != "HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _metrics_text(self) -> bytes | None:
        if self._metrics is None:
            return None
        try:
            return self._metrics()
        except Exception as exc:  # a broken gauge callback must not take the probes down
            log.warning("rendering /metrics failed", error=type(exc).__name__)
            return None

    async def _route(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        if method not in ("GET", "HEAD"):
            return 405, {"error": "only GET"}
        if path == "/livez":
            alive, detail = self._progress.alive()
            return (200 if alive else 503), {"alive": alive, **detail}
        if path == "/readyz":
            return await self._ready()
        if path == "/metrics" and self._metrics is not None:
            return 503, {"error": "the metrics could not be rendered"}
        paths = ["/livez", "/readyz", *(["/metrics"] if self._metrics else [])]
        return 404, {"error": "not found", "paths": paths}

    async def _ready(self) -> tuple[int, dict[str, Any]]:
        if self.stopping:
            return 503, {"ready": False, "stopping": True}
        results: dict[str, str] = {}
        for name, check in self._readiness.items():
            try:
                await asyncio.wait_for(check(), self._check_timeout)
            except NotReady as exc:
                results[name] = f"failed: {exc}"
            except Exception as exc:
                # Type only: a driver's message may carry a URL with credentials.
                results[name] = f"failed: {type(exc).__name__}"
            else:
                results[name] = "ok"
        ready = all(value == "ok" for value in results.values())
        return (200 if ready else 503), {"ready": ready, "checks": results}
