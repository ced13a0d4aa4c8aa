"""`connector dev` as an operator meets it: every line prefixed and whole, every service's
/metrics URL printed, and every metric and label the dashboard and the alert rules use served
by some service (so neither can rot)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.promql import reads
from tests.observability.dashboards import queries

pytestmark = pytest.mark.slow

SERVICES = ("api", "scheduler", "token-refresher", "health-checker")
# Labels Prometheus itself adds to every scraped series.
TARGET_LABELS = {"job", "instance", "pod", "namespace", "service", "container"}
# Metrics the dashboard or an alert uses that no service serves yet (none: keep it that way).
PENDING_METRICS: set[str] = set()
LINE = re.compile(
    r"^(?P<source>[a-z-]+) +\| (?:\{|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z )(?P<rest>.*)$"
)
PREFIX_AGAIN = re.compile(r"\| \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z .* \| \d{4}-\d\d-\d\dT")


@dataclass
class Launcher:
    """`connector dev` running, with everything it printed so far."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def wait_for(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(marker in line for line in self.lines):
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)  # polling the launcher's output with a deadline
        raise AssertionError(f"{marker!r} not printed:\n" + "\n".join(self.lines[-60:]))

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.lines)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    # The sandbox's tokens live 120 s: with a 115 s lead they are due at the first ticks, so
    # refreshes (and their metrics) happen within seconds, not after 30 s.
    env["CONNECTOR_PIPELINE__REFRESH_LEAD_SECONDS"] = "115"
    env["CONNECTOR_METRICS__INTERVAL_SECONDS"] = "1"
    data = str(tmp_path / "data")
    process = subprocess.Popen(
        [sys.executable, "-m", "connector_cli", "dev", "--data-dir", data, "--api-port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Launcher(process)
    reader = threading.Thread(target=running.read, daemon=True)
    reader.start()
    try:
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        reader.join(10)


def scrape(url: str) -> dict[str, set[str]]:
    """Sample name -> label names, as Prometheus would store them."""
    text = httpx.get(url, timeout=10).text
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def scrape_all(urls: dict[str, str]) -> dict[str, set[str]]:
    merged: dict[str, set[str]] = {}
    for url in urls.values():
        for name, labels in scrape(url).items():
            merged.setdefault(name, set()).update(labels)
    return merged


def missing(served: dict[str, set[str]]) -> list[str]:
    """What the dashboard and the rules use that no service serves."""
    problems = []
    for query in queries():
        used = reads(query.expr)
        names = [name for name in used.metrics if name not in PENDING_METRICS]
        for name, labels in used.metrics.items():
            if name in PENDING_METRICS:
                continue
            if name not in served:
                problems.append(f"{query.where}: metric {name}")
                continue
            for label in labels - served[name]:
                problems.append(f"{query.where}: label {label} of {name}")
        available = set(TARGET_LABELS).union(*(served.get(name, set()) for name in names))
        if names:
            for label in used.grouping - available:
                problems.append(f"{query.where}: label {label} (by/on)")
    return problems


def test_dev_prints_metrics_urls_and_every_dashboard_and_alert_metric_is_served(
    launcher: Launcher,
) -> None:
    launcher.wait_for("everything is up", timeout=240)
    started = {}
    for line in launcher.snapshot():
        if match := re.search(r"started (\S+)\b.*metrics on (http://\S+/metrics)", line):
            started[match.group(1)] = match.group(2)
    assert set(started) == set(SERVICES), launcher.snapshot()[-40:]

    # The demo connected accounts; wait until refreshes and health checks happened too.
    deadline = time.monotonic() + 120
    while True:
        served = scrape_all(started)
        problems = missing(served)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(1)  # polling the services' metrics with a deadline
    assert problems == [], "\n".join(problems)
    for name in PENDING_METRICS:
        assert name not in served, f"{name} exists now: remove it from PENDING_METRICS"
    # No metric carries an org or an account id.
    for name, labels in served.items():
        assert not labels & {"org_id", "account_id", "org", "account", "house_name"}, name

    # Every line is one process's whole line: prefixed, stamped once, never two in one.
    lines = launcher.snapshot()
    sources = set()
    for line in lines:
        if re.fullmatch(r"eyJ[\w.-]+", line) or line.startswith("  "):
            continue  # the demo's token or a command, printed alone to be copied
        match = LINE.match(line)
        assert match, f"not a prefixed, stamped line: {line!r}"
        sources.add(match.group("source"))
        assert not PREFIX_AGAIN.search(line), f"two lines in one: {line!r}"
    assert sources >= {*SERVICES, "connector-dev", "ebay-sandbox"}
