"""Loggers made at import time still use the configuration applied later."""

from __future__ import annotations

import io
import json
import logging

import structlog

from connector_common.logs import configure_logging, get_logger

EARLY = get_logger("tests.early", component="early")  # as every module does at import


def test_a_logger_created_before_configuration_redacts_filters_and_renders_json() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", "tests", stream=stream)
    try:
        EARLY.debug("below the level")
        EARLY.info("refreshed", token="v^1.1#i^1#secret-token")
    finally:
        # Leave logging as an unconfigured process has it.
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_connector", False)]:
            root.removeHandler(handler)
        structlog.reset_defaults()
        structlog.contextvars.unbind_contextvars("service")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["refreshed"]
    assert lines[0]["token"] == "[REDACTED]"
    assert lines[0]["component"] == "early"
