"""The Kubernetes install: every overlay renders, every built-in object validates strictly, and
the rendered objects keep the rules production relies on.

Rendering needs ``kubectl`` (with its built-in kustomize); where it is missing, every test here
is skipped with that reason, never passed. Custom resources (KEDA, CloudNativePG, the Barman
Cloud plugin, the Prometheus operator) have no schema offline: their ``apiVersion`` and every
field we rely on are checked against the versions docs/operations.md names.
"""

from __future__ import annotations

import base64
import functools
import importlib
import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from connector_api.main import GRACE_SECONDS as API_GRACE_SECONDS
from connector_common.messaging import Topology
from connector_common.provisioning import consumers_of
from connector_common.settings import load_settings
from connector_common.worker.runtime import RELAY_FLUSH_SECONDS
from connector_common.worker.settings import ConsumerSettings, PipelineSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
OVERLAYS = {
    "dev": DEPLOY / "k8s" / "overlays" / "dev",
    "production": DEPLOY / "k8s" / "overlays" / "production",
}
POSTGRES = DEPLOY / "postgres" / "overlays" / "production"
NATS_VALUES = DEPLOY / "nats" / "values.yaml"
KUBERNETES_VERSION = "1.33.0"
SERVICES = ("api", "scheduler", "token-refresher", "health-checker")
WORKERS = ("scheduler", "token-refresher", "health-checker")
CONSUMERS = ("token-refresher", "health-checker")
NAMESPACE = "ebay-connector"
SECRET_DIR = "/var/run/secrets/connector"
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")

# The custom resources we ship, by (apiVersion, kind): checked below, field by field.
CUSTOM_RESOURCES = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "Pooler"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
    ("barmancloud.cnpg.io/v1", "ObjectStore"),
}

# Which secret keys each workload mounts, per overlay: (Secret, key) pairs, nothing more.
DB_APP = ("ebay-connector-db", "app-url")
DB_CA = ("ebay-connector-db-ca", "ca.crt")
TOKEN_KEYS = ("ebay-connector-app", "token-keys")
EBAY_SECRET = ("ebay-connector-app", "ebay-client-secret")
SESSION = ("ebay-connector-app", "api-session-secret")
DELETION_TOKEN = ("ebay-connector-app", "ebay-deletion-verification-token")
NATS_CA = ("nats-ca", "ca.crt")


def nats_seed(user: str) -> tuple[str, str]:
    return ("ebay-connector-nats", f"{user}.nk")


EXPECTED_SECRETS = {
    "production": {
        "api": {
            DB_APP,
            DB_CA,
            TOKEN_KEYS,
            EBAY_SECRET,
            SESSION,
            DELETION_TOKEN,
            nats_seed("api"),
            NATS_CA,
        },
        # No token key (it decrypts nothing), no eBay client secret (it calls eBay for nothing).
        "scheduler": {DB_APP, DB_CA, nats_seed("scheduler"), NATS_CA},
        "token-refresher": {
            DB_APP,
            DB_CA,
            TOKEN_KEYS,
            EBAY_SECRET,
            nats_seed("token-refresher"),
            NATS_CA,
        },
        "health-checker": {
            DB_APP,
            DB_CA,
            TOKEN_KEYS,
            EBAY_SECRET,
            nats_seed("health-checker"),
            NATS_CA,
        },
        "migrate": {("ebay-connector-db", "migrate-url"), DB_CA},
        "nats-provision": {nats_seed("provision"), NATS_CA},
    },
    "dev": {
        "api": {
            DB_APP,
            TOKEN_KEYS,
            EBAY_SECRET,
            SESSION,
            DELETION_TOKEN,
            ("ebay-connector-app", "api-jwt-dev-secret"),
        },
        "scheduler": {DB_APP},
        "token-refresher": {DB_APP, TOKEN_KEYS, EBAY_SECRET},
        "health-checker": {DB_APP, TOKEN_KEYS, EBAY_SECRET},
        "migrate": {("ebay-connector-db", "migrate-url")},
        "nats-provision": set(),
        "postgres": {("ebay-connector-dev-postgres", "password")},
        "nats": set(),
    },
}


# --- rendering ----------------------------------------------------------------------------------


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl is not installed: the overlays cannot be rendered (kubectl >= 1.27 "
            "ships kustomize 5; see docs/operations.md)"
        )
    return kubectl


@functools.cache
def _render(path: Path) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kustomize failed for {path}:\n{result.stderr}"
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def render(overlay: str) -> list[dict[str, Any]]:
    return list(_render(OVERLAYS[overlay]))


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(overlay: str) -> dict[str, dict[str, Any]]:
    """Pod specs by their app.kubernetes.io/name (Deployments, StatefulSets, Jobs)."""
    found = {}
    for doc in render(overlay):
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            name = doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            found[name] = doc["spec"]["template"]["spec"]
    return found


def ours(overlay: str) -> dict[str, dict[str, Any]]:
    """The connector's own workloads (not the dev overlay's NATS and PostgreSQL)."""
    return {n: s for n, s in workloads(overlay).items() if n not in ("nats", "postgres")}


def container(spec: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = spec["containers"]
    return next(c for c in containers if name is None or c["name"] == name)


def env_of(item: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in item.get("env", [])}


def image_tag(overlay: str) -> str:
    kustomization = yaml.safe_load((OVERLAYS[overlay] / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    return str(image["newTag"])


overlays = pytest.mark.parametrize("overlay", sorted(OVERLAYS))


# --- rendering and schemas ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [*OVERLAYS.values(), POSTGRES, BASE], ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_every_built_in_object_validates_strictly(path: Path) -> None:
    custom = set()
    for doc in _render(path):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            custom.add((doc["apiVersion"], doc["kind"]))
    assert custom <= CUSTOM_RESOURCES, f"unchecked custom resources: {custom - CUSTOM_RESOURCES}"


@overlays
def test_everything_lands_in_the_connector_namespace(overlay: str) -> None:
    for doc in render(overlay):
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
    namespace = of_kind(render(overlay), "Namespace")[NAMESPACE]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@overlays
def test_no_secret_is_committed(overlay: str) -> None:
    assert of_kind(render(overlay), "Secret") == {}


# --- the image ----------------------------------------------------------------------------------


def test_the_base_names_the_image_only_by_its_placeholder_and_holds_no_example_value() -> None:
    for path in sorted(BASE.glob("*.yaml")):
        text = path.read_text()
        for image in re.findall(r"^\s*image:\s*(\S+)", text, flags=re.MULTILINE):
            assert image == "ebay-connector", f"{path.name}: image {image} is hard-coded"
        # Values only (comments may explain what the overlays set).
        lowered = "\n".join(
            line.split(" #")[0]
            for line in text.lower().splitlines()
            if not line.lstrip().startswith("#")
        )
        for example in ("example", ".com", "idp.", "registry", "ingress-nginx", "cluster.local"):
            assert example not in lowered, f"{path.name} holds an environment value: {example}"


@overlays
def test_every_container_runs_the_overlays_image(overlay: str) -> None:
    kustomization = yaml.safe_load((OVERLAYS[overlay] / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    expected = f"{image.get('newName', 'ebay-connector')}:{image['newTag']}"
    for name, spec in ours(overlay).items():
        for item in [*spec.get("initContainers", []), *spec["containers"]]:
            assert item["image"] == expected, f"{name}/{item['name']}"


@overlays
def test_the_image_tag_is_the_version_label_and_the_jobs_suffix(overlay: str) -> None:
    tag = image_tag(overlay)
    docs = render(overlay)
    for name, deployment in of_kind(docs, "Deployment").items():
        if name in SERVICES:
            assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == tag
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert labels["app.kubernetes.io/version"] == tag
    assert set(of_kind(docs, "Job")) == {
        f"ebay-connector-migrate-{tag}",
        f"ebay-connector-nats-provision-{tag}",
    }


def test_both_overlays_derive_the_version_the_same_way() -> None:
    blocks = [
        yaml.safe_load((path / "kustomization.yaml").read_text())["replacements"]
        for path in OVERLAYS.values()
    ]
    assert blocks[0] == blocks[1]


@overlays
@pytest.mark.parametrize("service", SERVICES)
def test_telemetry_resource_names_version_namespace_and_pod(overlay: str, service: str) -> None:
    env = env_of(container(ours(overlay)[service]))
    attributes = env["OTEL_RESOURCE_ATTRIBUTES"]
    assert attributes is not None
    assert "service.version=$(SERVICE_VERSION)" in attributes
    assert "k8s.namespace.name=$(POD_NAMESPACE)" in attributes
    names = [e["name"] for e in container(ours(overlay)[service])["env"]]
    # Dependent variables must be defined before the one that expands them.
    assert names.index("SERVICE_VERSION") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    assert names.index("POD_NAMESPACE") < names.index("OTEL_RESOURCE_ATTRIBUTES")


def test_production_exports_telemetry_to_the_collector_of_the_overlay() -> None:
    config = of_kind(render("production"), "ConfigMap")["ebay-connector"]["data"]
    assert config["CONNECTOR_OTEL__EXPORTER"] == "otlp"
    assert config["CONNECTOR_OTEL__ENDPOINT"].startswith("http")
    assert (
        "CONNECTOR_OTEL__ENDPOINT"
        not in yaml.safe_load((BASE / "configmap.yaml").read_text())["data"]
    )


# --- pod security, probes, resources ------------------------------------------------------------


@overlays
def test_every_pod_meets_the_restricted_pod_security_standard(overlay: str) -> None:
    for name, spec in workloads(overlay).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("hostNetwork") is not True
        assert spec.get("hostPID") is not True
        assert spec["automountServiceAccountToken"] is False, name
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, name
        for item in [*spec.get("initContainers", []), *spec["containers"]]:
            security = item["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert security.get("privileged") is not True, name


@overlays
def test_the_connectors_containers_have_a_read_only_root_and_a_scratch_folder(overlay: str) -> None:
    for name, spec in ours(overlay).items():
        for item in [*spec.get("initContainers", []), *spec["containers"]]:
            assert item["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert "/tmp" in {m["mountPath"] for m in item["volumeMounts"]}, name


@overlays
def test_memory_limit_equals_request_and_cpu_is_requested(overlay: str) -> None:
    for name, spec in workloads(overlay).items():
        for item in [*spec.get("initContainers", []), *spec["containers"]]:
            resources = item["resources"]
            assert resources["limits"]["memory"] == resources["requests"]["memory"], name
            assert "cpu" in resources["requests"], name
            assert "cpu" not in resources.get("limits", {}), f"{name}: CPU limits throttle"


@overlays
def test_api_probes(overlay: str) -> None:
    api = container(ours(overlay)["api"])
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"


@overlays
@pytest.mark.parametrize("name", WORKERS)
def test_worker_liveness_is_loop_progress_and_readiness_is_separate(
    overlay: str, name: str
) -> None:
    worker = container(ours(overlay)[name])
    assert worker["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert worker["startupProbe"]["httpGet"]["path"] == "/livez"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = next(p["containerPort"] for p in worker["ports"] if p["name"] == "probes")
    assert env_of(worker)["CONNECTOR_PROBE_PORT"] == str(port)


@overlays
@pytest.mark.parametrize("name", SERVICES)
def test_new_pods_wait_for_the_migration_of_their_version(overlay: str, name: str) -> None:
    (init,) = ours(overlay)[name]["initContainers"]
    assert init["args"][:2] == ["migrate", "--check"]
    assert "--wait" in init["args"]
    assert env_of(init)["CONNECTOR_DATABASE__URL_FILE"] == f"{SECRET_DIR}/database-url"


# --- grace periods ------------------------------------------------------------------------------


@overlays
def test_the_api_pauses_before_sigterm_and_its_grace_covers_the_shutdown(overlay: str) -> None:
    spec = ours(overlay)["api"]
    pause = container(spec)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 5  # endpoint removal reaches the ingress controller before SIGTERM
    needed = pause + API_GRACE_SECONDS + RELAY_FLUSH_SECONDS + 5
    assert spec["terminationGracePeriodSeconds"] >= needed


@overlays
@pytest.mark.parametrize("name", CONSUMERS)
def test_consumer_grace_covers_the_graceful_stop_and_the_outbox_flush(
    overlay: str, name: str
) -> None:
    graceful = ConsumerSettings().graceful_timeout_seconds
    needed = graceful + 2 * RELAY_FLUSH_SECONDS + 5
    assert ours(overlay)[name]["terminationGracePeriodSeconds"] >= needed


@overlays
def test_scheduler_grace_covers_the_tick_in_hand_and_the_outbox_flush(overlay: str) -> None:
    tick = PipelineSettings().scheduler_tick_seconds
    needed = tick + 30 + 2 * RELAY_FLUSH_SECONDS  # connector_scheduler.main: tick + 30 s
    assert ours(overlay)["scheduler"]["terminationGracePeriodSeconds"] >= needed


# --- availability: budgets, spread, autoscaling -------------------------------------------------


@overlays
def test_every_service_has_a_disruption_budget_of_one(overlay: str) -> None:
    budgets = of_kind(render(overlay), "PodDisruptionBudget")
    assert set(budgets) == set(SERVICES)
    for name, budget in budgets.items():
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}


def test_production_spreads_every_service_over_nodes_strictly() -> None:
    for name in SERVICES:
        spread = ours("production")[name]["topologySpreadConstraints"]
        by_key = {c["topologyKey"]: c for c in spread}
        node = by_key["kubernetes.io/hostname"]
        assert node["whenUnsatisfiable"] == "DoNotSchedule"
        assert node["maxSkew"] == 1
        assert node["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        assert by_key["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"


def test_dev_runs_one_replica_of_everything_on_any_single_node() -> None:
    for name, deployment in of_kind(render("dev"), "Deployment").items():
        assert deployment["spec"]["replicas"] == 1, name
        spread = deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
        assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spread)


def test_production_leaves_replica_counts_to_the_autoscalers() -> None:
    deployments = of_kind(render("production"), "Deployment")
    for name in ("api", "token-refresher", "health-checker"):
        assert "replicas" not in deployments[name]["spec"], name
    assert deployments["scheduler"]["spec"]["replicas"] == 2


def test_the_api_scales_on_cpu() -> None:
    (hpa,) = of_kind(render("production"), "HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "api",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2


# --- custom resources: KEDA ---------------------------------------------------------------------

KEDA_SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "minReplicaCount",
    "maxReplicaCount",
    "pollingInterval",
    "cooldownPeriod",
    "triggers",
    "advanced",
}
KEDA_JETSTREAM_METADATA = {
    "natsServerMonitoringEndpoint",
    "account",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
}


def nats_account_of_the_connector() -> str:
    accounts = yaml.safe_load(NATS_VALUES.read_text())["config"]["merge"]["accounts"]
    (name,) = [n for n, account in accounts.items() if account.get("jetstream") == "enabled"]
    return str(name)


@pytest.mark.parametrize("service", CONSUMERS)
def test_keda_scales_each_worker_on_its_own_consumers_lag(service: str) -> None:
    docs = render("production")
    scaled = of_kind(docs, "ScaledObject")[service]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= KEDA_SCALED_OBJECT_SPEC, set(spec) - KEDA_SCALED_OBJECT_SPEC
    assert spec["scaleTargetRef"] == {"name": service}
    assert service in of_kind(docs, "Deployment")
    assert spec["minReplicaCount"] == 2
    assert spec["maxReplicaCount"] > spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "nats-jetstream"
    metadata = trigger["metadata"]
    assert set(metadata) <= KEDA_JETSTREAM_METADATA, set(metadata) - KEDA_JETSTREAM_METADATA
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata values are strings"
    # The names the connector provisions (CONNECTOR_NATS__NAMESPACE of the ConfigMap).
    namespace = of_kind(docs, "ConfigMap")["ebay-connector"]["data"]["CONNECTOR_NATS__NAMESPACE"]
    topology = Topology(namespace)
    (consumer,) = consumers_of(topology, service)
    assert metadata["stream"] == consumer.stream == topology.work_stream
    assert metadata["consumer"] == consumer.durable
    assert metadata["account"] == nats_account_of_the_connector()
    host, _, port = metadata["natsServerMonitoringEndpoint"].partition(":")
    assert port == "8222"
    assert host.split(".")[0].endswith("-headless"), "a cluster needs the headless service"
    assert int(metadata["lagThreshold"]) > 0
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60


# --- custom resources: Prometheus operator ------------------------------------------------------


def test_metrics_are_scraped_from_the_api_port_and_the_workers_probe_port() -> None:
    docs = render("production")
    monitor = of_kind(docs, "ServiceMonitor")["api"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    service = of_kind(docs, "Service")["api"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}

    pods = of_kind(docs, "PodMonitor")["workers"]
    assert pods["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pods["spec"]) == {"selector", "podMetricsEndpoints"}
    (expression,) = pods["spec"]["selector"]["matchExpressions"]
    assert expression["key"] == "app.kubernetes.io/name"
    assert set(expression["values"]) == set(WORKERS)
    (endpoint,) = pods["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    for name in WORKERS:
        ports = {p["name"] for p in container(ours("production")[name])["ports"]}
        assert endpoint["port"] in ports


# --- custom resources: CloudNativePG ------------------------------------------------------------

CNPG_CLUSTER_SPEC = {
    "instances",
    "primaryUpdateStrategy",
    "postgresql",
    "bootstrap",
    "managed",
    "certificates",
    "affinity",
    "resources",
    "storage",
    "walStorage",
    "plugins",
}


def test_postgres_is_three_instances_with_a_synchronous_replica_behind_a_session_pooler() -> None:
    docs = list(_render(POSTGRES))
    cluster = of_kind(docs, "Cluster")["ebay-connector-db"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert set(spec) <= CNPG_CLUSTER_SPEC, set(spec) - CNPG_CLUSTER_SPEC
    assert spec["instances"] == 3
    synchronous = spec["postgresql"]["synchronous"]
    assert synchronous["method"] in ("any", "first")
    assert synchronous["number"] >= 1
    assert synchronous["dataDurability"] == "required"
    assert spec["affinity"]["podAntiAffinityType"] == "required"
    initdb = spec["bootstrap"]["initdb"]
    assert (initdb["database"], initdb["owner"]) == ("connector", "connector")
    (roles_ref,) = initdb["postInitApplicationSQLRefs"]["configMapRefs"]
    roles = of_kind(docs, "ConfigMap")[roles_ref["name"]]["data"][roles_ref["key"]]
    assert roles == (DEPLOY / "postgres" / "base" / "roles.sql").read_text()
    (app_role,) = spec["managed"]["roles"]
    assert app_role["name"] == "connector_app"
    assert app_role["login"] is True
    assert "passwordSecret" in app_role
    pooler = of_kind(docs, "Pooler")["ebay-connector-db-pooler-rw"]
    assert pooler["apiVersion"] == "postgresql.cnpg.io/v1"
    assert pooler["spec"]["cluster"]["name"] == "ebay-connector-db"
    assert pooler["spec"]["type"] == "rw"
    assert pooler["spec"]["pgbouncer"]["poolMode"] == "session"
    # verify-full through the pooler: its service names are in the server certificate.
    assert (
        "ebay-connector-db-pooler-rw.ebay-connector-db.svc"
        in spec["certificates"]["serverAltDNSNames"]
    )


def test_postgres_backs_up_to_object_storage_from_the_overlay() -> None:
    docs = list(_render(POSTGRES))
    cluster = of_kind(docs, "Cluster")["ebay-connector-db"]
    (plugin,) = cluster["spec"]["plugins"]
    assert plugin["name"] == "barman-cloud.cloudnative-pg.io"
    assert plugin["isWALArchiver"] is True
    store = of_kind(docs, "ObjectStore")[plugin["parameters"]["barmanObjectName"]]
    assert store["apiVersion"] == "barmancloud.cnpg.io/v1"
    assert set(store["spec"]) <= {
        "configuration",
        "retentionPolicy",
        "instanceSidecarConfiguration",
    }
    assert re.fullmatch(r"[1-9][0-9]*[dwm]", store["spec"]["retentionPolicy"])
    configuration = store["spec"]["configuration"]
    assert configuration["destinationPath"].startswith(("s3://", "gs://", "https://"))
    assert "serverName" not in configuration  # the plugin wants it empty
    backup = of_kind(docs, "ScheduledBackup")["ebay-connector-db-daily"]
    assert backup["apiVersion"] == "postgresql.cnpg.io/v1"
    assert backup["spec"]["cluster"]["name"] == "ebay-connector-db"
    assert backup["spec"]["method"] == "plugin"
    assert backup["spec"]["pluginConfiguration"]["name"] == plugin["name"]
    assert len(backup["spec"]["schedule"].split()) == 6  # seconds first
    base = list(_render(DEPLOY / "postgres" / "base"))
    assert "plugins" not in of_kind(base, "Cluster")["ebay-connector-db"]["spec"]
    assert of_kind(base, "ObjectStore") == {}


def test_the_database_url_example_verifies_the_server_with_a_mounted_ca() -> None:
    examples = yaml.safe_load_all((DEPLOY / "examples" / "secret.yaml").read_text())
    example = next(d for d in examples if d and d["metadata"]["name"] == "ebay-connector-db")
    for key in ("app-url", "migrate-url"):
        url = example["stringData"][key]
        assert "sslmode=verify-full" in url
        assert f"sslrootcert={SECRET_DIR}/postgres-ca.crt" in url
        assert "ebay-connector-db-pooler-rw.ebay-connector-db.svc" in url
    mounted = {
        source["secret"]["name"]
        for spec in ours("production").values()
        for volume in spec["volumes"]
        if "projected" in volume
        for source in volume["projected"]["sources"]
        if source["secret"]["items"][0]["path"] == "postgres-ca.crt"
    }
    assert mounted == {"ebay-connector-db-ca"}


# --- ingress ------------------------------------------------------------------------------------


def test_the_api_is_behind_a_tls_ingress_for_its_public_host() -> None:
    docs = render("production")
    ingress = of_kind(docs, "Ingress")["api"]
    assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]
    (tls,) = ingress["spec"]["tls"]
    (rule,) = ingress["spec"]["rules"]
    assert tls["hosts"] == [rule["host"]]
    (path,) = rule["http"]["paths"]
    # Everything of the API: the OAuth callback and the admin page included.
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert path["backend"]["service"] == {"name": "api", "port": {"name": "http"}}
    api_env = env_of(container(ours("production")["api"]))
    assert api_env["CONNECTOR_API__PUBLIC_URL"] == f"https://{rule['host']}"
    assert api_env["FORWARDED_ALLOW_IPS"]
    ipaddress.ip_network(api_env["FORWARDED_ALLOW_IPS"])  # the controllers' network


# --- network policies ---------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        present = labels.get(expression["key"])
        if expression["operator"] == "In" and present not in expression["values"]:
            return False
        if expression["operator"] == "NotIn" and present in expression["values"]:
            return False
    return True


def _pod_labels(overlay: str) -> dict[str, dict[str, str]]:
    found = {}
    for doc in render(overlay):
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            found[labels["app.kubernetes.io/name"]] = labels
    return found


def _rules(overlay: str, name: str, direction: str) -> list[dict[str, Any]]:
    """The ingress or egress rules that apply to workload ``name``."""
    labels = _pod_labels(overlay)[name]
    key = direction.lower()
    rules = []
    for policy in of_kind(render(overlay), "NetworkPolicy").values():
        spec = policy["spec"]
        if direction in spec["policyTypes"] and _selects(spec["podSelector"], labels):
            rules.extend(spec.get(key, []))
    return rules


def _peer(peer: dict[str, Any]) -> str:
    if "ipBlock" in peer:
        return "internet"
    namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
    name = namespace.get("kubernetes.io/metadata.name", "this namespace")
    return str(name)


@overlays
def test_every_pod_is_denied_by_default(overlay: str) -> None:
    deny = of_kind(render(overlay), "NetworkPolicy")["default-deny"]["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny


@overlays
def test_no_rule_lets_anyone_in_or_out_unrestricted(overlay: str) -> None:
    for policy in of_kind(render(overlay), "NetworkPolicy").values():
        for direction, peers in (("ingress", "from"), ("egress", "to")):
            for rule in policy["spec"].get(direction, []):
                assert rule.get(peers), f"{policy['metadata']['name']}: a rule without peers"
                assert rule.get("ports"), f"{policy['metadata']['name']}: a rule without ports"


PRODUCTION_INGRESS = {
    "api": {(8000, "ingress-nginx"), (8000, "monitoring"), (8080, "monitoring")},
    "scheduler": {(8000, "monitoring"), (8080, "monitoring")},
    "token-refresher": {(8000, "monitoring"), (8080, "monitoring")},
    "health-checker": {(8000, "monitoring"), (8080, "monitoring")},
    "migrate": set(),
    "nats-provision": set(),
}
DNS = {(53, "kube-system")}
PRODUCTION_EGRESS = {
    "api": DNS
    | {(4222, "nats"), (5432, "ebay-connector-db"), (4318, "observability")}
    | {(443, "internet")},
    "scheduler": DNS | {(4222, "nats"), (5432, "ebay-connector-db"), (4318, "observability")},
    "token-refresher": DNS
    | {(4222, "nats"), (5432, "ebay-connector-db"), (4318, "observability"), (443, "internet")},
    "health-checker": DNS
    | {(4222, "nats"), (5432, "ebay-connector-db"), (4318, "observability"), (443, "internet")},
    "migrate": DNS | {(5432, "ebay-connector-db")},
    "nats-provision": DNS | {(4222, "nats")},
}


def _allowed(overlay: str, name: str, direction: str) -> set[tuple[int, str]]:
    peers_key = "from" if direction == "Ingress" else "to"
    allowed = set()
    for rule in _rules(overlay, name, direction):
        for peer in rule[peers_key]:
            for port in rule["ports"]:
                allowed.add((int(port["port"]), _peer(peer)))
    return allowed


@pytest.mark.parametrize("name", sorted(PRODUCTION_INGRESS))
def test_production_lets_in_only_the_ingress_controller_and_prometheus(name: str) -> None:
    assert _allowed("production", name, "Ingress") == PRODUCTION_INGRESS[name]


@pytest.mark.parametrize("name", sorted(PRODUCTION_EGRESS))
def test_production_lets_out_only_to_nats_postgres_dns_the_collector_and_ebay(name: str) -> None:
    assert _allowed("production", name, "Egress") == PRODUCTION_EGRESS[name]


def test_https_egress_never_reaches_private_addresses() -> None:
    for name in ("api", "token-refresher", "health-checker"):
        for rule in _rules("production", name, "Egress"):
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    assert peer["ipBlock"]["cidr"] == "0.0.0.0/0"
                    assert set(PRIVATE_RANGES) <= set(peer["ipBlock"]["except"])
                    assert [p["port"] for p in rule["ports"]] == [443]


def test_dns_egress_goes_to_the_cluster_dns_only() -> None:
    policy = of_kind(render("production"), "NetworkPolicy")["allow-dns"]["spec"]
    (rule,) = policy["egress"]
    (peer,) = rule["to"]
    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {p["port"] for p in rule["ports"]} == {53}


# --- secrets per service ------------------------------------------------------------------------


def mounted_secrets(spec: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Mounted file path -> (Secret, key), for every secret a pod mounts or reads."""
    files: dict[str, tuple[str, str]] = {}
    mounts = {
        m["name"]: m["mountPath"]
        for item in [*spec.get("initContainers", []), *spec["containers"]]
        for m in item.get("volumeMounts", [])
    }
    for volume in spec.get("volumes", []):
        sources = []
        if "secret" in volume:
            sources.append(volume["secret"] | {"name": volume["secret"]["secretName"]})
        if "projected" in volume:
            sources.extend(s["secret"] for s in volume["projected"]["sources"] if "secret" in s)
        for source in sources:
            assert source.get("items"), f"{volume['name']}: a whole Secret is mounted"
            for item in source["items"]:
                path = f"{mounts[volume['name']]}/{item['path']}"
                files[path] = (source["name"], item["key"])
    for item in [*spec.get("initContainers", []), *spec["containers"]]:
        assert not any("secretRef" in e for e in item.get("envFrom", [])), "a whole Secret in env"
        for variable in item.get("env", []):
            assert "secretKeyRef" not in variable.get("valueFrom", {}), "secrets go as files"
    return files


@pytest.mark.parametrize(
    ("overlay", "name"),
    [(o, n) for o, table in EXPECTED_SECRETS.items() for n in table],
)
def test_each_workload_mounts_only_the_secrets_it_uses(overlay: str, name: str) -> None:
    spec = workloads(overlay)[name]
    assert set(mounted_secrets(spec).values()) == EXPECTED_SECRETS[overlay][name]


@pytest.mark.parametrize(
    ("overlay", "name"), [(o, n) for o in OVERLAYS for n in [*SERVICES, "migrate"]]
)
def test_every_secret_file_is_named_by_a_variable_and_every_variable_finds_its_file(
    overlay: str, name: str
) -> None:
    spec = ours(overlay)[name]
    files = set(mounted_secrets(spec))
    named = set()
    for item in [*spec.get("initContainers", []), *spec["containers"]]:
        for variable, value in env_of(item).items():
            if variable.endswith("_FILE") and value is not None:
                assert value in files, f"{variable} points at {value}, which is not mounted"
                named.add(value)
    # The database's CA is named by the database URL itself (sslrootcert=...).
    named |= {f for f in files if f == f"{SECRET_DIR}/postgres-ca.crt"}
    assert named == files, f"mounted but unused: {files - named}"


@overlays
def test_the_configmap_holds_no_secret(overlay: str) -> None:
    data = of_kind(render(overlay), "ConfigMap")["ebay-connector"]["data"]
    for key in data:
        lowered = key.lower()
        assert not lowered.endswith("_file"), f"{key}: secret files are named per workload"
        assert not any(w in lowered for w in ("secret", "password", "token_keys", "database__url"))


SETTINGS_CLASSES = {
    "api": ("connector_api.settings", "ApiSettings"),
    "scheduler": ("connector_scheduler.settings", "SchedulerSettings"),
    "token-refresher": ("connector_token_refresher.settings", "TokenRefresherSettings"),
    "health-checker": ("connector_health_checker.settings", "HealthCheckerSettings"),
    "migrate": ("connector_common.settings", "DatabaseOnlySettings"),
    "nats-provision": ("connector_common.provisioning", "ProvisionSettings"),
}
SECRET_VALUES = {
    "database-url": "postgresql://connector_app:pw@db:5432/connector?sslmode=verify-full",
    "token-keys": f"k1:{base64.b64encode(os.urandom(32)).decode()}",
    "ebay-client-secret": "PRD-real-looking-cert-id-0123456789",
    "api-session-secret": "s" * 48,
    "api-jwt-dev-secret": "d" * 48,
    "ebay-deletion-verification-token": "v" * 48,
}


@overlays
@pytest.mark.parametrize("name", sorted(SETTINGS_CLASSES))
def test_each_workload_starts_with_exactly_what_its_manifest_gives_it(
    overlay: str, name: str, tmp_path: Path
) -> None:
    """Each start-up check passes with only the variables and files of its manifest: the
    scheduler's, with no token key and no eBay secret."""
    spec = ours(overlay)[name]
    item = container(spec)
    for path in mounted_secrets(spec):
        target = tmp_path / path.removeprefix(f"{SECRET_DIR}/")
        target.write_text(SECRET_VALUES.get(target.name, "file content"))
    env: dict[str, str] = {}
    if item.get("envFrom"):
        env.update(of_kind(render(overlay), "ConfigMap")["ebay-connector"]["data"])
    env.update({k: v for k, v in env_of(item).items() if v is not None})
    env = {k: v.replace(SECRET_DIR, str(tmp_path)) for k, v in env.items()}
    module, class_name = SETTINGS_CLASSES[name]
    settings_class = getattr(importlib.import_module(module), class_name)
    with pytest.MonkeyPatch.context() as patch:
        for variable in list(os.environ):
            if variable.startswith("CONNECTOR_"):
                patch.delenv(variable)
        for variable, value in env.items():
            patch.setenv(variable, value)
        settings = load_settings(settings_class)
    if name in WORKERS:
        assert settings.probe_host == "0.0.0.0"  # noqa: S104 (the kubelet reaches the pod)
    if name in SERVICES:
        assert settings.env.value == ("production" if overlay == "production" else "development")


# --- NATS ---------------------------------------------------------------------------------------


def nats_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(NATS_VALUES.read_text())
    return values


def test_nats_is_three_servers_with_jetstream_on_volumes_fsynced_before_acks_and_tls() -> None:
    config = nats_values()["config"]
    assert config["cluster"]["enabled"] is True
    assert config["cluster"]["replicas"] == 3
    assert config["cluster"]["tls"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["pvc"]["enabled"] is True
    assert config["jetstream"]["memoryStore"]["enabled"] is False
    assert config["jetstream"]["merge"]["sync_interval"] == "always"
    assert config["nats"]["tls"]["enabled"] is True
    assert nats_values()["tlsCA"]["enabled"] is True


def test_every_nats_user_is_an_nkey_from_the_users_configmap() -> None:
    values = nats_values()
    env = values["container"]["env"]
    for account in values["config"]["merge"]["accounts"].values():
        for user in account["users"]:
            assert set(user) <= {"nkey", "permissions"}, "NKey users, no passwords"
            variable = re.fullmatch(r"<< \$(\w+) >>", user["nkey"])
            assert variable, user["nkey"]
            assert env[variable.group(1)]["valueFrom"]["configMapKeyRef"]["name"] == (
                "nats-connector-users"
            )


def test_production_connects_to_nats_over_tls_with_one_nkey_per_workload() -> None:
    config = of_kind(render("production"), "ConfigMap")["ebay-connector"]["data"]
    assert config["CONNECTOR_NATS__URL"].startswith("tls://")
    assert config["CONNECTOR_NATS__STREAM_REPLICAS"] == "3"
    seeds = {}
    for name, spec in ours("production").items():
        env = env_of(container(spec))
        if name == "migrate":
            assert "CONNECTOR_NATS__NKEY_SEED_FILE" not in env
            continue
        assert env["CONNECTOR_NATS__TLS_CA_FILE"] == f"{SECRET_DIR}/nats-ca.crt"
        seeds[name] = mounted_secrets(spec)[str(env["CONNECTOR_NATS__NKEY_SEED_FILE"])]
    assert len(set(seeds.values())) == len(seeds), "each workload is its own NATS user"
