"""Loggers made at import time still use the configuration applied later."""

from __future__ import annotations

import io
import json
import logging

import structlog

from connector_common.logs import RepeatFilter, Throttle, configure_logging, get_logger

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


def test_a_library_repeating_its_error_logs_one_line_per_interval_with_a_count() -> None:
    clock = [0.0]
    stream = io.StringIO()
    configure_logging("INFO", "json", "tests", stream=stream)
    repeat = next(
        f for h in logging.getLogger().handlers for f in h.filters if isinstance(f, RepeatFilter)
    )
    repeat._clock = lambda: clock[0]  # what a monotonic clock would say
    pool = logging.getLogger("sqlalchemy.pool.tests")
    try:
        for second in range(21):  # a 21 s outage: the pool complains every 0.5 s
            for half in (0.0, 0.5):
                clock[0] = second + half
                try:
                    raise ConnectionRefusedError("connection refused")
                except ConnectionRefusedError:
                    pool.error("Exception during reset or similar", exc_info=True)
        clock[0] = 31.0
        pool.error("Exception during reset or similar")
        logging.getLogger("py.warnings").warning("a library's warning")
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_connector", False)]:
            root.removeHandler(handler)
        structlog.reset_defaults()
        structlog.contextvars.unbind_contextvars("service")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    events = [line["event"] for line in lines]
    assert events[0] == "Exception during reset or similar"
    assert "exception" in lines[0]  # the first of a streak keeps its stack trace
    assert (
        events[1] == "Exception during reset or similar (and 41 more like it in the last interval)"
    )
    assert "exception" not in lines[1]
    assert len(lines) == 3


def test_throttle_lets_one_line_per_kind_through_each_interval_and_counts_the_rest() -> None:
    clock = [0.0]
    throttle = Throttle(30.0, clock=lambda: clock[0])
    assert throttle.ready("OperationalError") == 0
    assert throttle.ready("OperationalError") is None
    assert throttle.ready("OperationalError") is None
    assert throttle.ready("TimeoutError") == 0  # another kind is news
    clock[0] = 30.0
    assert throttle.ready("OperationalError") == 2


def test_lines_inside_a_span_carry_its_trace_and_span_ids_and_others_do_not() -> None:
    import re

    from opentelemetry.sdk.trace import TracerProvider

    stream = io.StringIO()
    configure_logging("INFO", "json", "tests", stream=stream)
    tracer = TracerProvider().get_tracer("tests")
    try:
        EARLY.info("outside")
        with tracer.start_as_current_span("work") as span:
            EARLY.info("inside")
            logging.getLogger("some.library").warning("a stdlib line inside")
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_connector", False)]:
            root.removeHandler(handler)
        structlog.reset_defaults()
        structlog.contextvars.unbind_contextvars("service")
    lines = {line["event"]: line for line in map(json.loads, stream.getvalue().splitlines())}
    context = span.get_span_context()
    for event in ("inside", "a stdlib line inside"):
        assert lines[event]["trace_id"] == f"{context.trace_id:032x}"
        assert lines[event]["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in lines["outside"]
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
    assert all(stamp.match(line["timestamp"]) for line in lines.values())
