"""Kubernetes manifests: schema-valid offline, and they keep the rules production relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"
SERVICES = {"api", "scheduler", "token-refresher", "health-checker"}
WORKERS = SERVICES - {"api"}
GRACEFUL_TIMEOUT_SECONDS = 30


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _name, doc in documents() if doc["kind"] == kind}


def pod_specs() -> dict[str, dict[str, Any]]:
    specs = {name: doc["spec"]["template"]["spec"] for name, doc in of_kind("Deployment").items()}
    for name, job in of_kind("Job").items():
        specs[name] = job["spec"]["template"]["spec"]
    return specs


@pytest.mark.parametrize(("filename", "doc"), documents(), ids=lambda v: str(v)[:40])
def test_manifest_is_valid_against_the_kubernetes_schema(
    filename: str, doc: dict[str, Any]
) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_service_has_a_deployment_and_a_disruption_budget() -> None:
    assert set(of_kind("Deployment")) == SERVICES
    budgets = of_kind("PodDisruptionBudget")
    assert set(budgets) == SERVICES
    for budget in budgets.values():
        assert budget["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("name", sorted(pod_specs()))
def test_pods_meet_the_restricted_security_standard(name: str) -> None:
    spec = pod_specs()[name]
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts  # writable scratch space on a read-only root


@pytest.mark.parametrize("name", sorted(pod_specs()))
def test_memory_limit_equals_request_and_cpu_is_requested(name: str) -> None:
    for container in pod_specs()[name]["containers"]:
        resources = container["resources"]
        assert resources["limits"]["memory"] == resources["requests"]["memory"]
        assert "cpu" in resources["requests"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_grace_period_covers_the_graceful_shutdown(name: str) -> None:
    spec = pod_specs()[name]
    assert spec["terminationGracePeriodSeconds"] >= GRACEFUL_TIMEOUT_SECONDS + 10


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_worker_liveness_is_loop_progress_and_readiness_is_separate(name: str) -> None:
    container = pod_specs()[name]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CONNECTOR_PROBE_PORT"] == "8080"


def test_api_probes() -> None:
    container = pod_specs()["api"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_secrets_reach_pods_as_files_never_as_config_values() -> None:
    config = of_kind("ConfigMap")["ebay-connector"]["data"]
    for key, value in config.items():
        lowered = key.lower()
        if any(word in lowered for word in ("secret", "token_keys", "password", "database__url")):
            assert key.endswith("_FILE"), f"{key} must point at a mounted secret file"
            assert value.startswith("/var/run/secrets/connector/")
    assert config["CONNECTOR_ENV"] == "production"
    assert of_kind("Secret") == {}, "real secrets are not committed; see deploy/examples"


def test_network_policy_denies_by_default() -> None:
    policies = of_kind("NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}


SETTINGS_CLASSES = {
    "api": ("connector_api.settings", "ApiSettings"),
    "scheduler": ("connector_scheduler.settings", "SchedulerSettings"),
    "token-refresher": ("connector_token_refresher.settings", "TokenRefresherSettings"),
    "health-checker": ("connector_health_checker.settings", "HealthCheckerSettings"),
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_starts_in_production_with_the_manifest_settings(
    service: str, tmp_path: Path
) -> None:
    """Each service's start-up check passes with exactly the variables the manifests set."""
    import base64
    import importlib
    import os

    from connector_common.settings import load_settings

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "database-url").write_text("postgresql://connector:pw@db:5432/connector")
    (secrets / "token-keys").write_text(f"k1:{base64.b64encode(os.urandom(32)).decode()}")
    (secrets / "ebay-client-secret").write_text("PRD-real-looking-cert-id-0123456789")
    (secrets / "api-session-secret").write_text("s" * 48)
    (secrets / "ebay-deletion-verification-token").write_text("d" * 48)
    env: dict[str, str] = dict(of_kind("ConfigMap")["ebay-connector"]["data"])
    container = pod_specs()[service]["containers"][0]
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    env = {k: v.replace("/var/run/secrets/connector", str(secrets)) for k, v in env.items()}
    module, name = SETTINGS_CLASSES[service]
    settings_class = getattr(importlib.import_module(module), name)
    with pytest.MonkeyPatch.context() as patch:
        for variable in list(os.environ):
            if variable.startswith("CONNECTOR_"):
                patch.delenv(variable)
        for variable, value in env.items():
            patch.setenv(variable, value)
        settings = load_settings(settings_class)
    assert settings.env.value == "production"
    assert settings.ebay.environment == "production"
