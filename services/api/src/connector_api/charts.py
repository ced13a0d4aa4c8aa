"""The account page's health timeline, drawn server-side as SVG geometry (no script, works
offline): one mark per check on a time axis, coloured and shaped by outcome, latency as a line."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from connector_api.services.console import Check

WIDTH = 960
HEIGHT = 240
LEFT, RIGHT, TOP = 56, 16, 14
MARK_BAND = 30  # below the latency plot: the row of check marks
AXIS_BAND = 22  # below that: the time labels
NICE_STEPS = (50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10_000, 20_000, 30_000, 60_000)


@dataclass(frozen=True)
class Mark:
    x: float
    outcome: str
    title: str


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Timeline:
    """Everything the template needs to draw the chart (coordinates in the viewBox)."""

    width: int
    height: int
    left: int
    right: float
    top: int
    plot_bottom: float
    mark_y: float
    marks: list[Mark]
    latency_points: str
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    summary: str


def _nice_max(value: float) -> int:
    return next((step for step in NICE_STEPS if step >= value), int(value) + 1)


def _x_ticks(start: datetime, end: datetime, x: Callable[[datetime], float]) -> list[Tick]:
    if end - start <= timedelta(days=1):  # every 4 hours, on the hour
        step, fmt = timedelta(hours=4), "%H:%M"
        moment = start.replace(minute=0, second=0, microsecond=0)
        while moment < start or moment.hour % 4:
            moment += timedelta(hours=1)
    else:  # every midnight
        step, fmt = timedelta(days=1), "%a %d"
        moment = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    ticks = []
    while moment <= end:
        ticks.append(Tick(x(moment), moment.strftime(fmt)))
        moment += step
    return ticks


def timeline(checks: Sequence[Check], start: datetime, end: datetime, window: str) -> Timeline:
    """The chart of the checks between ``start`` and ``end`` (``window`` names it: '24 h')."""
    plot_bottom = HEIGHT - MARK_BAND - AXIS_BAND
    right = WIDTH - RIGHT
    seconds = max((end - start).total_seconds(), 1.0)

    def x(moment: datetime) -> float:
        share = min(max((moment - start).total_seconds() / seconds, 0.0), 1.0)
        return round(LEFT + share * (right - LEFT), 1)

    latencies = [c.latency_ms for c in checks if c.latency_ms is not None]
    top_ms = _nice_max(max(latencies, default=0) or 100)

    def y(ms: int) -> float:
        return round(plot_bottom - (ms / top_ms) * (plot_bottom - TOP), 1)

    marks = [
        Mark(
            x(c.at),
            c.outcome,
            f"{c.at:%Y-%m-%d %H:%M:%S} UTC: {c.outcome}"
            + (f", {c.latency_ms} ms" if c.latency_ms is not None else "")
            + (f", eBay error {c.ebay_error_code}" if c.ebay_error_code else ""),
        )
        for c in checks
    ]
    points = " ".join(f"{x(c.at)},{y(c.latency_ms)}" for c in checks if c.latency_ms is not None)
    unhealthy = sum(1 for c in checks if c.outcome != "healthy")
    summary = f"{len(checks)} health check{'' if len(checks) == 1 else 's'} in the last {window}"
    if checks:
        summary += f": {len(checks) - unhealthy} healthy, {unhealthy} unhealthy"
    if latencies:
        summary += (
            f"; latency median {round(statistics.median(latencies))} ms, "
            f"highest {max(latencies)} ms"
        )
    return Timeline(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=right,
        top=TOP,
        plot_bottom=plot_bottom,
        mark_y=plot_bottom + MARK_BAND / 2,
        marks=marks,
        latency_points=points,
        x_ticks=_x_ticks(start, end, x),
        y_ticks=[Tick(y(ms), f"{ms} ms") for ms in (0, top_ms // 2, top_ms)],
        summary=summary + ".",
    )
