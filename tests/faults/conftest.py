"""The fault suite: one cluster of real processes per run, scenarios striking bursts on it.

``make test`` runs the scenarios marked ``smoke`` on 200 accounts; ``make test-faults``
(``pytest tests/faults --fault-suite``) runs all of them on 2,000 accounts and rewrites the
results table of ``docs/reliability.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.cluster import Cluster
from bench.report import machine, rewrite_section, table
from tests.faults.harness import Outcome

RELIABILITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
FULL_ACCOUNTS = 2000
SMOKE_ACCOUNTS = 200


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-suite",
        action="store_true",
        help="run every fault scenario on 2,000 accounts and rewrite docs/reliability.md",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--fault-suite"):
        return
    skip = pytest.mark.skip(reason="part of the full fault suite: make test-faults")
    for item in items:
        if "tests/faults/" in str(item.fspath) and "smoke" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def full_suite(pytestconfig: pytest.Config) -> bool:
    return bool(pytestconfig.getoption("--fault-suite"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, full_suite: bool) -> Iterator[Cluster]:
    """PostgreSQL, NATS and the sandbox as processes, with the accounts seeded once."""
    running = Cluster(tmp_path_factory.mktemp("faults"))
    try:
        running.start()
        running.seed(FULL_ACCOUNTS if full_suite else SMOKE_ACCOUNTS)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def results(full_suite: bool) -> Iterator[dict[str, Outcome]]:
    """Every scenario's outcome; the full suite writes them to docs/reliability.md."""
    collected: dict[str, Outcome] = {}
    yield collected
    if not full_suite or not collected:
        return
    about = machine()
    columns = ("scenario", "lost", "double writes", "repeated eBay calls", "wrongly errored")
    rows = [
        (
            f"`{o.scenario}`",
            str(o.lost),
            str(o.double_writes),
            str(o.repeated_calls),
            str(o.wrongly_errored),
            f"{o.drain_seconds}",
            ", ".join(f"{k} {v}" for k, v in o.notes.items() if k != "refresh_calls"),
        )
        for o in collected.values()
    ]
    rewrite_section(
        "faults",
        f"**Last run ({about['date']})**: {next(iter(collected.values())).accounts:,} "
        f"accounts, {about['cpus']} CPUs, load average before the run "
        f"{about['load_average']}.\n\n"
        + table(rows, (*columns, "drain (s)", "notes"))
        + "\n\n```sh\nmake test-faults\n```",
        RELIABILITY_DOC,
    )


@pytest.fixture
def record(results: dict[str, Outcome]) -> Iterator[list[Outcome]]:
    """Outcomes a test produced: printed as one JSON line each and kept for the table."""
    produced: list[Outcome] = []
    yield produced
    for outcome in produced:
        print(outcome.line(), flush=True)  # the suite's one line per scenario
        results[outcome.scenario] = outcome
