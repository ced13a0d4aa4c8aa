"""Worker settings: production defaults, development timing, refusals that protect the work."""

from __future__ import annotations

import pytest

from connector_common.settings import SettingsError, load_settings
from connector_common.worker.runtime import pool_for
from connector_common.worker.settings import WorkerSettings

KEYS = "k1:" + "A" * 43 + "="


def test_production_uses_the_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_TOKEN_KEYS", KEYS)
    settings = load_settings(WorkerSettings)
    timing = settings.pipeline
    assert (timing.refresh_lead_seconds, timing.health_interval_seconds) == (600, 900)
    assert (timing.scheduler_tick_seconds, timing.requeue_seconds) == (30, 300)
    assert (settings.probe_port, settings.probe_host) == (8080, "0.0.0.0")  # noqa: S104


def test_development_timing_fills_only_what_is_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_ENV", "development")
    monkeypatch.setenv("CONNECTOR_PIPELINE__HEALTH_INTERVAL_SECONDS", "600")
    settings = load_settings(WorkerSettings)
    assert settings.pipeline.health_interval_seconds == 600  # explicit wins
    assert settings.pipeline.refresh_lead_seconds == 90  # development default
    assert settings.probe_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CONNECTOR_PIPELINE__REQUEUE_SECONDS", "30", "requeue_seconds must exceed"),
        ("CONNECTOR_PIPELINE__HEALTH_JITTER_SECONDS", "880", "minus health_jitter_seconds"),
        ("CONNECTOR_WORKER__MAX_DELIVER", "1", "CONNECTOR_WORKER__MAX_DELIVER"),
    ],
)
def test_values_that_would_lose_or_swallow_work_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv("CONNECTOR_TOKEN_KEYS", KEYS)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        load_settings(WorkerSettings)


def test_the_database_pool_holds_a_connection_per_message_in_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONNECTOR_TOKEN_KEYS", KEYS)
    monkeypatch.setenv("CONNECTOR_WORKER__CONCURRENCY", "40")
    assert pool_for(load_settings(WorkerSettings)).pool_size == 45
    monkeypatch.setenv("CONNECTOR_DATABASE__POOL_SIZE", "60")
    assert pool_for(load_settings(WorkerSettings)).pool_size == 60
