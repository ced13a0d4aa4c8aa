"""The alert rules are valid Prometheus rules, link to a runbook that exists, and the dashboard's
panels are all explained in docs/operations.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures.promql import reads
from tests.observability.dashboards import (
    OPERATIONS,
    ROOT,
    RULES,
    dashboard,
    panels,
    queries,
    rules,
)

REQUIRED_ALERTS = {
    "EbayConnectorRefreshLagging",
    "EbayConnectorDeadLettersGrowing",
    "EbayConnectorOutboxBacklogGrowing",
    "EbayConnectorReconnectRequiredSpike",
    "EbayConnectorBreakersOpen",
    "EbayRateLimitNearlyExhausted",
    "EbayConnectorSchedulerWithoutLeader",
    "EbayConnectorWorkerNotConsuming",
}
DURATION = re.compile(r"^\d+[smhd]$")


def promtool() -> str | None:
    local = ROOT / ".tools" / "bin" / "promtool"
    return str(local) if local.exists() else shutil.which("promtool")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_the_rules_pass_promtool_or_at_least_the_rule_schema(tmp_path: Path) -> None:
    document = yaml.safe_load(RULES.read_text())
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["metadata"]["namespace"] == "ebay-connector"
    names = set()
    for group in document["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["alert"] not in names, "alert names are unique"
            names.add(rule["alert"])
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert "for" not in rule or DURATION.match(rule["for"])
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
            assert reads(rule["expr"]).metrics, rule["alert"]
    assert names >= REQUIRED_ALERTS
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (`make promtool`): schema checked only")
    plain = tmp_path / "rules.yaml"
    plain.write_text(yaml.safe_dump({"groups": document["spec"]["groups"]}))
    checked = subprocess.run(
        [tool, "check", "rules", str(plain)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(names)} rules found" in checked.stdout


def test_each_alert_fires_on_a_bad_series_and_not_on_a_normal_one(tmp_path: Path) -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (`make promtool`)")
    document = yaml.safe_load(RULES.read_text())
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": document["spec"]["groups"]}))
    cases = tmp_path / "alert_cases.yaml"
    cases.write_text((Path(__file__).parent / "alert_cases.yaml").read_text())
    tested = subprocess.run(
        [tool, "test", "rules", str(cases)], capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    covered = set(re.findall(r'alertname="(\w+)"', cases.read_text()))
    assert covered >= REQUIRED_ALERTS


def test_every_alert_links_to_a_runbook_section_that_exists() -> None:
    headings = {
        github_anchor(line.lstrip("#"))
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in rules():
        url = rule["annotations"]["runbook_url"]
        document, _, anchor = url.partition("#")
        assert document == "docs/operations.md", url
        assert anchor in headings, f"{rule['alert']}: no section #{anchor} in docs/operations.md"


def test_every_dashboard_panel_is_in_the_operations_table_with_its_queries() -> None:
    text = OPERATIONS.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    for panel in panels():
        rows = [line for line in table if line.startswith(f"| {panel['title']} |")]
        assert rows, f"panel {panel['title']!r} is not in the table of docs/operations.md"
        for target in panel["targets"]:
            assert target["expr"].replace("|", "\\|") in rows[0], (panel["title"], target["expr"])
    assert dashboard()["uid"] == "ebay-connector"


def test_queries_name_at_least_one_metric_each() -> None:
    for query in queries():
        assert reads(query.expr).metrics, query


def test_the_contract_check_names_a_missing_metric_and_a_missing_label() -> None:
    from tests.observability.test_metrics_contract import missing

    everything = {"connector_work_lag_seconds": {"kind"}}
    problems = missing(everything)
    assert any("metric connector_accounts" in p for p in problems)
    assert not any("connector_work_lag_seconds" in p for p in problems)
    problems = missing({"connector_work_lag_seconds": set()})
    assert any("label kind of connector_work_lag_seconds" in p for p in problems)
