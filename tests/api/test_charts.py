"""The health timeline's geometry: one mark per check, placed by time, latency as a line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connector_api.charts import LEFT, WIDTH, timeline
from connector_api.services.console import Check

END = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
START = END - timedelta(hours=24)


def check(hours_ago: float, outcome: str = "healthy", latency: int | None = 100) -> Check:
    return Check(END - timedelta(hours=hours_ago), outcome, latency, 200, None, "trading", None)


def test_one_mark_per_check_placed_by_time_and_shaped_by_outcome() -> None:
    checks = [check(24), check(12, "unhealthy", 900), check(0)]
    chart = timeline(checks, START, END, "24 h")
    assert [m.outcome for m in chart.marks] == ["healthy", "unhealthy", "healthy"]
    assert chart.marks[0].x == LEFT
    assert chart.marks[2].x == chart.right == WIDTH - 16
    assert chart.marks[1].x == round((LEFT + chart.right) / 2, 1)
    assert "unhealthy, 900 ms" in chart.marks[1].title
    # Latency: a line through the three points, the highest at the top of a rounded scale.
    points = [tuple(map(float, p.split(","))) for p in chart.latency_points.split()]
    assert len(points) == 3
    assert [t.label for t in chart.y_ticks] == ["0 ms", "500 ms", "1000 ms"]
    assert min(y for _x, y in points) > chart.top - 0.01
    assert chart.summary == (
        "3 health checks in the last 24 h: 2 healthy, 1 unhealthy; "
        "latency median 100 ms, highest 900 ms."
    )


def test_time_labels_every_four_hours_for_a_day_and_every_midnight_for_a_week() -> None:
    day = timeline([], START, END, "24 h")
    assert [t.label for t in day.x_ticks] == [
        "12:00",
        "16:00",
        "20:00",
        "00:00",
        "04:00",
        "08:00",
        "12:00",
    ]
    week = timeline([], END - timedelta(days=7), END, "7 days")
    assert len(week.x_ticks) == 7
    assert week.x_ticks[-1].label == "Tue 01"
    assert week.summary == "0 health checks in the last 7 days."


def test_checks_without_latency_are_marks_but_not_points() -> None:
    chart = timeline([check(3, "unhealthy", None), check(1)], START, END, "24 h")
    assert len(chart.marks) == 2
    assert len(chart.latency_points.split()) == 1
