"""The expressions of the Grafana dashboard and of the alert rules in deploy/observability."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
RULES = OBSERVABILITY / "prometheus-rules.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"


@dataclass(frozen=True)
class Query:
    where: str  # "panel 'Refresh lag'" or "alert EbayConnectorRefreshLagging"
    expr: str


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel.get("type") != "row"]


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


def queries() -> list[Query]:
    """Every PromQL expression of the dashboard and of the rules."""
    found = [
        Query(f"panel {panel['title']!r}", target["expr"])
        for panel in panels()
        for target in panel.get("targets", [])
    ]
    found += [Query(f"alert {rule['alert']}", rule["expr"]) for rule in rules()]
    return found
